"""Execution statistics: how long each chapter notebook takes to run as a regression test.

nbval turns every code cell of a notebook into a test item (``book/01_basic_concepts.ipynb::Cell 3``). These
hooks add up the time pytest spends on the items of each notebook (the first item's setup starts the kernel,
the last item's teardown stops it) and, when a session has run *every* notebook in ``book/`` to its last
cell, write ``book/_generated/execution_statistics_table.md``, the table that ``book/execution_statistics.md``
shows. A partial run (one chapter, ``-k``, ``-x`` stopping early) leaves the file as it is.

The file is git-ignored, so ``pytest`` leaves ``git status`` clean, and the page shows the machine that ran the
tests before the book was built (CI's, for the published book); ``tools/execution_statistics.py`` puts a note in
its place when no full run has happened. Rows are sorted by file name and every number has a fixed format.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
from collections import defaultdict
from pathlib import Path

BOOK = Path(__file__).resolve().parent
TABLE = BOOK / "_generated" / "execution_statistics_table.md"  # git-ignored: pytest writes nothing tracked


class _Notebook:
    def __init__(self) -> None:
        self.items = 0          # code-cell items collected
        self.finished = 0       # items whose teardown ran
        self.failed: set[str] = set()
        self.seconds = 0.0      # setup + call + teardown of every item
        self.slowest = 0.0      # slowest single cell (call phase)


_notebooks: dict[Path, _Notebook] = defaultdict(_Notebook)
_outcome: list[str] = []  # the line the terminal summary prints
_ROOT: list[Path] = []  # pytest's rootdir: node ids are relative to it
_deselected: set[Path] = set()  # notebooks of which -k / --deselect kept only some cells


def pytest_sessionstart(session):
    _deselected.clear()


def pytest_deselected(items):
    for item in items:
        path = Path(item.path).resolve()
        if path.suffix == ".ipynb":
            _deselected.add(path)


def _notebook_of(nodeid: str, rootpath: Path) -> Path | None:
    path = (rootpath / nodeid.split("::", 1)[0]).resolve()
    return path if path.suffix == ".ipynb" else None


def pytest_collection_finish(session):
    _ROOT[:] = [Path(session.config.rootpath)]
    _notebooks.clear()
    for item in session.items:
        path = Path(item.path).resolve()
        if path.suffix == ".ipynb":
            _notebooks[path].items += 1


def pytest_runtest_logreport(report):
    path = _notebook_of(report.nodeid, _ROOT[0] if _ROOT else Path.cwd())
    if path is None or path not in _notebooks:
        return
    nb = _notebooks[path]
    nb.seconds += report.duration
    if report.when == "call":
        nb.slowest = max(nb.slowest, report.duration)
    if report.failed:
        nb.failed.add(report.nodeid)
    if report.when == "teardown":
        nb.finished += 1


def _title(path: Path) -> str:
    """The notebook's first markdown heading, or its file name."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return path.stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", [])).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def _in_toc() -> set[str]:
    """The notebooks the book shows (``_toc.yml``'s ``file:`` entries), as file names in book/."""
    toc = BOOK.parent / "_toc.yml"
    text = toc.read_text(encoding="utf-8") if toc.is_file() else ""
    return {Path(entry).name + ".ipynb" for entry in re.findall(r"file:\s*['\"]?([^\s'\"#]+)", text)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _gpu() -> str:
    try:
        import torch
    except ImportError:
        return "none"
    if torch.cuda.is_available():
        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return "none (CPU run)"


def _table(notebooks: dict[Path, _Notebook]) -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    lines = [
        "<!-- Written by book/conftest.py when `pytest` runs every chapter notebook; do not edit by hand. -->",
        "",
        "| machine | |",
        "|---|---|",
        f"| date | {today} (UTC) |",
        f"| CPU | {_cpu_model()}, {os.cpu_count()} cores ({usable} usable) |",
        f"| GPU | {_gpu()} |",
        f"| platform | {platform.platform()} |",
        f"| Python | {platform.python_version()} |",
        f"| torch | {_version('torch')} |",
        f"| pytest, nbval | {_version('pytest')}, {_version('nbval')} |",
        "",
        "| notebook | code cells | run time (s) | slowest cell (s) | result |",
        "|---|--:|--:|--:|---|",
    ]
    total_items, total_seconds = 0, 0.0
    shown = _in_toc()
    for path in sorted(notebooks):
        nb = notebooks[path]
        result = "passed" if not nb.failed else f"{len(nb.failed)} failed"
        # Link the chapters the book has; a notebook not yet in _toc.yml gets its file name, not a dead link.
        name = f"[{_title(path)}]({path.name})" if path.name in shown else f"`{path.name}` (not in the book yet)"
        lines.append(f"| {name} | {nb.items} | {nb.seconds:.1f} | {nb.slowest:.1f} | {result} |")
        total_items += nb.items
        total_seconds += nb.seconds
    lines.append(f"| **all notebooks** | {total_items} | {total_seconds:.1f} | | |")
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session):
    _outcome.clear()
    if not _notebooks:
        return
    chapters = {p.resolve() for p in BOOK.glob("*.ipynb")}
    unfinished = sorted(p.name for p, nb in _notebooks.items() if nb.finished < nb.items or p in _deselected)
    missing = sorted(p.name for p in chapters - set(_notebooks))
    if unfinished or missing:
        why = []
        if missing:
            why.append(f"not run: {', '.join(missing)}")
        if unfinished:
            why.append(f"not every cell ran: {', '.join(unfinished)}")
        _outcome.append(f"execution statistics not updated ({'; '.join(why)})")
        return
    book_notebooks = {p: nb for p, nb in _notebooks.items() if p in chapters}
    text = _table(book_notebooks)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    tmp = TABLE.with_name(TABLE.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(TABLE)
    seconds = sum(nb.seconds for nb in book_notebooks.values())
    _outcome.append(f"execution statistics: {len(book_notebooks)} notebooks, {seconds:.1f} s, "
                    f"written to {TABLE.relative_to(BOOK.parent)}")


def pytest_terminal_summary(terminalreporter):
    for line in _outcome:
        terminalreporter.write_line(line)
