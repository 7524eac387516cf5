"""The package's import graph (docs/ARCHITECTURE.md): no cycles, configs at the bottom, the GRPO
maths apart from sampling and data, the GPU wing entered from one place, nothing in the package
importing what stands outside it. Imports inside functions (lazy ones) count like any other."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "aha_utils"
CONFIGS = {"aha_utils.config", "aha_utils.train_config", "aha_utils.run_config"}
OUTSIDE = ("benchmarks", "experiments", "notebooks", "tests", "scripts")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every module `path` imports, at any depth of its code; `from a import b` counts as a.b
    when that is a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
            # `from pkg import mod` depends on mod (pkg's __init__ runs first for any of pkg's
            # modules, as with `import pkg.mod`); `from mod import name` on mod.
            out.update(subs or {base})
    return out


def graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


GRAPH = graph()
OURS = {m: {i for i in deps if i.split(".")[0] == "aha_utils" and i in GRAPH and i != m}
        for m, deps in GRAPH.items()}


def test_no_import_cycles():
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(OURS[m]):
            if d == "aha_utils":
                continue   # the package's __init__ (kept import-free below)
            if state.get(d) == "open":
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"
    for m in sorted(OURS):
        if m not in state:
            visit(m)
    assert not {d for d in OURS["aha_utils"]}, "aha_utils/__init__.py imports submodules"


def test_configs_are_at_the_bottom():
    for m in CONFIGS:
        assert OURS[m] <= CONFIGS, (m, OURS[m] - CONFIGS)


def test_grpo_maths_imports_neither_sampler_nor_data_nor_model():
    banned = {"aha_utils.sampler", "aha_utils.model", "aha_utils.data"}
    for dep in OURS["aha_utils.grpo"]:
        assert not any(dep == b or dep.startswith(b + ".") for b in banned), dep


def test_memory_does_not_import_the_sampler():
    assert "aha_utils.sampler" not in OURS["aha_utils.memory"]


def test_the_gpu_wing_is_entered_from_one_place():
    """aha_utils/kernels/ (the optional GPU wing) is imported only by the sampler (and itself)."""
    for m, deps in OURS.items():
        if m.startswith("aha_utils.kernels") or m == "aha_utils.sampler":
            continue
        assert not {d for d in deps if d.startswith("aha_utils.kernels")}, m


def test_the_package_imports_nothing_outside_it():
    for m, deps in GRAPH.items():
        bad = {d for d in deps if d.split(".")[0] in OUTSIDE}
        assert not bad, (m, bad)


def test_task_names_agree():
    from aha_utils import rewards, run_config
    assert run_config.TASKS == rewards.TASKS


def test_nothing_in_the_package_imports_the_loops():
    for m, deps in OURS.items():
        assert not deps & {"aha_utils.train", "aha_utils.sft"}, (m, deps)
        if m != "aha_utils.sft":   # the SFT command line is part of the SFT loop
            assert "aha_utils.sft_cli" not in deps, m
