"""Sphinx extension: the Execution statistics page shows the table the last full `pytest` run wrote on this machine.

`book/conftest.py` writes `book/_generated/execution_statistics_table.md` (git-ignored) when `pytest` runs every
chapter; CI runs `pytest` before it builds the book, so the published page shows the CI machine's timings. A book
built without such a run says so instead of showing another machine's numbers.
"""

from __future__ import annotations

from pathlib import Path

TABLE = Path(__file__).resolve().parent.parent / "book" / "_generated" / "execution_statistics_table.md"

PLACEHOLDER = """\
```{note}
This copy of the book was built without running `pytest` first, so there are no timings to show. Run `pytest`
(it runs every chapter), then build the book again.
```
"""


def _ensure_table(app) -> None:
    if not TABLE.is_file():
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        TABLE.write_text(PLACEHOLDER, encoding="utf-8")


def setup(app):
    app.connect("builder-inited", _ensure_table)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
