"""Module boundaries of ddpm_edu: no import circles, layers that only point down, no private names across modules.

Every module's imports are read with `ast` (function-local imports included, since a circle hidden inside a
function is still a circle), so the test needs no import of the package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ddpm_edu"

# ARCHITECTURE.md ("Layers"): data/schedules -> diffusion/metrics -> models -> sampling -> applications -> train -> CLI.
# A module may import modules of its own layer or of lower layers only (the import-circle test covers one layer).
LAYERS = [
    {"__init__", "utils", "plotting", "schedules", "_export", "_clean"},   # plumbing, figures, schedules
    {"imageio", "data"},                                                   # pixels on disk, datasets
    {"diffusion", "metrics"},                                              # chapter 2's maths, chapter 5's scores
    {"configs", "unet", "dit", "models"},                                  # chapter 3's networks
    {"sampling", "score"},                                                 # chapter 5's reverse loop, chapter 7's view of it
    {"applications", "evaluation"},                                        # chapter 6
    {"checkpoint", "train"},                                               # chapter 4's trainer and its files
    {"cli_common", "cli_apps", "cli", "__main__"},                         # the command line
]


def module_name(path: Path) -> str:
    return path.stem


def imports_of(path: Path, package: str = "ddpm_edu") -> tuple[set[str], list[str]]:
    """(the package's modules that `path` imports, the private names it takes from them)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules = {p.stem for p in path.parent.glob("*.py")}
    found, private, aliases = set(), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == package:
                    target = parts[1] if len(parts) > 1 else "__init__"
                    found.add(target)
                    if alias.asname and len(parts) > 1:
                        aliases[alias.asname] = target
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] != package:
                continue
            if node.level > 1:
                raise AssertionError(f"{path.name}: imports from outside the package folder ({ast.unparse(node)})")
            parts = (node.module or "").split(".")
            parts = parts[1:] if node.level == 0 else parts
            if parts and parts[0]:
                source = parts[0]
                found.add(source)
                private += [f"{alias.name} from {source}" for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")]
            else:  # from ddpm_edu import x / from . import x: x is a module or a name of __init__
                for alias in node.names:
                    if alias.name in modules:
                        found.add(alias.name)
                        aliases[alias.asname or alias.name] = alias.name
                    else:
                        found.add("__init__")
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            private.append(f"{alias.name} from __init__")
    for node in ast.walk(tree):  # module._name on an imported module
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                private.append(f"{node.attr} from {aliases[node.value.id]}")
    found.discard(module_name(path))
    return found, private


def import_graph(folder: Path) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p)[0] for p in sorted(folder.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    unknown = sorted(set(graph) - set(layer))
    bad = [f"{name}: not in LAYERS (add it to tests/test_imports.py)" for name in unknown]
    for name, targets in graph.items():
        for target in targets:
            if name in layer and target in layer and layer[target] > layer[name]:
                bad.append(f"{name} (layer {layer[name]}) imports {target} (layer {layer[target]})")
    return sorted(bad)


# ----------------------------------------------------------------------------------------------- the package
def test_no_import_circle_inside_the_package():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_layers_only_point_down():
    assert layer_violations(import_graph(PACKAGE)) == []


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_private_name_from_another_module(path):
    assert imports_of(path)[1] == []


# ------------------------------------------------------------------------------- the checks themselves
def write_package(folder: Path, files: dict[str, str]) -> Path:
    pkg = folder / "ddpm_edu"
    pkg.mkdir()
    for name, text in files.items():
        (pkg / f"{name}.py").write_text(text)
    return pkg


def test_checker_finds_a_circle_through_a_function_local_import(tmp_path):
    pkg = write_package(tmp_path, {
        "__init__": "",
        "a": "from ddpm_edu.b import f\n",
        "b": "def f():\n    from .c import g\n    return g\n",
        "c": "import ddpm_edu.a as a_module\n",
        "d": "from ddpm_edu import c\n",
    })
    assert find_cycle(import_graph(pkg)) == ["a", "b", "c", "a"]
    assert import_graph(pkg)["d"] == {"c"}


def test_checker_finds_private_names_and_upward_imports(tmp_path):
    pkg = write_package(tmp_path, {
        "__init__": "",
        "utils": "from ddpm_edu import cli\n",
        "data": "from ddpm_edu.utils import _helper, public\n",
        "diffusion": "from ddpm_edu import data as d\nx = d._cache\ny = d.__name__\n",
        "cli": "",
    })
    assert imports_of(pkg / "data.py")[1] == ["_helper from utils"]
    assert imports_of(pkg / "diffusion.py")[1] == ["_cache from data"]
    assert layer_violations(import_graph(pkg)) == ["utils (layer 0) imports cli (layer 7)"]
    assert find_cycle(import_graph(pkg)) is None


def test_readme_layout_names_every_module():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.find("\n## ", 1)] if "\n## " in layout[1:] else layout
    missing = [p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")
               and f"`{p.stem}`" not in layout]
    assert missing == [], f"README's layout table does not name {missing}"
