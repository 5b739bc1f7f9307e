"""The signatures the README and the docs show are the code's: every argument a documented
call names exists, and the README's estimator table lists each estimator's settings whole,
in order."""

import inspect
import re
from pathlib import Path

import pytest

import chaosgrad
import chaosgrad.estimators

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted(
    path for path in (ROOT / "docs").rglob("*.md") if "vendor" not in path.parts
)
SPAN = re.compile(r"`([A-Za-z_][\w.]*)\(([^`]*)\)`")
IDENTIFIER = re.compile(r"[A-Za-z_]\w*$")


def _public(name: str):
    """The public callable ``name`` names (``cg.X``, ``chaosgrad.X`` or a bare ``X``), or None."""
    name = name.removeprefix("cg.").removeprefix("chaosgrad.")
    for namespace in (chaosgrad, chaosgrad.estimators):
        if "." not in name and name in getattr(namespace, "__all__", ()):
            return getattr(namespace, name)
    return None


def _pieces(arguments: str) -> list[str]:
    """The top-level comma-separated pieces of an argument list."""
    pieces, depth, current = [], 0, ""
    for char in arguments:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            pieces.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        pieces.append(current.strip())
    return pieces


def _documented_calls():
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            for match in SPAN.finditer(line):
                target = _public(match.group(1))
                if target is not None and callable(target):
                    where = f"{page.relative_to(ROOT)}:{number}"
                    yield pytest.param(target, match.group(0), id=f"{where}-{match.group(1)}")


@pytest.mark.parametrize("target, span", list(_documented_calls()))
def test_every_argument_a_documented_call_names_exists(target, span):
    """A keyword (``name=...``) must be one the callable takes; positional pieces (a value,
    or a placeholder such as ``phi``) must not outnumber its positional parameters."""
    parameters = inspect.signature(target).parameters.values()
    keywords = {p.name for p in parameters if p.kind is not p.VAR_POSITIONAL}
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters)
    variadic = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    arguments = span[span.index("(") + 1 : span.rindex(")")]
    given, keyword_only = 0, False
    for piece in _pieces(arguments):
        head = piece.split("=", 1)[0].strip()
        keyword_only = keyword_only or piece == "*"
        named = "=" in piece or (keyword_only and piece != "*")  # after *, a bare name too
        if named and IDENTIFIER.match(head):
            assert head in keywords or open_ended, (
                f"{span} passes {head}=, which {target.__name__} does not take "
                f"(it takes {', '.join(p.name for p in parameters)})"
            )
        elif piece not in ("...", "…", "*", "/"):
            given += 1
    assert given <= len(positional) or variadic, (
        f"{span} passes {given} positional arguments; {target.__name__} takes "
        f"{len(positional)} ({', '.join(p.name for p in positional)})"
    )


ESTIMATOR_ROW = re.compile(r"^\| `(\w+)\(([^`]*)\)` \|")


def test_the_readme_estimator_table_lists_every_setting_in_order():
    rows = {
        match.group(1): [piece.split("=")[0].strip() for piece in _pieces(match.group(2))]
        for line in (ROOT / "README.md").read_text().splitlines()
        if (match := ESTIMATOR_ROW.match(line))
    }
    estimators = {
        name: cls
        for name, cls in chaosgrad.estimators.ESTIMATORS.items()
        if cls is not chaosgrad.Auto
    }
    assert {cls.__name__ for cls in estimators.values()} <= set(rows), rows
    for cls in estimators.values():
        settings = list(inspect.signature(cls).parameters)
        assert rows[cls.__name__] == settings, (
            f"README lists {cls.__name__}({', '.join(rows[cls.__name__])}); the code takes "
            f"{cls.__name__}({', '.join(settings)})"
        )
