"""Does `ferry optimize --auto` keep to its `--time-budget` on slow models? Each budget on
each model, alternately with this tree's onnxferry and another's (``--other SRC``: a
`git worktree` of an earlier commit, its ``src`` folder), in child processes.

    .venv/bin/python benchmarks/optimize_budget.py --other /tmp/before/src --budgets 2,30,60

Models: the onnx wheel's light VGG-19 (about 0.15 s a run at batch 1 on 2 cores) and
ResNet-50 (about 30 ms), fed the input onnx's backend test uses. Prints, per run: the
search's own elapsed seconds, the whole command's, how many candidates ran, and the answer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.real_models import light_input, light_model_paths

from machine import cpu_summary, load_average
from onnxferry.data import save_npz

MODELS = ("light_vgg19", "light_resnet50")


def run(src: Path, model: Path, feeds: Path, budget: float, out: Path) -> dict[str, object]:
    code = "import sys; from onnxferry.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["optimize", str(model), "-o", str(out), "--auto", "--inputs", str(feeds)]
    args += ["--max-drop", "0.01", "--time-budget", str(budget), "--json"]
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - start
    try:
        result = json.loads(done.stdout)["result"]
    except (json.JSONDecodeError, KeyError):
        return {"wall_s": wall, "error": done.stderr.strip().splitlines()[-1:]}
    chosen = result.get("chosen")
    candidates = result["candidates"]
    answer = candidates[chosen]["label"] if chosen is not None else "(original)"
    return {
        "wall_s": wall,
        "search_s": result["elapsed_s"],
        "tried": len(candidates),
        "untried": len(result["untried"]),
        "answer": answer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", type=Path, required=True, help="the other tree's src folder")
    parser.add_argument("--budgets", default="2,30,60")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1] / "src"
    print(cpu_summary())
    print(f"load average at start: {load_average()}")
    paths = {p.stem: p for p in light_model_paths()}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = paths[name]
            feeds = Path(tmp) / f"{name}.npz"
            save_npz(feeds, light_input(onnx.load(str(model))))
            for budget in (float(b) for b in args.budgets.split(",")):
                for label, src in (("other", args.other), ("this", here)):
                    got = run(src, model, feeds, budget, Path(tmp) / f"{label}.onnx")
                    print(f"{name} budget {budget:g} s, {label}: {json.dumps(got)}", flush=True)
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
