"""Every notebook starts with the same setup cell (issue 32), and it works where a learner opens it.

The cell is taken from each `notebooks/NN_*.py` (py:percent) and run with `python` in a fresh
process whose sys.path holds the test environment's packages but not this repository, nor an
editable `aha_utils` (`-I -S`, then the site-packages folders added by hand, so no `.pth` file
runs). Cases:
- opened alone, no repository beside it: the cell clones `AHA_REPO_URL` (here a local git copy of
  this working tree), runs `colab_setup.sh $AHA_SETUP_FLAGS` (`--dry-run`: installs nothing) and
  imports `aha_utils` from the clone; run again in the same folder it reuses that clone;
- from a folder inside a clone: no clone, `aha_utils` comes from this repository;
- `aha_utils` installed editable from a clone, notebook elsewhere: that clone is used (only when
  the test environment has such an install).
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))

# The test environment's packages (jax, flax, ...) without running their .pth files: an editable
# aha_utils is installed by one, and it would hide whether the cell makes aha_utils importable.
RUNNER = """\
import importlib.util
import sys
sys.path.extend({site_dirs!r})
if {isolate!r} and importlib.util.find_spec("aha_utils") is not None:
    sys.exit("aha_utils is importable before the setup cell: the test proves nothing")
exec(compile(open({cell!r}).read(), "setup_cell", "exec"), {{"__name__": "__main__"}})
import aha_utils
print("AHA_UTILS_FILE=" + aha_utils.__file__)
"""


def first_code_cell(py: Path) -> str:
    """The source of the first code cell of a py:percent notebook (its `# %%` line excluded)."""
    cells, current = [], None
    for line in py.read_text().splitlines():
        if line.startswith("# %%"):
            current = [] if not re.match(r"# %% \[(markdown|md|raw)\]", line) else None
            cells.append(current)
        elif current is not None:
            current.append(line)
    code = next(c for c in cells if c is not None)
    return "\n".join(code).strip("\n") + "\n"


def test_every_notebook_starts_with_the_same_setup_cell():
    assert len(NOTEBOOKS) == 6, [p.name for p in NOTEBOOKS]
    cells = {p.name: first_code_cell(p) for p in NOTEBOOKS}
    reference = cells[NOTEBOOKS[0].name]
    different = [name for name, cell in cells.items() if cell != reference]
    assert not different, f"setup cell differs from {NOTEBOOKS[0].name} in {different}"
    for needle in ("AHA_REPO_URL", "AHA_SETUP_FLAGS", "colab_setup.sh", "import aha_utils",
                   "jax.__version__", "jax.devices()"):
        assert needle in reference, needle


def run_cell(tmp_path: Path, cwd: Path, repo_url: str, isolate: bool = True) -> tuple[str, Path]:
    """Run notebook 01's setup cell in `cwd`; return its output and the imported aha_utils file."""
    cell = tmp_path / "setup_cell.py"
    cell.write_text(first_code_cell(NOTEBOOKS[0]))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(site_dirs=site.getsitepackages(), cell=str(cell),
                                    isolate=isolate))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(AHA_REPO_URL=repo_url, AHA_SETUP_FLAGS="--dry-run", JAX_PLATFORMS="cpu",
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    flags = ["-I", "-S"] if isolate else ["-I"]
    proc = subprocess.run([sys.executable, *flags, str(runner)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    found = re.findall(r"^AHA_UTILS_FILE=(.*)$", proc.stdout, re.M)
    assert found, out
    assert re.search(r"^jax \S+ \| \[.*\]$", proc.stdout, re.M), out
    return out, Path(found[-1]).resolve()


def repo_root_printed(out: str, cwd: Path) -> Path:
    """The repository root the cell printed (relative to the folder it ran in, `cwd`)."""
    roots = re.findall(r"^repo root: (.*)$", out, re.M)
    assert len(roots) == 1, out
    assert not Path(roots[0]).is_absolute(), out   # no machine's path in committed outputs
    return (cwd / roots[0]).resolve()


@pytest.fixture(scope="module")
def source_repo(tmp_path_factory) -> str:
    """A file:// URL of a git repository holding this working tree as one commit (uncommitted
    changes included: a clone of this repository would miss them)."""
    if shutil.which("git") is None or shutil.which("bash") is None:
        pytest.skip("git and bash are needed")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    src = tmp_path_factory.mktemp("source") / "getting-to-aha"
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com",
           "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "working tree"]):
        subprocess.run([*git, *args], cwd=src, check=True, capture_output=True)
    return src.as_uri()


def test_setup_cell_opened_alone_clones_and_sets_up(tmp_path, source_repo):
    work = tmp_path / "work"  # a folder with no repository beside it, like Colab's /content
    work.mkdir()
    clone = work / "getting-to-aha"
    out, imported = run_cell(tmp_path, work, source_repo)
    assert repo_root_printed(out, work) == clone.resolve()
    assert imported.is_relative_to(clone.resolve()), (imported, out)
    assert "dry run: nothing was installed" in out, out  # colab_setup.sh ran, with the flags
    assert (clone / "colab_setup.sh").is_file() and (clone / ".git").is_dir()

    # The runtime restarted (Colab), nothing installed: the cell reuses its clone.
    out, imported = run_cell(tmp_path, work, "file:///nonexistent/getting-to-aha")
    assert repo_root_printed(out, work) == clone.resolve()
    assert imported.is_relative_to(clone.resolve()), (imported, out)
    assert sorted(p.name for p in work.iterdir()) == ["getting-to-aha"]


def test_setup_cell_in_a_clone_makes_no_clone(tmp_path):
    before = sorted(p.name for p in (ROOT / "notebooks").iterdir())
    out, imported = run_cell(tmp_path, ROOT / "notebooks", "file:///nonexistent/getting-to-aha")
    assert repo_root_printed(out, ROOT / "notebooks") == ROOT
    assert imported.is_relative_to(ROOT), (imported, out)
    assert "[setup]" not in out, out  # colab_setup.sh did not run
    assert sorted(p.name for p in (ROOT / "notebooks").iterdir()) == before


def test_setup_cell_uses_an_editable_install(tmp_path):
    proc = subprocess.run([sys.executable, "-I", "-c",
                           "import importlib.util as u; s = u.find_spec('aha_utils'); "
                           "print(s.origin if s else '')"],
                          cwd=tmp_path, capture_output=True, text=True, check=True)
    if not proc.stdout.strip():
        pytest.skip("aha_utils is not installed in the test environment")
    installed = Path(proc.stdout.strip()).resolve().parents[1]
    if not (installed / "colab_setup.sh").is_file():
        pytest.skip(f"aha_utils is installed, but not editable from a clone ({installed})")
    out, imported = run_cell(tmp_path, tmp_path, "file:///nonexistent/getting-to-aha",
                             isolate=False)
    assert repo_root_printed(out, tmp_path) == installed
    assert imported.is_relative_to(installed), (imported, out)
    assert not (tmp_path / "getting-to-aha").exists()
