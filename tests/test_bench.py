"""bench: real ONNX Runtime sessions on tiny models; structure and sanity, never timing ratios."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from onnxferry.bench import BenchResult, BenchSuite, Progress, batch_feeds, bench
from onnxferry.cli.bench import progress_bar
from onnxferry.errors import FeedError, ModelLoadError, UsageError
from onnxferry.model import Model
from onnxferry.runtime import available_providers
from tests.helpers import RELU, onnx_text, save

TWO_LAYER = """
<ir_version: 10, opset_import: ["" : 21]>
two_layer (float[batch, 4] x) => (float[batch, 3] y)
    <float[4, 3] w = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}>
{
    h = MatMul(x, w)
    y = Softmax<axis = -1>(h)
}
"""

FIXED = """
<ir_version: 10, opset_import: ["" : 21]>
fixed (float[1, 4] x) => (float[1, 4] y) { y = Relu(x) }
"""

SEQ = """
<ir_version: 10, opset_import: ["" : 21]>
seq (float[batch, seq] x, int64[batch, seq] ids) => (float[batch, seq] y) {
    c = Cast<to = 1>(ids)
    y = Add(x, c)
}
"""


@pytest.fixture(scope="module")
def relu(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(save(onnx_text(RELU), tmp_path_factory.mktemp("m") / "relu.onnx"))


# --- feeds -----------------------------------------------------------------------------


def test_batch_goes_into_dim_0_and_dims_size_the_rest() -> None:
    model = Model.from_proto(onnx_text(SEQ))
    sig = model.signature
    feeds = batch_feeds(model, 3, dims={"seq": 5}, seed=1)
    assert feeds["x"].shape == (3, 5)
    assert feeds["ids"].shape == (3, 5)
    assert feeds["ids"].dtype == np.int64
    sig.validate(feeds)


def test_unknown_dim_0_takes_the_batch() -> None:
    proto = onnx_text(RELU)
    proto.graph.input[0].type.tensor_type.shape.dim[0].Clear()  # dim 0 unknown (None)
    model = Model.from_proto(proto)
    assert model.signature.inputs[0].shape == (None, 4)
    assert batch_feeds(model, 6)["x"].shape == (6, 4)


def test_fixed_dim_0_refuses_another_batch() -> None:
    model = Model.from_proto(onnx_text(FIXED))
    assert batch_feeds(model, 1)["x"].shape == (1, 4)
    with pytest.raises(FeedError, match="fixed batch dim of 1"):
        batch_feeds(model, 8)


# --- bench -----------------------------------------------------------------------------


def _check_sane(r: BenchResult) -> None:
    assert r.min_ms <= r.p50_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
    assert r.min_ms <= r.mean_ms <= r.max_ms
    assert min(r.std_ms, r.iqr_ms, r.cv) >= 0
    assert r.inferences_per_s == pytest.approx(r.iterations / r.wall_s)
    assert r.samples_per_s == pytest.approx(r.inferences_per_s * r.batch)
    # requests run back to back, so the wall time covers at least their latencies
    assert r.wall_s * 1e3 >= r.mean_ms * r.iterations / r.concurrency * 0.99
    assert r.peak_rss_bytes > 0
    assert r.memory_method in ("vmhwm-reset", "vmhwm", "ru_maxrss")
    assert r.session_init_ms > 0


def test_bench_one_model(relu: Model) -> None:
    assert relu.path is not None
    report = bench([str(relu.path)], batches=(1, 8), threads=(1,), warmup=2, iterations=40)
    assert report.verb == "bench"
    assert report.ok
    suite = report.result
    assert isinstance(suite, BenchSuite)
    assert [(r.batch, r.iterations) for r in suite.results] == [(1, 40), (8, 40)]
    for r in suite.results:
        _check_sane(r)
        assert r.model == "relu"
        assert r.digest == relu.digest
        assert r.provider == "cpu"
        assert r.threads == 1
        assert r.warmup == 2
        assert r.concurrency == 1
        assert r.input_shapes == {"x": (r.batch, 4)}
    assert suite.skipped == []


def test_bench_duration_mode(relu: Model) -> None:
    (r,) = bench([relu], warmup=0, duration=0.2).result.results
    assert r.wall_s >= 0.2
    assert r.iterations > 10
    assert r.threads is None
    _check_sane(r)


def test_bench_with_concurrency(relu: Model) -> None:
    (r,) = bench([relu], warmup=1, iterations=60, concurrency=2).result.results
    assert r.iterations == 60
    assert r.concurrency == 2
    _check_sane(r)


def test_fixed_batch_model_skips_other_batches(tmp_path: Path) -> None:
    path = save(onnx_text(FIXED), tmp_path / "fixed.onnx")
    suite = bench([path], batches=(1, 8), warmup=0, iterations=5).result
    assert [r.batch for r in suite.results] == [1]
    (reason,) = suite.skipped
    assert "batch=8: input 'x' has a fixed batch dim of 1, so batch 8 cannot run" in reason
    assert "Skipped" in [t.title for t in suite.tables()]
    with pytest.raises(UsageError, match="no configuration can run"):
        bench([path], batches=(8,), warmup=0, iterations=5)


def test_models_side_by_side_with_speedup(relu: Model) -> None:
    other = Model.from_proto(onnx_text(TWO_LAYER))
    report = bench([relu, other], batches=(1, 4), warmup=1, iterations=20)
    suite = report.result
    assert [(r.model, r.batch) for r in suite.results] == [
        ("relu", 1),
        ("relu", 4),
        ("two_layer", 1),
        ("two_layer", 4),
    ]
    table = suite.tables()[0]
    assert table.columns[-1] == "speedup (p50)"
    assert len(table.rows) == 4
    speedups = [row[-1] for row in table.rows]
    assert speedups[:2] == [1.0, 1.0]
    by_batch = {r.batch: r.p50_ms for r in suite.results if r.model == "relu"}
    for r, s in zip(suite.results[2:], speedups[2:], strict=True):
        assert s == pytest.approx(by_batch[r.batch] / r.p50_ms)
    assert "speedup" in report.to_text()


def test_single_model_table_has_no_speedup(relu: Model) -> None:
    (table,) = bench([relu], warmup=0, iterations=5).result.tables()
    assert "speedup (p50)" not in table.columns
    assert {"p50 ms", "p99 ms", "std ms", "peak MiB", "samples/s"} <= set(table.columns)


def test_csv_and_json(relu: Model) -> None:
    report = bench([relu], batches=(1, 2), threads=(1, None), warmup=0, iterations=10)
    suite = report.result
    rows = list(csv.DictReader(io.StringIO(suite.to_csv())))
    assert len(rows) == len(suite.results) == 4
    assert list(rows[0]) == list(suite.results[0].to_dict())
    assert rows[0]["model"] == "relu"
    assert float(rows[0]["p50_ms"]) == pytest.approx(suite.results[0].p50_ms)
    assert {r["threads"] for r in rows} == {"1", ""}
    assert json.loads(rows[1]["input_shapes"]) == {"x": [2, 4]}

    data = json.loads(report.to_json())
    assert data["verb"] == "bench"
    result = data["result"]
    assert set(result) == {"results", "skipped", "settings", "environment", "energy", "cost"}
    assert result["settings"]["iterations"] == 10
    first = result["results"][0]
    for key in ("p50_ms", "p90_ms", "p99_ms", "iqr_ms", "cv", "peak_rss_bytes", "memory_method"):
        assert key in first
    assert first["input_shapes"] == {"x": [1, 4]}


def test_dims_size_symbolic_dims(tmp_path: Path) -> None:
    path = save(onnx_text(SEQ), tmp_path / "seq.onnx")
    (r,) = bench([path], batches=(2,), dims={"seq": 7}, warmup=0, iterations=3).result.results
    assert r.input_shapes == {"x": (2, 7), "ids": (2, 7)}
    with pytest.raises(UsageError, match="batch axis"):
        bench([path], dims={"batch": 4}, warmup=0, iterations=3)


def test_progress_goes_to_the_callback(relu: Model) -> None:
    seen: list[Progress] = []
    report = bench([relu], batches=(1, 2), warmup=0, iterations=10, progress=seen.append)
    assert [r.iterations for r in report.result.results] == [10, 10]
    assert [(p.index, p.total) for p in seen] == sorted((p.index, p.total) for p in seen)
    assert {p.index for p in seen} == {1, 2} and {p.total for p in seen} == {2}
    firsts = [p for p in seen if p.done == 0]
    assert [p.configuration for p in firsts] == [
        "relu cpu threads=default batch=1",
        "relu cpu threads=default batch=2",
    ]
    assert seen[-1].done == 10 and seen[-1].iterations == 10 and seen[-1].duration_s is None
    seen.clear()
    (r,) = bench([relu], warmup=0, duration=0.1, progress=seen.append).result.results
    assert r.iterations > 0
    assert seen[-1].iterations is None and seen[-1].duration_s == 0.1
    assert seen[-1].elapsed_s >= 0.1


@pytest.mark.parametrize("by_time", [False, True])
def test_the_cli_draws_the_progress_as_a_bar(relu: Model, by_time: bool) -> None:
    timing = {"duration": 0.1} if by_time else {"iterations": 10}
    with progress_bar(by_time=by_time) as show:
        report = bench([relu], batches=(1, 2), warmup=0, progress=show, **timing)
    assert [r.batch for r in report.result.results] == [1, 2]


def test_unavailable_provider_is_skipped(relu: Model) -> None:
    if "cuda" in available_providers():
        pytest.skip("this onnxruntime build has cuda")
    suite = bench([relu], providers=("cpu", "cuda"), warmup=0, iterations=3).result
    assert [r.provider for r in suite.results] == ["cpu"]
    assert "cuda" in suite.skipped[0]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"batches": (0,)}, "batch"),
        ({"warmup": -1}, "warmup"),
        ({"iterations": 0}, "iterations"),
        ({"duration": 0.0}, "duration"),
        ({"iterations": 3, "duration": 1.0}, "both"),
        ({"concurrency": 0}, "concurrency"),
        ({"threads": (0,)}, "threads"),
        ({"batches": ()}, "batches"),
        ({"providers": ("warp-drive",)}, "provider"),
    ],
)
def test_bench_rejects_bad_arguments(relu: Model, kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        bench([relu], **kwargs)  # type: ignore[call-overload]


def test_no_models_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        bench([])


def test_missing_model_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        bench([tmp_path / "nope.onnx"], iterations=1)


def test_unknown_rank_is_a_feed_error() -> None:
    proto = onnx_text(RELU)
    proto.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(FeedError, match="unknown rank"):
        bench([Model.from_proto(proto)], iterations=1)


def test_same_model_twice_gets_distinct_labels_and_speedup(tmp_path: Path) -> None:
    path = save(onnx_text(RELU), tmp_path / "relu.onnx")
    suite = bench([path, path], iterations=5, warmup=1).result
    assert [r.model for r in suite.results] == ["relu", "relu#2"]
    assert "speedup (p50)" in suite.tables()[0].columns


def test_bfloat16_inputs_and_outputs(tmp_path: Path) -> None:
    text = """
    <ir_version: 10, opset_import: ["" : 21]>
    g (bfloat16[batch, 4] x) => (bfloat16[batch, 4] y, float[batch, 4] f) {
        y = Identity(x)
        f = Cast<to = 1>(x)
    }
    """
    path = save(onnx_text(text), tmp_path / "bf16.onnx")
    (result,) = bench([path], batches=[3], iterations=10, warmup=1).result.results
    assert result.iterations == 10
    assert result.input_shapes == {"x": (3, 4)}


def test_given_inputs_run_at_each_batch_with_their_rows_repeated(tmp_path: Path) -> None:
    """A recurrent VAD whose rate picks the branch: generated rates would not do, so the
    user's rows are timed, repeated to each batch along each input's row axis."""
    from tests.real_models import vad_feeds, vad_unnamed

    path = save(vad_unnamed(), tmp_path / "vad.onnx")
    report = bench([path], inputs=vad_feeds(batch=2), batches=(1, 3), iterations=3)
    assert sorted(r.batch for r in report.result.results) == [1, 3]
    assert any("rows repeated to each batch" in n for n in report.notes)
