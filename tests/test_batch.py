"""`ferry batch` on the local engine: every input kind gives the outputs of a direct
``session.run`` in row order, traceable; shards resume after kill -9; memory stays bounded on an
input larger than the cap; bad input is one line and exit 2."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from onnxferry.batch import BatchProgress, Preprocess, batch, read_output
from onnxferry.errors import UsageError
from tests.helpers import STREAM, Run, deep_mlp, mlp, onnx_text, recurrent, save

TWO_INPUTS = """
<ir_version: 10, opset_import: ["" : 21]>
two (float[N, 4] a, float[N, 4] b) => (float[N, 4] y, float[N] s) {
    y = Add(a, b)
    axes = Constant<value = int64[1] {1}>()
    s = ReduceSum<keepdims = 0>(y, axes)
}
"""
IMAGE = """
<ir_version: 10, opset_import: ["" : 21]>
pool (float[N, 3, 8, 8] x) => (float[N, 3] m) {
    axes = Constant<value = int64[2] {2, 3}>()
    m = ReduceMean<keepdims = 0>(x, axes)
}
"""
FIXED = """
<ir_version: 10, opset_import: ["" : 21]>
fixed (float[2, 4] x) => (float[2, 4] y) { y = Relu(x) }
"""
STATEFUL = """
<ir_version: 10, opset_import: ["" : 21]>
stateful (float[N, 4] x, float[2, N, 3] state) => (float[N, 4] y, float[2, N, 3] state_out) {
    y = Relu(x)
    state_out = Neg(state)
}
"""
TIME_MAJOR = """
<ir_version: 10, opset_import: ["" : 21]>
time_major (float[{rows}, 4] x) => (float[4, {rows}] y) {{ y = Transpose(x) }}
"""


def _direct(model: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _rows(n: int, width: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("models")
    return {
        "mlp": save(mlp(), tmp / "mlp.onnx"),
        "two": save(onnx_text(TWO_INPUTS), tmp / "two.onnx"),
        "image": save(onnx_text(IMAGE), tmp / "image.onnx"),
        "fixed": save(onnx_text(FIXED), tmp / "fixed.onnx"),
        # time-major, the rows' axis not named: nothing says where they are
        "undeclared": save(
            onnx_text(TIME_MAJOR.format(rows="N").replace("[4, N] y", "[4, T] y")),
            tmp / "undeclared.onnx",
        ),
    }


# --- every input kind ---------------------------------------------------------------------


def _npy(tmp: Path, x: np.ndarray) -> Path:
    np.save(tmp / "x.npy", x)
    return tmp / "x.npy"


def _parquet_folder(tmp: Path, x: np.ndarray) -> Path:
    """Two files (sorted by name), several row groups each, one list<double> column."""
    folder = tmp / "table"
    folder.mkdir()
    half = len(x) // 2
    for name, part in (("b.parquet", x[half:]), ("a.parquet", x[:half])):
        column = pa.array(list(part.astype(np.float64)), pa.list_(pa.float64()))
        pq.write_table(pa.table({"x": column}), folder / name, row_group_size=70)
    # a.parquet holds the first half: sorted order, not creation order
    return folder


def _arrow_tensor(tmp: Path, x: np.ndarray) -> Path:
    """An Arrow IPC file whose one column (named otherwise) holds fixed_shape_tensor cells."""
    table = pa.table({"features": pa.FixedShapeTensorArray.from_numpy_ndarray(x)})
    with pa.OSFile(str(tmp / "x.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        for batch_ in table.to_batches(max_chunksize=90):
            w.write_batch(batch_)
    return tmp / "x.arrow"


def _jsonl(tmp: Path, x: np.ndarray) -> Path:
    lines = [json.dumps({"x": row.tolist()}) for row in x]
    lines.insert(3, "")  # a blank line is not a row
    (tmp / "x.jsonl").write_text("\n".join(lines) + "\n")
    return tmp / "x.jsonl"


@pytest.mark.parametrize("make", [_npy, _parquet_folder, _arrow_tensor, _jsonl])
def test_each_input_kind_gives_the_direct_outputs_in_row_order(
    make: Any, models: dict[str, Path], tmp_path: Path
) -> None:
    x = _rows(333)
    source = make(tmp_path, x)
    summary = batch(models["mlp"], source, tmp_path / "out", batch_size=64, shard_rows=100)
    assert (summary.rows, summary.processed, summary.shards_written) == (333, 333, 4)
    out = read_output(tmp_path / "out")
    assert np.array_equal(out["row"], np.arange(333))
    np.testing.assert_allclose(out["probs"], _direct(models["mlp"], {"x": x})["probs"], rtol=1e-6)
    if make is _jsonl:  # rows after the blank line come from one line further down
        assert out["line"][:5].tolist() == [1, 2, 3, 5, 6]


def test_npz_feeds_every_input_by_name_and_writes_tensor_columns(
    models: dict[str, Path], tmp_path: Path
) -> None:
    a, b = _rows(250, seed=1), _rows(250, seed=2)
    np.savez_compressed(tmp_path / "ab.npz", b=b, a=a)
    batch(models["two"], tmp_path / "ab.npz", tmp_path / "out", batch_size=32, shard_rows=100)
    out, want = read_output(tmp_path / "out"), _direct(models["two"], {"a": a, "b": b})
    assert np.array_equal(out["y"], want["y"]) and np.array_equal(out["s"], want["s"])
    schema = pq.read_schema(tmp_path / "out" / "part-000000000000-000000000100.parquet")
    assert schema.names == ["row", "y", "s"]
    assert isinstance(schema.field("y").type, pa.FixedShapeTensorType)


@pytest.mark.parametrize("labels", ["int", "str"])
def test_zipmap_probabilities_become_a_map_column_or_their_table_in_npy(
    labels: str, tmp_path: Path
) -> None:
    """skl2onnx's default classifier output, a sequence of maps from class label to
    probability: Parquet keeps each row's map, .npy the table in the classes' order."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    x = _rows(300)
    classes = np.array(["ant", "bee", "cat"]) if labels == "str" else np.array([0, 1, 2])
    which = (x[:, 0] > 0).astype(int) + (x[:, 1] > 1)
    classifier = LogisticRegression().fit(x, classes[which])
    proto = convert_sklearn(classifier, initial_types=[("x", FloatTensorType([None, 4]))])
    model = tmp_path / "zipmap.onnx"
    model.write_bytes(proto.SerializeToString())
    np.save(tmp_path / "x.npy", x)
    want = _direct(model, {"x": x})["output_probability"]
    batch(model, tmp_path / "x.npy", tmp_path / "parquet", batch_size=64, shard_rows=128)
    maps = read_output(tmp_path / "parquet")["output_probability"]
    assert maps.shape == (300,) and maps.tolist() == want  # float32 values, kept exactly
    assert list(maps[0]) == list(classifier.classes_)
    schema = pq.read_schema(tmp_path / "parquet" / "part-000000000000-000000000128.parquet")
    assert pa.types.is_map(schema.field("output_probability").type)
    batch(model, tmp_path / "x.npy", tmp_path / "npy", batch_size=64, output_format="npy")
    table = read_output(tmp_path / "npy")["output_probability"]
    np.testing.assert_allclose(table, classifier.predict_proba(x), rtol=1e-5, atol=1e-6)


def test_images_are_preprocessed_and_traced_to_their_files(
    models: dict[str, Path], tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    names = ["b.png", "a.jpg", "sub/c.png"]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / name)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    prep = Preprocess(resize=(8, 8), mean=mean, std=std)
    batch(models["image"], folder, tmp_path / "out", batch_size=2, preprocess=prep)
    out = read_output(tmp_path / "out")
    assert out["file"].tolist() == ["a.jpg", "b.png", "sub/c.png"]
    rows = []
    for name in out["file"]:
        pixels = np.asarray(
            Image.open(folder / name).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR),
            np.float32,
        )
        rows.append(((pixels / 255 - mean) / std).transpose(2, 0, 1))
    want = _direct(models["image"], {"x": np.stack(rows).astype(np.float32)})["m"]
    np.testing.assert_allclose(out["m"], want, rtol=1e-5, atol=1e-6)
    batch(models["image"], folder, tmp_path / "npy", batch_size=2, preprocess=prep,
          output_format="npy")  # fmt: skip
    npy = read_output(tmp_path / "npy")  # the file names too, as str arrays
    assert npy["file"].tolist() == out["file"].tolist()
    assert np.array_equal(npy["m"], out["m"])


def test_npy_shards_a_fixed_batch_axis_and_progress(
    models: dict[str, Path], tmp_path: Path
) -> None:
    x = _rows(7)
    seen: list[BatchProgress] = []
    summary = batch(
        models["fixed"], _npy(tmp_path, x), tmp_path / "out", shard_rows=4,
        output_format="npy", progress=seen.append,
    )  # fmt: skip
    assert summary.batch_size == 2  # the model's own; the last batch of 1 row is padded
    names = sorted(p.name for p in (tmp_path / "out").glob("*.npy"))
    assert names == [
        "part-000000000000-000000000004.row.npy", "part-000000000000-000000000004.y.npy",
        "part-000000000004-000000000007.row.npy", "part-000000000004-000000000007.y.npy",
    ]  # fmt: skip
    assert np.array_equal(read_output(tmp_path / "out")["y"], np.maximum(x, 0))
    assert seen[-1].done == seen[-1].total == 7 and seen[-1].eta_s == 0


# --- resume ---------------------------------------------------------------------------------


def _heavy_mlp(path: Path, width: int = 256, hidden: int = 512) -> Path:
    return save(deep_mlp(width, hidden, 16, "heavy"), path)


def _ferry(*args: object) -> list[str]:
    return [sys.executable, "-m", "onnxferry", "batch", *(str(a) for a in args)]


def _high_water_mark(child: subprocess.Popen[bytes]) -> int:
    """The child's peak RSS in bytes: its VmHWM, read until it exits (the mark only rises).
    Not wait4's ru_maxrss: that keeps the high-water mark of the fork from this (large)
    pytest process across exec, so it measures the parent, not the child."""
    status, peak = Path(f"/proc/{child.pid}/status"), 0
    while child.poll() is None:
        with contextlib.suppress(OSError):
            found = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.M)
            peak = max(peak, int(found.group(1)) * 1024) if found else peak
        time.sleep(0.02)
    return peak


def _finished(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("part-*.parquet"))


def _partial(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob(".part-*.tmp")) if out.is_dir() else []


def kill_9_mid_shard(args: list[object], out: Path) -> None:
    """Run `ferry batch ARGS` and kill -9 it once a shard is finished and the next one is
    being written."""
    with subprocess.Popen(
        _ferry(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as child:
        deadline = time.monotonic() + 120
        while not (_finished(out) and _partial(out)) and child.poll() is None:
            assert time.monotonic() < deadline, "no shard after 120 s"
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
        _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err


def test_resume_after_kill_9_skips_finished_shards_and_redoes_the_partial_one(
    tmp_path: Path,
) -> None:
    model = _heavy_mlp(tmp_path / "heavy.onnx")
    x = _rows(20_000, width=256)
    source, out = _npy(tmp_path, x), tmp_path / "out"
    args = [model, source, "-o", out, "--batch-size", "250", "--shard-rows", "1000"]
    args += ["--workers", "1", "--threads", "1", "--json"]
    for _ in range(3):  # the shard seen in progress may finish before the kill lands
        kill_9_mid_shard(args, out)
        if _partial(out):
            break
    finished = _finished(out)
    assert _partial(out), "no shard in progress at any of three kills"
    assert len(finished) in range(1, 20), "the kill came after the run finished: make it longer"
    before = {name: (out / name).stat().st_mtime_ns for name in finished}

    rerun = subprocess.run(_ferry(*args), capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)["result"]
    assert summary["shards_skipped"] == len(finished)
    assert summary["shards_written"] == 20 - len(finished)
    assert {n: (out / n).stat().st_mtime_ns for n in finished} == before  # not rewritten
    assert not _partial(out)  # the killed run's temporary file is gone; its shard was redone
    got = read_output(out)
    assert np.array_equal(got["row"], np.arange(20_000))
    np.testing.assert_allclose(got["y"], _direct(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)


# --- bounded memory -------------------------------------------------------------------------

BIG_ROWS, ROW_SHAPE = 3072, (256, 1024)  # 3 GiB of float32, 1 MiB a row


def test_a_stream_s_state_given_whole_is_refused_not_run_apart(ferry: Run, tmp_path: Path) -> None:
    """Rows that are the steps of one stream (a state ``[1, 4]`` given for the call, as
    faster-whisper's Silero VAD takes its LSTM's): run apart in batches they would give
    other values, so it is one line saying why, not a run."""
    model = save(onnx_text(STREAM), tmp_path / "stream.onnx")
    x = np.ones((5, 4), np.float32)
    np.savez(tmp_path / "steps.npz", x=x, state=np.ones((1, 4), np.float32))
    code, out, err = ferry("batch", model, tmp_path / "steps.npz", "-o", tmp_path / "out")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "input 'state' [1, 4] has no rows axis" in err and "rows may depend" in err
    assert not (tmp_path / "out").exists()


def test_the_default_cap_is_2_gib_above_what_the_caller_holds(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """A caller's process may hold gigabytes before the run (a notebook with TensorFlow in
    it; this test worker after converting Keras models): the default cap is 2 GiB on top of
    that, not 2 GiB in all, which refused every batch in such a process. A given cap is the
    whole process's."""
    from onnxferry.batch.plan import DEFAULT_MAX_MEMORY, current_rss

    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    before = current_rss()
    summary = batch(models["mlp"], tmp_path / "x.npy", tmp_path / "out")
    held = summary.max_memory_bytes - DEFAULT_MAX_MEMORY  # what the run saw the caller hold
    moved = 64 << 20  # what the process holds moves meanwhile (the allocator gives pages back)
    assert before - moved <= held <= max(before, current_rss()) + moved
    given = batch(models["mlp"], tmp_path / "x.npy", tmp_path / "again", max_memory="3GiB")
    assert given.max_memory_bytes == 3 << 30


@pytest.mark.slow
def test_an_input_far_larger_than_the_cap_runs_in_bounded_memory(tmp_path: Path) -> None:
    """3 GiB of .npy under --max-memory 1GiB: the child's peak RSS (wait4) stays under the cap.
    The file is sparse but for the rows written, so making it costs no 3 GB of disk writes.
    About 5 s where the page cache is warm, 30 s on a VM whose fresh pages fault slowly."""
    if shutil.disk_usage(tmp_path).free < 10 * 10**9:
        pytest.skip("needs 10 GB of free disk for a 3 GiB input")
    model = save(
        onnx_text("""
        <ir_version: 10, opset_import: ["" : 21]>
        mean (float[N, 256, 1024] x) => (float[N] m) {
            axes = Constant<value = int64[2] {1, 2}>()
            m = ReduceMean<keepdims = 0>(x, axes)
        }
        """),
        tmp_path / "mean.onnx",
    )
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(BIG_ROWS, *ROW_SHAPE))
    marked = np.arange(0, BIG_ROWS, 101)
    big[marked] = marked[:, None, None].astype(np.float32)
    big.flush()
    del big
    size = path.stat().st_size
    assert size > 3 * 2**30

    args = [model, path, "-o", tmp_path / "out", "--max-memory", "1GiB", "--batch-size", "32"]
    with (
        open(tmp_path / "stdout", "wb") as stdout,
        open(tmp_path / "stderr", "wb") as stderr,
        subprocess.Popen(_ferry(*args, "--json"), stdout=stdout, stderr=stderr) as child,
    ):
        polled = _high_water_mark(child)
    assert child.returncode == 0, (tmp_path / "stderr").read_text()
    summary = json.loads((tmp_path / "stdout").read_text())["result"]
    assert summary["rows"] == BIG_ROWS and summary["peak_rss_bytes"] > 0
    # Both are lower bounds of the final mark: the child reports just before it exits, and
    # the last poll may come before that report (the child exits within the 20 ms between polls).
    peak = max(polled, summary["peak_rss_bytes"])
    assert peak < 2**30, f"peak RSS {peak / 2**20:.0f} MiB over the 1 GiB cap"
    assert peak < size / 3
    means = read_output(tmp_path / "out")["m"]
    expected = np.zeros(BIG_ROWS, np.float32)
    expected[marked] = marked
    np.testing.assert_allclose(means, expected, rtol=1e-3)  # a float32 sum of 262144 values


# --- bad input: one line, exit 2 ------------------------------------------------------------


def _bad_cases(tmp: Path, models: dict[str, Path]) -> dict[str, tuple[list[object], str]]:
    pq.write_table(pa.table({"a": [[1.0] * 4] * 3, "c": [[1.0] * 4] * 3}), tmp / "no_b.parquet")
    pq.write_table(pa.table({"x": ["a", "b"]}), tmp / "strings.parquet")
    np.save(tmp / "wide.npy", _rows(5, width=5))
    (tmp / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp / "images" / "ok.png")
    (tmp / "images" / "broken.png").write_bytes(b"not a png")
    np.save(tmp / "x.npy", _rows(5))
    batch(models["mlp"], tmp / "x.npy", tmp / "taken")
    (tmp / "someone's").mkdir()
    (tmp / "someone's" / "notes.txt").write_text("not ferry's")
    # a header claiming 10**12 rows over 5 rows of data: the shards were listed for ever
    forged = (tmp / "x.npy").read_bytes().replace(b"(5, 4)", b"(1000000000000, 4)")
    (tmp / "forged.npy").write_bytes(forged)
    with zipfile.ZipFile(tmp / "forged.npz", "w") as z:
        z.writestr("x.npy", forged)
    return {
        "missing column": ([models["two"], tmp / "no_b.parquet"], "no column for input 'b'"),
        "wrong dtype": ([models["mlp"], tmp / "strings.parquet"], "takes float32"),
        "wrong shape": ([models["mlp"], tmp / "wide.npy"], "expects shape"),
        "unreadable image": ([models["image"], tmp / "images"], "broken.png"),
        "one array, two inputs": ([models["two"], tmp / "x.npy"], "model takes 2 inputs"),
        "folder of another run": ([models["fixed"], tmp / "x.npy"], "output of another run"),
        "folder of other files": ([models["mlp"], tmp / "x.npy"], "notes.txt): not a `ferry"),
        "memory too small": ([models["mlp"], tmp / "x.npy", "--max-memory", "1MiB"], "cannot hold"),
        "bad size": (
            [models["mlp"], tmp / "x.npy", "--max-memory", "lots"],
            "cannot read the size",
        ),
        "resize on npy": ([models["mlp"], tmp / "x.npy", "--resize", "8x8"], "apply to a folder"),
        "forged npy header": ([models["mlp"], tmp / "forged.npy"], "shorter than its header"),
        "forged npz header": ([models["mlp"], tmp / "forged.npz"], "shorter than its header"),
        "rows not on axis 0": (
            [models["undeclared"], tmp / "x.npy", "--batch-size", "2"],
            "output 'y' has shape [4, 2] for a batch of 2 rows: its rows are not along axis 0",
        ),
    }


def test_bad_input_is_one_line_and_exit_2(
    ferry: Run, models: dict[str, Path], tmp_path: Path
) -> None:
    for name, (args, expected) in _bad_cases(tmp_path, models).items():
        outs = {"folder of another run": "taken", "folder of other files": "someone's"}
        out = tmp_path / outs[name] if name in outs else tmp_path / "o" / name
        code, _, err = ferry("batch", *args, "-o", out)
        assert code == 2, (name, err)
        assert expected in err, (name, err)
        assert len(err.strip().splitlines()) == 1, (name, err)


def test_a_state_with_its_rows_on_axis_1_is_held_rows_first(tmp_path: Path) -> None:
    """A recurrent state ``[2, N, 3]`` (Silero VAD's ``[2, batch, 128]``): the file holds it
    rows first, ``[rows, 2, 3]``, the engine moves the rows to axis 1 to run and the new state's
    back, so each row keeps its own state whatever the batches."""
    model = save(onnx_text(STATEFUL), tmp_path / "stateful.onnx")
    x = _rows(5)
    state = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, state=state)
    batch(model, tmp_path / "in.npz", tmp_path / "out", batch_size=2)
    written = read_output(tmp_path / "out")
    np.testing.assert_array_equal(written["y"], np.maximum(x, 0))
    np.testing.assert_array_equal(written["state_out"], -state)


def test_a_time_major_output_that_names_the_batch_is_written_rows_first(tmp_path: Path) -> None:
    model = save(onnx_text(TIME_MAJOR.format(rows="N")), tmp_path / "time_major.onnx")
    x = _rows(5)
    batch(model, _npy(tmp_path, x), tmp_path / "out", batch_size=2)
    np.testing.assert_array_equal(read_output(tmp_path / "out")["y"], x)


def test_a_batch_1_model_keeps_an_output_without_a_batch_axis_whole(tmp_path: Path) -> None:
    """A recognizer exported at batch 1 with a time-major output ([time, 1, classes], as
    ddddocr's): each row's output is all of it."""
    model = save(onnx_text(TIME_MAJOR.format(rows="1")), tmp_path / "one.onnx")
    x = _rows(3)
    batch(model, _npy(tmp_path, x), tmp_path / "out")
    np.testing.assert_array_equal(read_output(tmp_path / "out")["y"], x[:, :, None])


SQUEEZED = """
<ir_version: 10, opset_import: ["" : 21]>
score (float[N, 3] x) => (float y) {
    one = Constant <value = int64[1] {1}> ()
    s = ReduceSum <keepdims = 0> (x, one)
    y = Squeeze(s)
}
"""
"""A score per row, squeezed of every axis: a batch of one row gives a scalar (PyTorch's
``squeeze()``, as Microsoft's PLCMOS model)."""


def test_a_row_run_alone_may_come_back_squeezed_to_a_scalar(tmp_path: Path) -> None:
    """5 rows in batches of 2 end in a batch of one, whose score is a scalar: that is its
    row (it was "its rows are not along axis 0", exit 2)."""
    proto = onnx_text(SQUEEZED)
    proto.graph.output[0].type.tensor_type.shape.SetInParent()  # declared a scalar, as PLCMOS
    model = save(proto, tmp_path / "squeezed.onnx")
    x = _rows(5, width=3)
    for size in (2, 1):
        batch(model, _npy(tmp_path, x), tmp_path / f"out{size}", batch_size=size)
        written = read_output(tmp_path / f"out{size}")["y"]
        np.testing.assert_allclose(written, x.sum(axis=1), rtol=1e-6)


SCALAR_GAIN = """
<ir_version: 10, opset_import: ["" : 21]>
gain (float[{rows}, 3] x, float gain) => (float[{rows}, 3] y) {{ y = Mul(x, gain) }}
"""


@pytest.mark.parametrize("rows", ["N", "2"], ids=["open batch", "fixed batch 2"])
def test_a_scalar_input_is_read_once_and_given_to_every_batch(rows: str, tmp_path: Path) -> None:
    """A sample rate, a threshold: the .npz holds its one value, every batch (a short one
    padded to a fixed batch too) gets it."""
    model = save(onnx_text(SCALAR_GAIN.format(rows=rows)), tmp_path / "gain.onnx")
    x = _rows(5, width=3)
    np.savez(tmp_path / "in.npz", x=x, gain=np.array(2.0, np.float32))
    batch(model, tmp_path / "in.npz", tmp_path / "out", batch_size=2)
    np.testing.assert_array_equal(read_output(tmp_path / "out")["y"], x * 2)


ONLY_SCALAR = """
<ir_version: 10, opset_import: ["" : 21]>
only (float gain) => (float y) { y = Identity(gain) }
"""


@pytest.mark.parametrize(
    ("text", "arrays", "message"),
    [
        (
            SCALAR_GAIN.format(rows="N"),
            {"x": _rows(4, width=3), "gain": np.array([2.0, 3.0], np.float32)},
            "is a scalar, but the array has shape [2]",
        ),
        (ONLY_SCALAR, {"gain": np.array(2.0, np.float32)}, "every input of the model is a scalar"),
    ],
    ids=["several values", "no rows"],
)
def test_scalar_inputs_that_cannot_be_held_are_one_line(
    ferry: Run, text: str, arrays: dict[str, np.ndarray], message: str, tmp_path: Path
) -> None:
    model = save(onnx_text(text), tmp_path / "model.onnx")
    np.savez(tmp_path / "in.npz", **arrays)  # type: ignore[arg-type]
    code, out, err = ferry("batch", model, tmp_path / "in.npz", "-o", tmp_path / "out")
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_outputs_sized_by_the_data_are_each_row_s_whole_value(tmp_path: Path) -> None:
    """A detector ending in non-max suppression (batch 1) and a mask's selection over an open
    batch: each row runs alone and keeps its own count of boxes, none on a blank image, as
    Arrow lists; read back, each row is ONNX Runtime's answer on that row alone. .npy shards
    cannot hold them, nor can a model that runs several rows at once: one line each."""
    from tests.real_models import BUILT

    detector = save(BUILT["nms"].build(), tmp_path / "nms.onnx")
    images = np.concatenate([BUILT["nms"].feeds()["x"], np.zeros((1, 32, 32, 3), np.float32)])
    images = np.concatenate([images, images[:1, ::-1]])
    summary = batch(detector, _npy(tmp_path, images), tmp_path / "boxes")
    assert summary.rows == 3 and summary.batch_size == 1
    written = read_output(tmp_path / "boxes")
    session = ort.InferenceSession(str(detector))
    for i, image in enumerate(images):
        boxes, scores = session.run(None, {"x": image[None]})
        np.testing.assert_array_equal(written["boxes"][i], boxes)
        np.testing.assert_array_equal(written["scores"][i], scores)
    assert written["boxes"][1].shape == (0, 4) and len(written["boxes"][0])
    schema = pq.read_schema(next((tmp_path / "boxes").glob("*.parquet")))
    assert str(schema.field("boxes").type) == "list<element: fixed_size_list<element: float>[4]>"

    masked = save(BUILT["masked"].build(), tmp_path / "masked.onnx")
    x = np.random.default_rng(4).standard_normal((5, 20, 16)).astype(np.float32)
    summary = batch(masked, _npy(tmp_path, x), tmp_path / "kept", batch_size=4)
    assert summary.batch_size == 1 and any("sized by the data" in n for n in summary.notes)
    kept = read_output(tmp_path / "kept")
    session = ort.InferenceSession(str(masked))
    for i in range(5):
        scores, where = session.run(None, {"x": x[i : i + 1]})
        np.testing.assert_array_equal(kept["scores"][i], scores)
        np.testing.assert_array_equal(kept["where"][i], where)
    with pytest.raises(UsageError, match="npy shards cannot hold"):
        batch(masked, _npy(tmp_path, x), tmp_path / "npy", output_format="npy")
    four = BUILT["masked"].build()
    four.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    with pytest.raises(UsageError, match="runs 4 rows at once"):
        batch(save(four, tmp_path / "four.onnx"), _npy(tmp_path, x[:4]), tmp_path / "four")


FLAT = """
<ir_version: 10, opset_import: ["" : 21]>
flat (float[batch, 3] x) => (float[M] y) {
    minus_one = Constant<value = int64[1] {-1}>()
    y = Reshape(x, minus_one)
}
"""


def test_an_output_that_folds_its_rows_into_another_axis_is_written_a_row_at_a_time(
    tmp_path: Path,
) -> None:
    """torch's ``view(-1)`` of ``[batch, 3]`` scores, declared ``[batch*3]`` (AttaCut): a
    batch's value cannot be split into rows (it was "rows are not along axis 0", exit 2), so
    each row runs alone and its value is stored whole."""
    proto = onnx_text(FLAT)
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch*3"
    flat = save(proto, tmp_path / "flat.onnx")
    x = np.random.default_rng(5).standard_normal((5, 3)).astype(np.float32)
    summary = batch(flat, _npy(tmp_path, x), tmp_path / "out", batch_size=4)
    assert summary.batch_size == 1
    assert any(
        "'y' is shaped [batch*3], its rows folded into another axis" in n for n in summary.notes
    )
    written = read_output(tmp_path / "out")
    np.testing.assert_array_equal(np.stack(list(written["y"])), x)
    with pytest.raises(UsageError, match=r"folded into another axis, which npy shards cannot"):
        batch(flat, _npy(tmp_path, x), tmp_path / "npy", output_format="npy")


def test_a_sequence_of_tensors_output_is_one_line_naming_it(ferry: Run, tmp_path: Path) -> None:
    """SplitToSequence's output holds one tensor per split, not a value per row: the run was
    a shape error about axis 0 that never said "sequence"."""
    split = onnx_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        split (float[N, 4] x) => (seq(float[N, 1]) parts, float[N, 4] y) {
            parts = SplitToSequence <axis: int = 1> (x)
            y = Relu (x)
        }
    """)
    model = save(split, tmp_path / "split.onnx")
    source = _npy(tmp_path, np.ones((3, 4), np.float32))
    code, _, err = ferry("batch", model, source, "-o", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1, err
    assert "outputs 'parts' are sequences of tensors" in err and "ConcatFromSequence" in err
    assert not (tmp_path / "out").exists()


def test_a_time_major_recurrent_model_runs_its_rows_along_the_named_batch(
    tmp_path: Path,
) -> None:
    """PyTorch's LSTM without ``batch_first``, ``x[seq_len, batch_size, 4]``: rows are taken
    along ``batch_size`` (the file holds them first, ``[rows, seq, 4]``), each row's output
    the one ONNX Runtime gives it; without a name that says where the batch is, the rows would
    be time steps, each run starting the sequence over: one line."""
    named = save(recurrent(), tmp_path / "named.onnx")
    x = np.random.default_rng(0).standard_normal((6, 5, 4)).astype(np.float32)
    batch(named, _npy(tmp_path, x), tmp_path / "out", batch_size=4)
    session = ort.InferenceSession(str(named))
    want = np.moveaxis(session.run(None, {"x": np.moveaxis(x, 0, 1)})[0], 1, 0)
    np.testing.assert_allclose(np.asarray(read_output(tmp_path / "out")["y"]), want, atol=1e-6)
    unnamed = save(recurrent(("s0", "s1")), tmp_path / "unnamed.onnx")
    with pytest.raises(UsageError, match="runs along its first axis as a sequence"):
        batch(unnamed, _npy(tmp_path, x), tmp_path / "refused")


def test_a_models_external_data_truncated_mid_run_changes_nothing(tmp_path: Path) -> None:
    """ONNX Runtime would map the weights from the data file and an Add reads them at every
    run: truncating the file in the middle of a run (a new export copied over it) killed the
    process with SIGBUS. Each worker's session holds its own copy (own_weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = np.arange(4, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "k"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(k, "k")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(proto, str(tmp_path / "m.onnx"), save_as_external_data=True,
              location="m.data", size_threshold=0)  # fmt: skip
    x = _rows(4000)
    np.save(tmp_path / "x.npy", x)
    truncated: list[int] = []

    def cut(progress: BatchProgress) -> None:
        if progress.done and not truncated:
            os.truncate(tmp_path / "m.data", 0)
            truncated.append(progress.done)

    summary = batch(tmp_path / "m.onnx", tmp_path / "x.npy", tmp_path / "out", batch_size=10,
                    shard_rows=100, progress=cut)  # fmt: skip
    assert summary.rows == 4000 and truncated and truncated[0] <= 2000
    np.testing.assert_array_equal(read_output(tmp_path / "out")["y"], x + k)
