"""Strip what changes on every run from the chapter notebooks, so a one-sentence edit is a few-line diff (not generated).

Run after re-executing a chapter:  python -m ddpm_edu._clean [book/NN_name.ipynb ...]   (no argument: every chapter)

It applies nbdev's own cleaner (`nbdev.clean.clean_nb`, the convention of the exporter we use) and then:

* keeps the glue keys of MyST-NB (output metadata `scrapbook`), through which the book's prose reads its numbers;
* keeps each cell's `tags` (nbval's `nbval-ignore-output`, the book's `hide-input`) and each code cell's execution
  count: for a notebook run top to bottom the counts are 1, 2, 3, ..., the same on every run, and they show that the
  stored outputs come from one run in order;
* drops the Python patch version from `language_info` (it names the machine, not the chapter);
* merges consecutive pieces of printed output (`jupyter execute` and nbclient store one piece per flush, nbconvert
  fewer), so the stored text does not depend on which command ran the chapter; nbval merges them the same way
  before comparing;
* replaces the random ids of matplotlib's `to_jshtml` animations and of ipywidgets models (uuid4 hex strings)
  with ids derived from the notebook's name and their order of appearance, so re-running a chapter does not
  rewrite them.

`tests/test_notebook_hygiene.py` fails if a committed chapter would change under this cleaner.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import nbformat

from ._export import chapter_notebooks

_NB_METADATA = ["language_info", "widgets"]
_CELL_METADATA = ["tags"]
_OUTPUT_METADATA = ["scrapbook"]  # MyST-NB's glue keys: the book reads numbers for the prose from them
# matplotlib's HTMLWriter names each animation `anim` + uuid4().hex; ipywidgets names models by uuid4().hex.
_ANIM_ID = re.compile(r"(?<=anim)[0-9a-f]{32}")


def _stable_id(salt: str, index: int) -> str:
    return hashlib.sha1(f"{salt}:{index}".encode()).hexdigest()[:32]


def _renumber(text: str, pattern: re.Pattern, salt: str) -> str:
    """Replace each distinct match of `pattern` by a stable id that depends only on its order of appearance."""
    mapping: dict[str, str] = {}
    for match in pattern.findall(text):
        if match not in mapping:
            mapping[match] = _stable_id(salt, len(mapping))
    return pattern.sub(lambda m: mapping[m.group(0)], text)


_MODEL_REF = re.compile(r"IPY_MODEL_([0-9a-f]{32})")


def _widget_order(nb) -> list[str]:
    """The notebook's widget model ids in an order that does not depend on the ids themselves: the models the
    cells display, in cell order, then the models they refer to (breadth first, attributes by name), then any
    others by their content."""
    state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})
    order: list[str] = []

    def visit(model_id: str) -> None:
        if model_id in models and model_id not in order:
            order.append(model_id)

    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if view:
                visit(view.get("model_id", ""))
    i = 0
    while i < len(order):
        for ref in _MODEL_REF.findall(json.dumps(models[order[i]], sort_keys=True)):
            visit(ref)
        i += 1

    def content(model_id: str) -> str:
        return _MODEL_REF.sub("IPY_MODEL_", json.dumps(models[model_id], sort_keys=True))

    order += sorted((m for m in models if m not in order), key=content)
    return order


def _merge_streams(outputs: list) -> list:
    """Consecutive stream outputs of the same name (stdout, stderr) joined into one."""
    merged = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] = "".join(merged[-1]["text"]) + "".join(out["text"])
        else:
            merged.append(out)
    return merged


def clean_notebook(nb, name: str):
    """Return the cleaned notebook (an `nbformat.NotebookNode`); `name` salts the stable ids."""
    from nbdev.clean import clean_nb

    counts = [(c.get("execution_count"), [o.get("execution_count") for o in c.get("outputs", [])])
              for c in nb["cells"]]
    clean_nb(nb, allowed_metadata_keys=_NB_METADATA, allowed_cell_metadata_keys=_CELL_METADATA,
             allowed_out_metadata_keys=_OUTPUT_METADATA)
    for cell, (count, out_counts) in zip(nb["cells"], counts):
        if cell["cell_type"] != "code":
            continue
        cell["execution_count"] = count
        for out, out_count in zip(cell.get("outputs", []), out_counts):
            if "execution_count" in out:
                out["execution_count"] = out_count
        cell["outputs"] = _merge_streams(cell.get("outputs", []))
    nb.get("metadata", {}).get("language_info", {}).pop("version", None)
    text = nbformat.writes(nb)
    text = _renumber(text, _ANIM_ID, f"{name}/anim")
    mapping = {old: _stable_id(f"{name}/widget", i) for i, old in enumerate(_widget_order(nb))}
    if any(old != new for old, new in mapping.items()):
        text = re.sub("|".join(mapping), lambda m: mapping[m.group(0)], text)
    return nbformat.reads(text, as_version=4)


def cleaned_text(path: Path) -> str:
    """The text the cleaner would write for the notebook at `path`."""
    nb = nbformat.read(path, as_version=4)
    text = nbformat.writes(clean_notebook(nb, Path(path).stem))
    return text if text.endswith("\n") else text + "\n"


def clean_file(path: Path) -> bool:
    """Clean one notebook in place (atomically); return True if it changed."""
    path = Path(path)
    old = path.read_text(encoding="utf-8")
    new = cleaned_text(path)
    if new == old:
        return False
    tmp = path.with_name(f".{path.name}.clean.tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] or chapter_notebooks()
    for p in paths:
        if not p.is_file() or p.suffix != ".ipynb":
            print(f"error: {p} is not a notebook file (.ipynb)", file=sys.stderr)
            return 2
    changed = [p for p in paths if clean_file(p)]
    print(f"cleaned {len(paths)} notebooks; changed: " + (", ".join(p.name for p in changed) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
