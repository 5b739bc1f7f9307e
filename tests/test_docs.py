"""The documentation site: every public name has an API entry, every page and figure exists.

The strict, offline build itself runs in `make test` (`mkdocs build --strict`); these checks
are cheap and name what is missing.
"""

import re
from pathlib import Path

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


@pytest.mark.parametrize("module", ["networks", "reconstruct", "metrics"])
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
