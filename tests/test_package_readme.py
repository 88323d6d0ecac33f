"""The README's deploy-targets commands run as written, one per target, in a fresh folder."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from onnxferry.registry import Registry
from tests.helpers import Run, mlp, save

README = Path(__file__).parents[1] / "README.md"


def deploy_commands() -> list[list[str]]:
    """The `ferry` commands of the sh block under "## Deploy targets"."""
    section = README.read_text().split("## Deploy targets", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the section has no sh block"
    lines = [re.sub(r"\s+#\s.*$", "", line) for line in block.group(1).splitlines()]
    commands = [shlex.split(line) for line in lines]
    return [c[1:] for c in commands if c]


def test_every_target_has_its_command() -> None:
    from onnxferry.package import TARGETS

    targets = {c[c.index("--target") + 1] for c in deploy_commands()}
    assert targets == set(TARGETS)


def test_the_readme_deploy_commands_run(
    ferry: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    save(mlp(), Path("model.onnx"))
    registry = Registry("registry", create=True)
    registry.add("model.onnx", "resnet")
    registry.set_alias("resnet", "production", 1)
    for args in deploy_commands():
        code, _, err = ferry(*args)
        assert code == 0, f"ferry {shlex.join(args)} -> {code}: {err}"
        assert any(Path(args[args.index("-o") + 1]).iterdir())
