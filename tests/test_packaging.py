"""The pins say the truth: the Python and numpy floors the pinned jax really needs, tools for tests
and editing kept out of the runtime requirements, the CPU torch build for tests, and CI installing
against the versions it last tested."""

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _requirements(name: str) -> list[Requirement]:
    lines = (ROOT / name).read_text().splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines
            if line.split("#")[0].strip() and not line.lstrip().startswith("-")]


def _floor(spec: SpecifierSet) -> Version:
    return max(Version(s.version) for s in spec if s.operator in (">=", "=="))


def test_python_floor_is_what_the_pinned_jax_flax_orbax_need():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ours = _floor(SpecifierSet(project["requires-python"]))
    for dist in ("jax", "flax", "orbax-checkpoint"):
        theirs = md.metadata(dist)["Requires-Python"]
        assert ours >= _floor(SpecifierSet(theirs)), (dist, theirs)
    setup = (ROOT / "colab_setup.sh").read_text()
    assert f"sys.version_info < ({ours.major}, {ours.minor})" in setup
    assert f"Python {ours.major}.{ours.minor}+" in (ROOT / "README.md").read_text()


def test_numpy_floor_is_what_the_pinned_jax_needs():
    ours = {r.name: r for r in _requirements("requirements.txt")}["numpy"].specifier
    jax_numpy = next(Requirement(r) for r in md.requires("jax") if r.startswith("numpy"))
    assert _floor(ours) >= _floor(jax_numpy.specifier)


def test_test_and_editing_tools_are_extras_not_runtime():
    runtime = {r.name for r in _requirements("requirements.txt")}
    assert not runtime & {"nbval", "jupytext", "pytest", "torch", "transformers"}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {k: {Requirement(r).name for r in v} for k, v in extras.items()}
    assert {"nbval", "jupytext", "pytest", "torch"} <= names["test"]
    assert "jupytext" in names["notebooks"]
    assert {r.name for r in _requirements("requirements-test.txt")} == names["test"]


def test_tests_use_the_cpu_torch_build():
    torch = {r.name: r for r in _requirements("requirements-test.txt")}["torch"]
    assert [s.version for s in torch.specifier] == ["2.13.0+cpu"]
    assert "download.pytorch.org/whl/cpu" in (ROOT / "colab_setup.sh").read_text()


def test_ci_installs_against_the_versions_it_tested():
    assert "-c constraints-ci.txt" in (ROOT / ".ci" / "run").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (ROOT / "constraints-ci.txt").read_text(), re.M))
    for dist in ("jax", "jaxlib", "flax", "orbax-checkpoint", "optax", "numpy", "torch"):
        assert dist in pins, dist
        for req in _requirements("requirements.txt") + _requirements("requirements-test.txt"):
            if req.name == dist:
                assert req.specifier.contains(pins[dist], prereleases=True), (dist, pins[dist])
