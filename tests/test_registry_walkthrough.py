"""The README's registry walk-through runs as written, command by command, in a fresh folder.

Its `ferry serve` line is the one left out (tests/test_serve_registry.py serves a registry
through promotions and an automatic rollback). Promotions get ``--max-slowdown 1`` added: the
latency gate itself is tested in tests/test_registry_gates.py, and here two identical tiny
models on a shared machine must not fail the walk-through on timing noise.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from onnxferry.data import save_test_case
from onnxferry.model import Model
from onnxferry.runtime import OrtRunner
from tests.helpers import Run, mlp, mlp_feeds, save

README = Path(__file__).parents[1] / "README.md"


def walkthrough() -> list[list[str]]:
    """The `ferry` commands of the first sh block under "## Registry and rollout"."""
    text = README.read_text()
    section = text.split("## Registry and rollout", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the section has no sh block"
    commands = []
    for line in block.group(1).splitlines():
        for command in line.split("#", 1)[0].split(";"):
            words = shlex.split(command)
            if words:
                assert words[0] == "ferry", command
                commands.append(words[1:])
    return commands


def _model_with_golden(folder: Path) -> None:
    model = Model.load(save(mlp(), folder / "model.onnx"))
    feeds = mlp_feeds(1, batch=1)[0]
    save_test_case(folder / "golden" / "test_data_set_0", feeds, OrtRunner(model).run(feeds))


def test_the_readme_walkthrough_runs(
    ferry: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FERRY_REGISTRY", raising=False)
    _model_with_golden(Path("out"))
    _model_with_golden(Path("out2"))
    commands = walkthrough()
    assert [c[:2] for c in commands].count(["registry", "promote"]) == 2
    for args in commands:
        if args[0] == "serve":
            continue
        if args[:2] == ["registry", "promote"]:
            args = [*args, "--max-slowdown", "1"]
        code, out, err = ferry(*args)
        assert code == 0, f"ferry {shlex.join(args)} -> {code}: {err}"
    code, out, _ = ferry("registry", "history", "resnet", "--json")
    changes = json.loads(out)["result"]["history"]
    assert [(c["version"], c["action"]) for c in changes] == [
        (1, "promote"),
        (2, "promote"),
        (1, "rollback"),
    ]
    assert changes[1]["gates"]["passed"] is True
    code, out, _ = ferry("registry", "show", "resnet@production", "--json")
    assert json.loads(out)["result"]["version"] == 1
