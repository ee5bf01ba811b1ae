"""MathJax 3 served from the built book, not from a CDN.

Two jobs, one place for the version and the paths:

* ``python tools/offline_mathjax.py`` fetches MathJax from the npm registry (``npm pack``), checks the
  tarball against the pinned hash and unpacks its ``es5/`` folder into ``_mathjax/_static/mathjax/``
  (git-ignored). Run it once after ``pip install``; it does nothing when that version is already there.
* As a Sphinx extension (``sphinx: local_extensions`` in ``_config.yml``) it stops an HTML build that would
  point at a MathJax that is not there, with the command that fixes it. The files themselves reach
  ``_build/html/_static/mathjax/`` through ``html_extra_path: ["_mathjax"]`` and the pages load them through
  ``mathjax_path: mathjax/tex-mml-chtml.js`` (Sphinx reads a relative ``mathjax_path`` inside ``_static/``).

``html_extra_path`` rather than ``html_static_path``: Jupyter Book adds every ``.js`` file under the
static paths to every page as soon as a top-level ``_static/`` folder exists, which would load all of
MathJax's components on each page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MATHJAX_VERSION = "3.2.2"
# The npm registry's "integrity" of mathjax-3.2.2.tgz (`npm view mathjax@3.2.2 dist.integrity`).
MATHJAX_INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="

REPO = Path(__file__).resolve().parent.parent
EXTRA_DIR = "_mathjax"  # an html_extra_path entry: its contents are copied to the site's root
TARGET = REPO / EXTRA_DIR / "_static" / "mathjax"
STAMP = "ddpm-edu-mathjax-version.txt"  # written last, so a half-finished fetch never looks finished
FIX = "python tools/offline_mathjax.py"


def installed_version(target: Path = TARGET) -> str | None:
    """The MathJax version unpacked in ``target``, or None when there is none (or it is incomplete)."""
    stamp = target / STAMP
    return stamp.read_text().strip() if stamp.is_file() else None


def _integrity(path: Path) -> str:
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode("ascii")


def _npm_pack(workdir: Path) -> Path:
    """Download the pinned MathJax tarball with npm into ``workdir`` and return its path."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("offline_mathjax: npm not found. Install Node.js (Debian: apt-get install npm), then rerun.")
    spec = f"mathjax@{MATHJAX_VERSION}"
    run = subprocess.run(
        [npm, "pack", spec, "--json", "--pack-destination", str(workdir)],
        cwd=workdir, capture_output=True, text=True,
    )
    if run.returncode != 0:
        sys.exit(f"offline_mathjax: `npm pack {spec}` failed:\n{run.stderr.strip()}")
    filename = json.loads(run.stdout)[0]["filename"]
    return workdir / filename


def _unpack_es5(tarball: Path, dest: Path) -> int:
    """Copy the regular files under ``package/es5/`` (and the licence) into ``dest``; return the count."""
    count = 0
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or ".." in parts or parts[0] != "package":
                continue
            if parts[1:] == ("LICENSE",):
                relative = Path("LICENSE")
            elif len(parts) > 2 and parts[1] == "es5":
                relative = Path(*parts[2:])
            else:
                continue
            out = dest / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            count += 1
    return count


def fetch(target: Path = TARGET) -> None:
    """Put MathJax ``MATHJAX_VERSION`` into ``target`` unless it is already there."""
    if installed_version(target) == MATHJAX_VERSION:
        print(f"MathJax {MATHJAX_VERSION} already in {target.relative_to(REPO)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tarball = _npm_pack(Path(tmp))
        got = _integrity(tarball)
        if got != MATHJAX_INTEGRITY:
            sys.exit(f"offline_mathjax: {tarball.name} has integrity {got}, expected {MATHJAX_INTEGRITY}")
        staging = target.parent / (target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        count = _unpack_es5(tarball, staging)
    if not (staging / "tex-mml-chtml.js").is_file():
        sys.exit("offline_mathjax: the tarball has no es5/tex-mml-chtml.js")
    (staging / STAMP).write_text(MATHJAX_VERSION + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"MathJax {MATHJAX_VERSION}: {count} files in {target.relative_to(REPO)}")


# --- Sphinx extension -------------------------------------------------------------------------------

def _check_mathjax(app) -> None:
    """Fail an HTML build whose relative ``mathjax_path`` is in none of the ``html_extra_path`` folders."""
    from sphinx.errors import ConfigError

    if app.builder.format != "html":
        return
    mathjax_path = app.config.mathjax_path or ""
    if "://" in mathjax_path or mathjax_path.startswith("/"):
        return  # a URL: not ours to check
    confdir = Path(app.confdir)
    folders = [confdir / extra / "_static" for extra in app.config.html_extra_path]
    if not any((folder / mathjax_path).is_file() for folder in folders):
        raise ConfigError(
            f"MathJax is not there: {EXTRA_DIR}/_static/{mathjax_path} is missing (html_extra_path must list "
            f"{EXTRA_DIR!r}). Run `{FIX}` (needs npm) to fetch MathJax {MATHJAX_VERSION} for offline math."
        )
    version = installed_version(confdir / EXTRA_DIR / "_static" / "mathjax")
    if version is not None and version != MATHJAX_VERSION:
        raise ConfigError(f"_mathjax/ holds MathJax {version}, the book wants {MATHJAX_VERSION}: run `{FIX}`.")


def setup(app):
    app.connect("builder-inited", _check_mathjax)
    return {"version": MATHJAX_VERSION, "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    fetch()
