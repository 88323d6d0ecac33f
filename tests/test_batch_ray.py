"""`ferry batch --engine ray` on a local Ray instance (``ray.init(num_cpus=2)``): the same
rows, trace columns and outputs as the local engine."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from onnxferry.batch import BatchProgress, Preprocess, batch, read_output
from onnxferry.batch.ray_engine import start_ray
from onnxferry.customops import extensions_installed
from tests.helpers import Run, mlp, onnx_text, save
from tests.test_batch import (
    _finished,
    _partial,
)
from tests.test_customops import python_op_model, swish, write_ops

ray = pytest.importorskip("ray", reason="ray[data] is not installed (pip install 'ray[data]')")

IMAGE = """
<ir_version: 10, opset_import: ["" : 21]>
pool (float[N, 3, 8, 8] x) => (float[N, 3] m) {
    axes = Constant<value = int64[2] {2, 3}>()
    m = ReduceMean<keepdims = 0>(x, axes)
}
"""


# Ray 2.55 drops its helper processes' Popen objects and /dev/null handles without closing them
# (Python reports that only as ResourceWarning, which it hides outside tests).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    start_ray(num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert np.array_equal(a[name], b[name]), name


def test_parquet_on_ray_equals_the_local_engine(local_ray: None, tmp_path: Path) -> None:
    save(mlp(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((1000, 4)).astype(np.float32)
    column = pa.FixedShapeTensorArray.from_numpy_ndarray(x)
    pq.write_table(pa.table({"x": column}), tmp_path / "x.parquet", row_group_size=300)
    seen: list[BatchProgress] = []
    on_ray = batch(tmp_path / "m.onnx", tmp_path / "x.parquet", tmp_path / "ray", engine="ray",
                   workers=1, batch_size=100, shard_rows=250, progress=seen.append)  # fmt: skip
    batch(tmp_path / "m.onnx", tmp_path / "x.parquet", tmp_path / "local", batch_size=100,
          shard_rows=250)  # fmt: skip
    assert (on_ray.engine, on_ray.rows, on_ray.workers) == ("ray", 1000, 1)
    assert on_ray.shards_written == 4 and on_ray.rows_per_s > 0
    assert [p.done for p in seen] == [0, 250, 500, 750, 1000]  # a line per finished shard
    _same(read_output(tmp_path / "ray"), read_output(tmp_path / "local"))
    # The same files as the local engine's: either engine can resume the other's run.
    assert _finished(tmp_path / "ray") == _finished(tmp_path / "local")
    schema = pq.read_schema(next((tmp_path / "ray").glob("*.parquet")))
    assert schema.names == ["row", "probs"]
    assert isinstance(schema.field("probs").type, pa.FixedShapeTensorType)


def test_images_through_the_cli_on_ray_equal_the_local_engine(
    local_ray: None, ferry: Run, tmp_path: Path
) -> None:
    save(onnx_text(IMAGE), tmp_path / "pool.onnx")
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    for i in range(5):
        size = (9 + i, 11)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{i}.png"
        )
    options = ["--resize", "8x8", "--mean", "0.5", "--std", "0.25", "--batch-size", "2"]
    code, out, err = ferry("batch", tmp_path / "pool.onnx", tmp_path / "images", "-o",
                           tmp_path / "ray", "--engine", "ray", "--workers", "1", *options,
                           "--json")  # fmt: skip
    assert code == 0, err
    assert '"engine": "ray"' in out
    prep = Preprocess(resize=(8, 8), mean=(0.5,), std=(0.25,))
    batch(tmp_path / "pool.onnx", tmp_path / "images", tmp_path / "local", batch_size=2,
          preprocess=prep)  # fmt: skip
    on_ray = read_output(tmp_path / "ray")
    _same(on_ray, read_output(tmp_path / "local"))
    assert on_ray["file"].tolist() == [f"{i}.png" for i in range(5)]

    # The same run again finds every shard finished; another run's shards are refused.
    code, out, err = ferry("batch", tmp_path / "pool.onnx", tmp_path / "images", "-o",
                           tmp_path / "ray", "--engine", "ray", *options, "--json")  # fmt: skip
    assert code == 0, err
    again = json.loads(out)["result"]
    assert (again["shards_skipped"], again["shards_written"], again["processed"]) == (1, 0, 0)
    other = [*options, "--shard-rows", "2"]
    code, _, err = ferry("batch", tmp_path / "pool.onnx", tmp_path / "images", "-o",
                         tmp_path / "ray", "--engine", "ray", *other)  # fmt: skip
    assert code == 2 and "holds the output of another run (shard_rows differ)" in err
    assert len(err.strip().splitlines()) == 1


def test_python_custom_operators_run_in_the_ray_actors(
    local_ray: None, ferry: Run, tmp_path: Path
) -> None:
    """The actors are processes of their own: each imports the --custom-ops file."""
    # not importorskip: importing the package loads its library unbound (customops)
    if not extensions_installed():
        pytest.skip("onnxruntime-extensions not installed")
    op_type = "FerryRayTestSwish"  # one kernel per type per process: not test_customops' type
    save(python_op_model(op_type), tmp_path / "pyop.onnx")
    ops = write_ops(tmp_path / "ops.py", op_type)
    x = np.random.default_rng(2).standard_normal((40, 4)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    trusted = ["--custom-ops", ops, "--trust-custom-ops"]
    code, _, err = ferry("batch", tmp_path / "pyop.onnx", tmp_path / "x.npz", "-o",
                         tmp_path / "ray", "--engine", "ray", "--workers", "1",
                         "--batch-size", "16", *trusted)  # fmt: skip
    assert code == 0, err
    out = read_output(tmp_path / "ray")
    assert out["row"].tolist() == list(range(40))
    np.testing.assert_allclose(out["y"], swish(x), rtol=1e-6)


def test_a_bad_row_in_a_ray_actor_is_the_local_engines_one_line(
    local_ray: None, ferry: Run, tmp_path: Path
) -> None:
    """The actor's DataError reaches the driver as the local engine's one line (exit 2), and
    the shards finished before the bad one stay written for a rerun."""
    save(mlp(), tmp_path / "m.onnx")
    rows = [json.dumps({"x": [0.5, 0.25, 0.0, 1.0]})] * 50 + [json.dumps({"x": [0.5, 0.25]})]
    (tmp_path / "x.jsonl").write_text("\n".join(rows) + "\n")
    code, _, err = ferry("batch", tmp_path / "m.onnx", tmp_path / "x.jsonl", "-o",
                         tmp_path / "cli", "--engine", "ray", "--workers", "1",
                         "--batch-size", "10", "--shard-rows", "20")  # fmt: skip
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err
    # Ray's own C++ log may print a line of its own before ferry's.
    last = err.strip().splitlines()[-1]
    assert re.match(r"^ferry: error: lines 51-51 of .*x.jsonl: input 'x' expects shape", last), err
    assert _finished(tmp_path / "cli") == [
        "part-000000000000-000000000020.parquet", "part-000000000020-000000000040.parquet",
    ]  # fmt: skip
    assert not _partial(tmp_path / "cli")


def test_outputs_sized_by_the_data_on_ray_equal_the_local_engine(
    local_ray: None, tmp_path: Path
) -> None:
    """A detector's boxes after non-max suppression, a row at a time, as lists: the same
    rows from the Ray actors as from the local engine."""
    from tests.real_models import BUILT

    save(BUILT["nms"].build(), tmp_path / "nms.onnx")
    images = np.random.default_rng(2).standard_normal((4, 32, 32, 3)).astype(np.float32)
    images[2] = 0  # finds nothing
    np.save(tmp_path / "x.npy", images)
    batch(tmp_path / "nms.onnx", tmp_path / "x.npy", tmp_path / "ray", engine="ray", workers=1)
    batch(tmp_path / "nms.onnx", tmp_path / "x.npy", tmp_path / "local")
    on_ray, local = read_output(tmp_path / "ray"), read_output(tmp_path / "local")
    assert on_ray["boxes"][2].shape == (0, 4)
    for name in ("boxes", "scores"):
        assert all(np.array_equal(a, b) for a, b in zip(on_ray[name], local[name], strict=True))
