"""environment.yml is what Binder (repo2docker) builds: it must install this package with a CPU torch."""

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def _environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


def _pip_lines(env):
    sections = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    assert len(sections) == 1, "environment.yml needs exactly one pip: section"
    return sections[0]


def test_binder_sees_environment_yml_at_the_top():
    # repo2docker reads binder/ or .binder/ first; with neither, environment.yml at the root decides.
    assert not (ROOT / "binder").exists() and not (ROOT / ".binder").exists()
    assert (ROOT / "environment.yml").is_file()


def test_conda_part_is_python_311_and_pip():
    conda = [dep for dep in _environment()["dependencies"] if isinstance(dep, str)]
    assert "python=3.11" in conda
    assert "pip" in conda


def test_pip_part_installs_the_package_with_cpu_torch():
    lines = _pip_lines(_environment())
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert "-e .[test,book]" in lines, "Binder must install this repository (editable) with its extras"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = re.search(r"\[(.*)\]", "-e .[test,book]").group(1).split(",")
    assert set(extras) <= set(project["optional-dependencies"])
    for line in lines:
        if line.startswith("-"):
            continue  # pip options (index, editable install) checked above
        req = Requirement(line)  # every other line is a plain requirement pip can read
        if req.name == "torch":
            torch_dep = next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "torch")
            assert req.specifier == torch_dep.specifier, "environment.yml and pyproject.toml disagree on torch"
