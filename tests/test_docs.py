"""The documentation site: every public name has an API entry, every page and figure exists.

The strict, offline build itself runs in `make test` (`mkdocs build --strict`); these checks
are cheap and name what is missing. The last ones build the site once more (a few seconds) and
check that its pages render offline: every script and stylesheet is a file of the site itself,
MathJax and mermaid included (vendored into docs/vendor/ by `make docs` / `make test`).
"""

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest

import chaosgrad
from chaosgrad import estimators

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def documented() -> set[str]:
    """Identifiers rendered by mkdocstrings (`::: chaosgrad.name`) on the API pages."""
    names = set()
    for page in (DOCS / "api").glob("*.md"):
        names.update(re.findall(r"^::: *([\w.]+)", page.read_text(), flags=re.M))
    return names


# Functions that share their name with their submodule (chaosgrad.lyapunov.ftle is both):
# the API page names them by their full path so that mkdocstrings renders the function.
FULL_PATHS = {
    "ftle": "chaosgrad.lyapunov.ftle.ftle",
    "mean_field": "chaosgrad.lyapunov.mean_field.mean_field",
}


@pytest.mark.parametrize("name", sorted(chaosgrad.__all__))
def test_public_name_has_an_api_entry(name):
    assert FULL_PATHS.get(name, f"chaosgrad.{name}") in documented(), (
        f"chaosgrad.{name} is public (in chaosgrad.__all__) but has no '::: chaosgrad.{name}' "
        "line in docs/api/*.md"
    )


@pytest.mark.parametrize("module", ["networks", "reconstruct", "metrics", "step_rules"])
def test_public_submodule_has_an_api_entry(module):
    assert f"chaosgrad.{module}" in documented()


INFO_CLASSES = [
    "BackpropInfo",
    "FiniteDifferenceInfo",
    "ShadowingInfo",
    "FastResponseInfo",
    "KernelInfo",
    "PathKernelInfo",
    "ESTIMATORS",
]


@pytest.mark.parametrize("name", INFO_CLASSES)
def test_estimator_diagnostics_have_api_entries(name):
    assert name in estimators.__all__
    assert f"chaosgrad.estimators.{name}" in documented()


def test_nav_pages_exist():
    config = (ROOT / "mkdocs.yml").read_text()
    pages = re.findall(r":\s*([\w/]+\.md)\s*$", config, flags=re.M)
    assert len(pages) >= 15
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"pages in mkdocs.yml nav without a file under docs/: {missing}"


def test_figures_exist_and_stay_small():
    images = set()
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", page.read_text()):
            images.add((page.parent / target).resolve())
    assert images, "no figures referenced"
    missing = sorted(str(path) for path in images if not path.is_file())
    assert not missing, f"figures referenced but absent: {missing}"
    total = sum(path.stat().st_size for path in DOCS.rglob("*.png"))
    assert total < 3_000_000, f"docs/ figures take {total / 1e6:.1f} MB (limit 3 MB)"


def test_config_fetches_nothing_at_build_time():
    """Plugins that download at build time (privacy, social cards) would break offline builds."""
    config = (ROOT / "mkdocs.yml").read_text()
    plugins = config.split("plugins:", 1)[1]
    for plugin in ("privacy", "social", "optimize"):
        assert f"- {plugin}" not in plugins


# --- The built site renders offline -------------------------------------------------------

VENDOR = DOCS / "vendor"
MATHJAX = "vendor/mathjax/tex-svg.js"
MERMAID = "vendor/mermaid/mermaid.min.js"
# <link> relations that name a page, not a resource the browser fetches to show this one
NAVIGATION_RELS = {"canonical", "alternate", "prev", "next", "search", "author", "license"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built once for this module, strictly, as `make docs` builds it."""
    if not (VENDOR / "VERSIONS").is_file():
        pytest.fail("docs/vendor/ is missing or incomplete: `make docs` (or `make test`) makes it")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr}"
    return out


class Resources(HTMLParser):
    """The addresses a page loads: <script src>, <link href> (but links to pages), media."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []  # stylesheets, icons, preloads, preconnects
        self.media: list[str] = []
        self.mermaid_blocks = 0
        self.math_blocks = 0

    def handle_starttag(self, tag, attrs):
        attr = {name: value or "" for name, value in attrs}
        classes = attr.get("class", "").split()
        self.mermaid_blocks += "mermaid" in classes
        self.math_blocks += "arithmatex" in classes
        if tag == "script" and "src" in attr:
            self.scripts.append(attr["src"])
        elif tag == "link" and "href" in attr:
            if not NAVIGATION_RELS & set(attr.get("rel", "").lower().split()):
                self.styles.append(attr["href"])
        elif tag in ("img", "iframe", "source", "audio", "video", "embed") and "src" in attr:
            self.media.append(attr["src"])


def resources(page: Path) -> Resources:
    parser = Resources()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def pages(site: Path) -> list[Path]:
    found = sorted(site.rglob("*.html"))
    assert len(found) >= 15, f"only {len(found)} pages built"
    return found


def is_remote(url: str) -> bool:
    """http(s)://, protocol-relative //host/ or any other scheme (data: stays in the page)."""
    parts = urlsplit(url)
    return bool(parts.netloc) or parts.scheme not in ("", "data")


def target(site: Path, page: Path, url: str) -> Path:
    """The file a page's address names, inside the built site (404.html uses /-paths)."""
    path = urlsplit(url).path
    base = PurePosixPath(page.relative_to(site).as_posix()).parent
    if path.startswith("/"):
        base, path = PurePosixPath(), path.lstrip("/")
    resolved = site.joinpath(*base.parts, *PurePosixPath(path).parts).resolve()
    return resolved / "index.html" if path.endswith("/") else resolved


def test_built_pages_load_only_local_scripts_and_styles(site):
    remote, absent = [], []
    for page in pages(site):
        found = resources(page)
        name = page.relative_to(site).as_posix()
        for url in found.scripts + found.styles + found.media:
            if is_remote(url):
                remote.append(f"{name}: {url}")
            elif not target(site, page, url).is_file():
                absent.append(f"{name}: {url}")
    assert not remote, "pages load from the network (offline they break):\n" + "\n".join(remote)
    assert not absent, "pages load files the site does not have:\n" + "\n".join(absent)


def test_vendored_mathjax_and_mermaid_are_in_the_site(site):
    for path in (MATHJAX, MERMAID):
        assert (site / path).stat().st_size > 100_000, f"{path} missing or truncated in the site"
    # tex-svg.js loads TeX extensions (autoload, \require) from beside it, not from a CDN
    assert (site / "vendor/mathjax/input/tex/extensions/boldsymbol.js").is_file()


def test_math_and_charts_load_the_vendored_libraries(site):
    """Each page with math loads MathJax after its configuration; each chart, mermaid.

    mkdocs-material fetches mermaid from unpkg.com unless `mermaid` is defined when the page
    has loaded, so the local script must run before then: not `async`.
    """
    math_pages = chart_pages = 0
    for page in pages(site):
        found = resources(page)
        scripts = [PurePosixPath(urlsplit(url).path).as_posix() for url in found.scripts]
        name = page.relative_to(site).as_posix()
        if found.math_blocks:
            math_pages += 1
            mathjax = [i for i, url in enumerate(scripts) if url.endswith(MATHJAX)]
            config = [i for i, url in enumerate(scripts) if url.endswith("javascripts/mathjax.js")]
            assert mathjax and config and config[0] < mathjax[0], f"{name}: {scripts}"
        if found.mermaid_blocks:
            chart_pages += 1
            assert any(url.endswith(MERMAID) for url in scripts), f"{name}: {scripts}"
            tag = re.search(r"<script[^>]*mermaid\.min\.js[^>]*>", page.read_text("utf-8"))
            assert tag and "async" not in tag.group(0), f"{name}: {tag}"
    assert math_pages >= 7, "the theory pages render math"
    assert chart_pages >= 1, "the decision chart (choosing.md) is a mermaid block"


def test_display_math_reaches_mathjax(site):
    """A \\[ ... \\] block that Markdown read as text (e.g. inside a list item without a
    blank line and four-space indent) loses its backslashes and shows as raw LaTeX."""
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        raw = re.search(r"(^|<p>|<li>)\s*\[\s*\n\s*\\[A-Za-z]", text, re.MULTILINE)
        assert raw is None, f"raw display math in {page}: {raw and raw.group(0)!r}"
