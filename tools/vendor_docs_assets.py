"""Vendor MathJax and mermaid into docs/vendor/ from the npm registry, so the site renders offline.

`make docs` and `make test` run this once (the target is docs/vendor/VERSIONS). The versions and
the registry's sha512 integrity of each tarball are pinned below; a tarball that does not match
is refused. The files are build outputs, not sources: .gitignore keeps them out of git.

    python tools/vendor_docs_assets.py docs/vendor

The registry is https://registry.npmjs.org unless `npm_config_registry` names another (a mirror
of it). Only the Python standard library is used: no npm or node is needed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEFAULT_REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str  # the registry's dist.integrity (`npm view NAME@VERSION dist.integrity`)
    # tarball path (a file, or a folder ending in "/") -> path under the package's vendor folder
    files: dict[str, str]


PACKAGES = [
    # tex-svg.js is one file with its fonts built in (SVG paths): no font files to fetch. The
    # TeX extensions are loaded on demand (autoload, \require) from beside it.
    Package(
        name="mathjax",
        version="3.2.2",
        integrity="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        files={
            "package/LICENSE": "LICENSE",
            "package/es5/tex-svg.js": "tex-svg.js",
            "package/es5/input/tex/extensions/": "input/tex/extensions/",
        },
    ),
    # mkdocs-material renders mermaid blocks with a global `mermaid` when one is defined, and
    # fetches mermaid@11 from unpkg.com otherwise: this is the same single-file (IIFE) build.
    Package(
        name="mermaid",
        version="11.17.2",
        integrity="sha512-V6K3C8EBdEsPFZXSKMJe6ppQOENxuHARr9GvHX4hh47lAbhMRD9qf4oEK7LoaRQxULMa80/qt5gHO73aCleBBg==",
        files={
            "package/LICENSE": "LICENSE",
            "package/dist/mermaid.min.js": "mermaid.min.js",
        },
    ),
]


def download(package: Package) -> bytes:
    registry = os.environ.get("npm_config_registry") or DEFAULT_REGISTRY
    name = package.name
    url = f"{registry.rstrip('/')}/{name}/-/{name.split('/')[-1]}-{package.version}.tgz"
    print(f"vendoring {name}@{package.version} from {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=300) as response:
        data = response.read()
    algorithm, expected = package.integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise SystemExit(
            f"{url}: {algorithm} integrity {actual} does not match the pinned {expected}"
        )
    return data


def extract(package: Package, data: bytes, dest: Path) -> None:
    """Write the package's listed files under dest, then check that each one was there."""
    found = dict.fromkeys(package.files, False)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            for source, target in package.files.items():
                if source.endswith("/"):
                    if not member.name.startswith(source):
                        continue
                    relative = PurePosixPath(target, member.name[len(source) :])
                elif member.name == source:
                    relative = PurePosixPath(target)
                else:
                    continue
                if ".." in relative.parts or relative.is_absolute():
                    raise SystemExit(f"{package.name}: unsafe path in tarball: {member.name}")
                path = dest.joinpath(*relative.parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                extracted = archive.extractfile(member)
                assert extracted is not None
                path.write_bytes(extracted.read())
                found[source] = True
                break
    missing = [source for source, seen in found.items() if not seen]
    if missing:
        raise SystemExit(f"{package.name}@{package.version}: not in the tarball: {missing}")


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python tools/vendor_docs_assets.py DEST (e.g. docs/vendor)")
    root = Path(argv[0])
    stamp = root / "VERSIONS"  # written last: its presence means a complete set (make's target)
    stamp.unlink(missing_ok=True)
    for package in PACKAGES:
        data = download(package)
        dest = root / package.name
        staging = root / f".{package.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        extract(package, data, staging)
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    versions = "".join(f"{package.name}@{package.version}\n" for package in PACKAGES)
    stamp.write_text(versions)


if __name__ == "__main__":
    main(sys.argv[1:])
