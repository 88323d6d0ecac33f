"""Start-up cost: `import onnxferry` and `ferry --help`, this tree against an earlier commit.

    .venv/bin/python benchmarks/startup.py --base 84b22e4          # both trees, side by side
    .venv/bin/python benchmarks/startup.py --runs 30

Each figure is the minimum over ``--runs`` fresh interpreters (the least noisy reading of a
cold start on a shared machine), taken alternately for the two trees so that load on the
machine falls on both alike. The earlier tree is exported with ``git archive`` into a temp
directory and put first on PYTHONPATH; the same interpreter and installed packages run both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from machine import cpu_summary, load_average

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "import onnxferry": ["-c", "import onnxferry"],
    "ferry --help": [  # what the console script runs
        "-c",
        "import sys; from onnxferry.cli import console_main; sys.argv[0] = 'ferry'; "
        "sys.exit(console_main())",
        "--help",
    ],
}


def export(rev: str, into: Path) -> Path:
    """The ``src`` directory of ``rev``, written under ``into``."""
    archive = into / "tree.tar"
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), rev, "src"],
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def seconds(args: list[str], src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="an earlier commit to compare with")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    trees = {"this tree": ROOT / "src"}
    with tempfile.TemporaryDirectory() as tmp:
        if args.base:
            trees[args.base] = export(args.base, Path(tmp))
        print(f"# startup, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print(f"# {cpu_summary()}; load {load_average()}; {args.runs} runs, minimum shown\n")
        print(f"| command | {' | '.join(trees)} |" + (" ratio |" if args.base else ""))
        print("|---|" + "---:|" * (len(trees) + (1 if args.base else 0)))
        for label, command in COMMANDS.items():
            best = {name: float("inf") for name in trees}
            for _ in range(args.runs):
                for name, src in trees.items():
                    best[name] = min(best[name], seconds(command, src))
            cells = " | ".join(f"{best[name] * 1000:.0f} ms" for name in trees)
            ratio = f" {best['this tree'] / best[args.base]:.2f}x |" if args.base else ""
            print(f"| `{label}` | {cells} |{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
