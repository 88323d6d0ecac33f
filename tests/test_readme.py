"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_readme_python_blocks_run(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(ROOT)
    for block in blocks:
        namespace: dict[str, object] = {"__name__": "readme"}
        exec(compile(block, "README.md", "exec"), namespace)
        assert "report" in namespace
