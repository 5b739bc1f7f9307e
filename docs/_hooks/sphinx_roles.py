"""mkdocs hook: render Sphinx cross-reference roles left in docstrings as inline code.

Some docstrings use reST roles (``:class:`Backprop```, ``:func:`~chaosgrad.lyapunov.ftle```)
although they are parsed as Google-style Markdown, which would show the role literally
(":class:Backprop"). This hook turns each into plain inline code, keeping only the last
dotted component when the role has a ``~`` prefix, as Sphinx does. The docstrings are not
changed.
"""

import re

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|obj|exc):<code>(~?)([^<]*)</code>")


def _replace(match: re.Match) -> str:
    tilde, target = match.groups()
    name = target.rsplit(".", 1)[-1] if tilde else target
    return f"<code>{name}</code>"


def on_page_content(html, page, config, files):
    return _ROLE.sub(_replace, html)
