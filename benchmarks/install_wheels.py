"""Install the peers' wheels (TRL, Tunix and what they need) without network into a folder.

    python -m benchmarks.install_wheels --site DIR .whl_peers .whl_peers_pyarrow

The peers are not dependencies of the course: their wheels travel in git-ignored folders and are
installed with no index and no dependency resolution into `--site` (put first on PYTHONPATH by
`experiments/bench_peers.toml`). A wheel is installed only when its distribution is missing or
older, so the machine's own torch, transformers, jax, flax and optax are used as they are.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import pathlib
import re
import subprocess
import sys

from packaging.version import Version


def missing_wheels(folders: list[str]) -> list[pathlib.Path]:
    out = []
    for folder in folders:
        for whl in sorted(pathlib.Path(folder).glob("*.whl")):
            name, version = whl.name.split("-")[:2]
            try:
                have = md.version(re.sub(r"[-_.]+", "-", name).lower())
            except md.PackageNotFoundError:
                have = None
            if have is None or Version(have) < Version(version):
                out.append(whl)
            print(f"{name} {version}: {'have ' + have if have else 'missing'}", file=sys.stderr)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.install_wheels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="folders of .whl files")
    p.add_argument("--site", required=True, help="install target (put it first on PYTHONPATH)")
    args = p.parse_args(argv)
    pathlib.Path(args.site).mkdir(parents=True, exist_ok=True)
    wheels = missing_wheels(args.folders)
    if wheels:
        print(f"installing into {args.site}: {[w.name for w in wheels]}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                        "--no-deps", "--upgrade", "--target", args.site, *map(str, wheels)],
                       check=True)
    for module in ("trl", "peft", "accelerate", "datasets", "tunix", "qwix", "gguf"):
        try:
            mod = __import__(module)
            print(f"import {module}: {getattr(mod, '__version__', 'ok')}")
        except Exception as e:   # the bench reports the failing framework as a row
            print(f"import {module}: FAILED {type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
