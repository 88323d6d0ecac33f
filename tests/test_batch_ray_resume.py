"""`ferry batch --engine ray` killed with kill -9 resumes: the actors write the local engine's
shards, so a rerun skips the finished ones and redoes the one the kill cut short.

Its own file: the killed driver starts its own Ray instance, and beside test_batch_ray.py's
(which runs first, while mypy holds the other core) the two took 121 s in CI against 34 s
alone; here it runs once those have finished."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from onnxferry.batch import read_output
from tests.test_batch import (
    _direct,
    _ferry,
    _finished,
    _heavy_mlp,
    _npy,
    _partial,
    _rows,
    kill_9_mid_shard,
)

pytest.importorskip("ray", reason="ray[data] is not installed (pip install 'ray[data]')")

pytestmark = pytest.mark.slow


def test_a_ray_run_killed_with_kill_9_resumes(tmp_path: Path) -> None:
    """The actors write the local engine's shards, so a rerun skips the finished ones and
    redoes the one the kill cut short (its own Ray instance: the driver is the one killed)."""
    model = _heavy_mlp(tmp_path / "heavy.onnx")
    x = _rows(8000, width=256)
    source, out = _npy(tmp_path, x), tmp_path / "out"
    args = [model, source, "-o", out, "--engine", "ray", "--batch-size", "250"]
    args += ["--shard-rows", "1000", "--workers", "1", "--json"]
    kill_9_mid_shard(args, out)
    assert len(_finished(out)) in range(1, 8), "the kill came after the run finished"

    rerun = subprocess.run(_ferry(*args), capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)["result"]
    # The killed driver's actor may finish the shard it held before Ray stops it.
    assert summary["shards_skipped"] >= 1
    assert summary["shards_skipped"] + summary["shards_written"] == 8
    assert summary["processed"] == 1000 * summary["shards_written"]
    assert not _partial(out)
    got = read_output(out)
    assert np.array_equal(got["row"], np.arange(8000))
    np.testing.assert_allclose(got["y"], _direct(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)
