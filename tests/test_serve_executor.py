"""The serve executor: dynamic batching, output selection, deadlines, queue limits, close,
statistics and errors, with real ONNX Runtime sessions on models built in-process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.errors import FeedError
from onnxferry.model import Model
from onnxferry.serve.config import ModelConfig
from onnxferry.serve.executor import (
    DeadlineExceeded,
    ExecutionError,
    ExecutorClosed,
    InferResult,
    ModelExecutor,
    QueueFull,
    batch_axis,
)

from .helpers import MISDECLARED, onnx_text, recurrent

T = TypeVar("T")

GEMM = """
<ir_version: 10, opset_import: ["" : 21]>
gemm (float[N, 4] x) => (float[N, 3] y, float[N, 4] z)
<float[4, 3] w = {0.5, -1.25, 2.0, 0.125, 3.5, -0.75, 1.0, 0.3, -2.2, 0.7, 0.01, 9.0},
 float[3] b = {0.1, 0.2, 0.3}>
{ y = Gemm(x, w, b)  z = Mul(x, x) }
"""

WIDE = """
<ir_version: 10, opset_import: ["" : 21]>
wide (float[N, M] x) => (float[N, M] y) { y = Neg(x) }
"""

FIXED = """
<ir_version: 10, opset_import: ["" : 21]>
fixed (float[2, 4] x) => (float[2, 4] y) { y = Relu(x) }
"""

RESHAPE = """
<ir_version: 10, opset_import: ["" : 21]>
reshape (float[2, 4] x, int64[2] s) => (float[A, B] y) { y = Reshape(x, s) }
"""

COLUMN_SUM = """
<ir_version: 10, opset_import: ["" : 21]>
colsum (float[N, 4] x) => (float[M, 4] y) <int64[1] axes = {0}> {
    y = ReduceSum<keepdims: int = 1>(x, axes)
}
"""

SELECTED = """
<ir_version: 10, opset_import: ["" : 21]>
selected (float[N, 4] x) => (float[K] y) <float half = {0.5}, int64[1] flat = {-1}> {
    mask = Greater(x, half)
    values = Reshape(x, flat)
    keep = Reshape(mask, flat)
    y = Compress(values, keep)
}
"""

SLOW_ROWS = 640  # about 0.2 s per run on one thread


def slow_model(nodes: int = 200, width: int = 256) -> onnx.ModelProto:
    """x[N, width] through `nodes` identity MatMuls: the run time grows with N."""
    w = numpy_helper.from_array(np.eye(width, dtype=np.float32), "w")
    chain, x = [], "x"
    for i in range(nodes):
        chain.append(helper.make_node("MatMul", [x, "w"], [f"h{i}"]))
        x = f"h{i}"
    chain.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        chain,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def executor(proto: onnx.ModelProto | str, **config: Any) -> ModelExecutor:
    model = Model.from_proto(onnx_text(proto) if isinstance(proto, str) else proto)
    config.setdefault("instances", 1)
    config.setdefault("intra_op_threads", 1)
    return ModelExecutor(model, ModelConfig(**config))


def run(ex: ModelExecutor, body: Callable[[ModelExecutor], Awaitable[T]]) -> T:
    """Run an async test body on a fresh loop; the executor is closed afterwards."""

    async def main() -> T:
        try:
            return await body(ex)
        finally:
            await ex.close()

    return asyncio.run(main())


def rows(n: int, seed: int, width: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


@pytest.mark.parametrize("instances", [1, 2])
def test_batched_answers_equal_unbatched_bit_for_bit(instances: int) -> None:
    ex = executor(GEMM, max_batch_size=8, instances=instances)
    assert ex.batching
    inputs = [rows(1 + i % 3, i) for i in range(24)]
    session = ex._instances[0].session
    expected = [session.run(None, {"x": x}) for x in inputs]

    async def body(ex: ModelExecutor) -> list[InferResult]:
        return await asyncio.gather(*(ex.infer({"x": x}) for x in inputs))

    results = run(ex, body)
    for (y, z), result in zip(expected, results, strict=True):
        assert result.outputs["y"].tobytes() == y.tobytes()
        assert result.outputs["z"].tobytes() == z.tobytes()
        assert result.outputs["y"].shape == y.shape
    assert max(r.batch_size for r in results) > 1  # batching happened
    assert all(r.batch_size <= 8 for r in results)
    stats = ex.statistics()
    assert any(b["batch_size"] > 1 for b in stats["batch_stats"])
    assert stats["inference_count"] == sum(len(x) for x in inputs)
    assert stats["execution_count"] < len(inputs)


def test_requests_of_different_shapes_are_not_mixed() -> None:
    ex = executor(WIDE, max_batch_size=16)
    narrow = [rows(1, i, width=3) for i in range(6)]
    wide = [rows(2, i, width=5) for i in range(6)]

    async def body(ex: ModelExecutor) -> list[InferResult]:
        mixed = [x for pair in zip(narrow, wide, strict=True) for x in pair]
        return await asyncio.gather(*(ex.infer({"x": x}) for x in mixed))

    results = run(ex, body)
    for result, x in zip(
        results, [x for p in zip(narrow, wide, strict=True) for x in p], strict=True
    ):
        assert np.array_equal(result.outputs["y"], -x)
    # requests that arrive together batch by shape only: 6 narrow requests of 1 row, 6 wide
    # ones of 2 rows
    sizes = sorted(r.batch_size for r in results)
    assert sizes == sorted([6] * 6 + [12] * 6)


def test_a_request_bigger_than_max_batch_size_is_refused() -> None:
    ex = executor(GEMM, max_batch_size=4)

    async def body(ex: ModelExecutor) -> list[InferResult | BaseException]:
        requests = (ex.infer({"x": rows(n, n)}) for n in (1, 9, 1, 4))
        return await asyncio.gather(*requests, return_exceptions=True)

    small, big, other, full = run(ex, body)
    # as Triton does: a request is held to max_batch_size (its output could be any size)
    assert isinstance(big, FeedError) and "9 rows, over model" in str(big)
    assert "max_batch_size of 4" in str(big)
    assert isinstance(small, InferResult) and isinstance(other, InferResult)
    assert isinstance(full, InferResult) and full.outputs["y"].shape == (4, 3)


def test_no_batching_without_a_batch_axis_or_when_disabled() -> None:
    assert not batch_axis(Model.from_proto(onnx_text(FIXED)).signature)
    assert batch_axis(Model.from_proto(onnx_text(GEMM)).signature)
    for ex in (executor(FIXED), executor(GEMM, max_batch_size=0)):
        assert not ex.batching
        width = 4
        inputs = [rows(2, i, width) for i in range(6)]

        async def body(ex: ModelExecutor, inputs: list[np.ndarray] = inputs) -> list[InferResult]:
            return await asyncio.gather(*(ex.infer({"x": x}) for x in inputs))

        results = run(ex, body)
        assert all(r.batch_size == 1 for r in results)
        assert ex.statistics()["execution_count"] == len(inputs)
        assert [b["batch_size"] for b in ex.statistics()["batch_stats"]] == [1]


def test_output_selection_alone_and_mixed_in_one_batch() -> None:
    ex = executor(GEMM, max_batch_size=8)
    x = rows(1, 0)
    wanted: list[list[str] | None] = [["z"], ["y"], None, ["z", "y"], ["z"]]

    async def body(ex: ModelExecutor) -> list[InferResult]:
        alone = await ex.infer({"x": x}, output_names=["z"])
        assert list(alone.outputs) == ["z"]
        with pytest.raises(FeedError, match="no output 'nope'"):
            await ex.infer({"x": x}, output_names=["nope"])
        return await asyncio.gather(*(ex.infer({"x": x}, output_names=w) for w in wanted))

    results = run(ex, body)
    for names, result in zip(wanted, results, strict=True):
        assert list(result.outputs) == (names or ["y", "z"])
    assert np.array_equal(results[0].outputs["z"], x * x)


def test_wrong_input_names_are_feed_errors() -> None:
    ex = executor(GEMM)

    async def body(ex: ModelExecutor) -> None:
        with pytest.raises(FeedError, match="missing input 'x'"):
            await ex.infer({})
        with pytest.raises(FeedError, match="unknown input 'q'"):
            await ex.infer({"x": rows(1, 0), "q": rows(1, 0)})

    run(ex, body)


def test_deadline_already_passed_or_passing_in_the_queue_never_runs() -> None:
    ex = executor(slow_model(), max_batch_size=SLOW_ROWS)
    big = rows(SLOW_ROWS, 0, width=256)
    small = rows(1, 1, width=256)

    async def body(ex: ModelExecutor) -> None:
        with pytest.raises(DeadlineExceeded):
            await ex.infer({"x": small}, deadline=time.monotonic() - 1)
        busy = asyncio.ensure_future(ex.infer({"x": big}))
        await asyncio.sleep(0.01)  # the big request is running; the next one queues
        with pytest.raises(DeadlineExceeded):
            await ex.infer({"x": small}, deadline=time.monotonic() + 0.02)
        assert not busy.done()  # answered at its deadline, not after the run ahead of it
        await busy

    run(ex, body)
    stats = ex.statistics()
    assert stats["execution_count"] == 1  # only the big request ran
    assert stats["inference_stats"]["fail"]["count"] == 2
    assert stats["inference_stats"]["success"]["count"] == 1


def test_deadline_during_run_stops_it_and_the_session_stays_usable() -> None:
    ex = executor(slow_model(), max_batch_size=SLOW_ROWS)
    big = rows(SLOW_ROWS, 0, width=256)
    small = rows(1, 1, width=256)

    async def body(ex: ModelExecutor) -> tuple[float, float]:
        full = time.monotonic()
        await ex.infer({"x": big})
        full = time.monotonic() - full
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await ex.infer({"x": big}, deadline=start + 0.02)
        failed_after = time.monotonic() - start
        # the run was terminated: the next request does not wait for the rest of it
        start = time.monotonic()
        result = await ex.infer({"x": small}, deadline=time.monotonic() + 10)
        assert np.array_equal(result.outputs["y"], small)
        return full, max(failed_after, time.monotonic() - start)

    full, cut = run(ex, body)
    assert cut < full / 2


def test_a_run_past_every_deadline_is_terminated() -> None:
    ex = executor(slow_model(), max_batch_size=SLOW_ROWS)
    big = rows(SLOW_ROWS, 0, width=256)

    async def body(ex: ModelExecutor) -> float:
        start = time.monotonic()
        await ex.infer({"x": big})
        full = time.monotonic() - start
        task = asyncio.ensure_future(ex.infer({"x": big}, deadline=time.monotonic() + 0.02))
        with pytest.raises(DeadlineExceeded):
            await task
        start = time.monotonic()
        await ex.close()  # waits for the (terminated) run
        assert time.monotonic() - start < full / 2
        return full

    run(ex, body)
    assert ex.statistics()["execution_count"] == 1  # the stopped run is no execution


def test_queue_full_answers_at_once() -> None:
    ex = executor(slow_model(), max_batch_size=SLOW_ROWS, max_queue_size=2)
    big = rows(SLOW_ROWS, 0, width=256)

    async def body(ex: ModelExecutor) -> None:
        busy = asyncio.ensure_future(ex.infer({"x": big}))
        await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(ex.infer({"x": big})) for _ in range(2)]
        await asyncio.sleep(0)
        assert ex.queued == 2
        start = time.monotonic()
        with pytest.raises(QueueFull, match="max_queue_size"):
            await ex.infer({"x": big})
        assert time.monotonic() - start < 0.05
        for task in queued:
            task.cancel()
        await busy

    run(ex, body)
    assert ex.statistics()["execution_count"] == 1  # cancelled requests never ran


def test_close_drains_queued_and_running_requests_then_refuses() -> None:
    ex = executor(slow_model(nodes=50), max_batch_size=SLOW_ROWS)
    big = rows(SLOW_ROWS, 0, width=256)
    small = [rows(1, i, width=256) for i in range(4)]

    async def body(ex: ModelExecutor) -> list[InferResult]:
        running = asyncio.ensure_future(ex.infer({"x": big}))
        await asyncio.sleep(0.005)
        tasks = [running, *(asyncio.ensure_future(ex.infer({"x": x})) for x in small)]
        await asyncio.sleep(0)
        await ex.close()
        assert all(t.done() for t in tasks)
        with pytest.raises(ExecutorClosed):
            await ex.infer({"x": small[0]})
        return [t.result() for t in tasks]

    results = run(ex, body)
    assert [r.batch_size for r in results] == [SLOW_ROWS, 4, 4, 4, 4]  # queued ones, batched
    for x, result in zip(small, results[1:], strict=True):
        assert np.array_equal(result.outputs["y"], x)
    assert not any(t.is_alive() for t in ex._threads)


def test_statistics_follow_triton() -> None:
    ex = executor(GEMM, max_batch_size=8)

    async def body(ex: ModelExecutor) -> None:
        for i in range(3):
            await ex.infer({"x": rows(1, i)})
        await asyncio.gather(*(ex.infer({"x": rows(2, i)}) for i in range(5)))

    before = int(time.time() * 1000)
    run(ex, body)
    stats = ex.statistics()
    assert stats["name"] == "gemm"
    assert stats["version"] == "1"
    assert stats["last_inference"] >= before
    assert stats["inference_count"] == 3 + 10
    inference = stats["inference_stats"]
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert inference[key]["count"] == 8, key
        assert inference[key]["ns"] > 0, key
    assert inference["fail"] == {"count": 0, "ns": 0}
    batches = stats["batch_stats"]
    assert sum(b["compute_infer"]["count"] for b in batches) == stats["execution_count"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == 13
    assert all(set(b) == {"batch_size", *_PHASES} for b in batches)


_PHASES = ("compute_input", "compute_infer", "compute_output")


def test_runtime_failure_is_execution_error_and_the_executor_recovers() -> None:
    ex = executor(RESHAPE)
    x = rows(2, 0)

    async def body(ex: ModelExecutor) -> InferResult:
        with pytest.raises(ExecutionError, match="failed to run") as info:
            await ex.infer({"x": x, "s": np.array([3, 5], dtype=np.int64)})
        assert "\n" not in str(info.value)
        return await ex.infer({"x": x, "s": np.array([4, 2], dtype=np.int64)})

    result = run(ex, body)
    assert np.array_equal(result.outputs["y"], x.reshape(4, 2))
    assert ex.statistics()["inference_stats"]["fail"]["count"] == 1


def _one_hot_colours() -> onnx.ModelProto:
    """colour string[N, 1] -> ai.onnx.ml OneHotEncoder (red, green; an unknown colour is an
    error, as skl2onnx writes handle_unknown="error") -> y float[N, 1, 2]."""
    node = helper.make_node(
        "OneHotEncoder",
        ["colour"],
        ["y"],
        domain="ai.onnx.ml",
        cats_strings=["red", "green"],
        zeros=0,
    )
    graph = helper.make_graph(
        [node],
        "colours",
        [helper.make_tensor_value_info("colour", TensorProto.STRING, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 2])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def test_a_request_the_model_rejects_fails_alone_not_the_batch_it_ran_in() -> None:
    """Batched with others, one request's unknown category failed every request of its
    batch; the batch is now run request by request after such a failure."""
    ex = executor(_one_hot_colours(), max_batch_size=8, max_queue_delay_ms=50)
    colours = [["red"], ["green"], ["purple"], ["red"], ["green"]]

    async def body(ex: ModelExecutor) -> list[InferResult | BaseException]:
        requests = [ex.infer({"colour": np.array([c], dtype=object)}) for c in colours]
        return await asyncio.gather(*requests, return_exceptions=True)

    results = run(ex, body)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(results[2], ExecutionError)
    assert "Unknown Category" in str(results[2])
    for colour, result in zip(colours, results, strict=True):
        if isinstance(result, InferResult):
            expected = [[1.0, 0.0]] if colour == ["red"] else [[0.0, 1.0]]
            assert result.outputs["y"].tolist() == [expected]
    assert max(r.batch_size for r in results if isinstance(r, InferResult)) > 1
    stats = ex.statistics()["inference_stats"]
    assert (stats["fail"]["count"], stats["success"]["count"]) == (1, 4)


def test_outputs_off_the_batch_axis_turn_batching_off_and_stay_right() -> None:
    ex = executor(COLUMN_SUM, max_batch_size=8)
    assert ex.batching  # the signature claims a batch axis on every tensor
    inputs = [rows(1 + i % 2, i) for i in range(6)]

    async def body(ex: ModelExecutor) -> list[InferResult]:
        return await asyncio.gather(*(ex.infer({"x": x}) for x in inputs))

    results = run(ex, body)
    for x, result in zip(inputs, results, strict=True):
        np.testing.assert_allclose(result.outputs["y"], x.sum(axis=0, keepdims=True), rtol=1e-6)
    assert not ex.batching


def test_outputs_sized_by_the_data_are_never_batched() -> None:
    ex = executor(SELECTED, max_batch_size=8)
    assert not ex.batching  # the signature claims a batch axis, the graph says otherwise
    # batched, the first request's two values would equal the two rows and be split between
    # the requests: each would get a wrong answer of the right size
    inputs = [np.array([[0.9, 0.8, 0.0, 0.0]], np.float32), np.zeros((1, 4), np.float32)] * 4

    async def body(ex: ModelExecutor) -> list[InferResult]:
        return await asyncio.gather(*(ex.infer({"x": x}) for x in inputs))

    results = run(ex, body)
    for x, result in zip(inputs, results, strict=True):
        assert result.outputs["y"].tolist() == x[x > 0.5].tolist()
    assert all(r.batch_size == 1 for r in results)


COLUMNS_IN_TURN = """
<ir_version: 10, opset_import: ["" : 21]>
columns (float[batch, 2] x) => (float[M] y) {
    first, second = Split<axis = 1, num_outputs = 2>(x)
    both = Concat<axis = 0>(first, second)
    minus_one = Constant<value = int64[1] {-1}>()
    y = Reshape(both, minus_one)
}
"""


def test_an_output_that_folds_its_rows_into_another_axis_is_never_batched() -> None:
    """``[2*batch]``: every row's first column, then every row's second (as torch declares a
    ``cat`` then ``view(-1)``): a batch's value split by rows would mix the requests."""
    proto = onnx_text(COLUMNS_IN_TURN)
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "2*batch"
    ex = executor(proto, max_batch_size=8, max_queue_delay_ms=20)
    assert not ex.batching
    inputs = [
        (np.full((1 + i % 2, 2), i) + np.array([0, 0.5])).astype(np.float32) for i in range(6)
    ]

    async def body(ex: ModelExecutor) -> list[InferResult]:
        return await asyncio.gather(*(ex.infer({"x": x}) for x in inputs))

    for x, result in zip(inputs, run(ex, body), strict=True):
        np.testing.assert_array_equal(result.outputs["y"], x.T.ravel())


@pytest.mark.parametrize("dims", [("seq_len", "batch_size"), ("s0", "s1")])
def test_a_time_major_recurrent_model_is_never_batched(dims: tuple[str, str]) -> None:
    """PyTorch's LSTM without ``batch_first`` takes ``x[seq_len, batch_size, 4]``. Requests
    concatenated along the first axis ran as one longer sequence: each after the first got
    outputs computed from the state the one before it left (off by up to 0.07, silently).
    Told by the batch dim's name, or by the graph when no name says (``s0``, ``s1``)."""
    proto = recurrent(dims)
    ex = executor(proto, max_batch_size=8, max_queue_delay_ms=20)
    assert not ex.batching
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = [
        np.random.default_rng(i).standard_normal((2, 1, 4)).astype(np.float32) for i in range(4)
    ]

    async def body(ex: ModelExecutor) -> list[InferResult]:
        return await asyncio.gather(*(ex.infer({"x": x}) for x in inputs))

    for x, result in zip(inputs, run(ex, body), strict=True):
        np.testing.assert_allclose(result.outputs["y"], session.run(None, {"x": x})[0], atol=1e-6)


def test_default_timeout_from_config() -> None:
    ex = executor(slow_model(), max_batch_size=SLOW_ROWS, timeout_ms=20)

    async def body(ex: ModelExecutor) -> None:
        with pytest.raises(DeadlineExceeded):
            await ex.infer({"x": rows(SLOW_ROWS, 0, width=256)})

    run(ex, body)
    assert ex.statistics()["inference_stats"]["fail"]["count"] == 1


BF16 = """
<ir_version: 10, opset_import: ["" : 21]>
bf16 (float[N, 2] x) => (bfloat16[N, 2] h) { h = Cast<to: int = 16>(x) }
"""

STRINGS = """
<ir_version: 10, opset_import: ["" : 21]>
strings (string[N] s) => (string[N] t) { t = Identity(s) }
"""


def bf16_feeds(n: int) -> dict[str, np.ndarray]:
    return {"x": rows(n, n, width=2)}


def string_feeds(n: int) -> dict[str, np.ndarray]:
    return {"s": np.array([f"w{n}{i}" for i in range(n)], dtype=object)}


def test_bfloat16_outputs_and_string_tensors_batch() -> None:
    makers: list[tuple[str, Callable[[int], dict[str, np.ndarray]]]] = [
        (BF16, bf16_feeds),
        (STRINGS, string_feeds),
    ]
    for text, make in makers:
        ex = executor(text, max_batch_size=8)
        assert ex.batching
        inputs = [make(n) for n in (1, 2, 3, 1)]

        async def body(ex: ModelExecutor, inputs: list[Any] = inputs) -> list[InferResult]:
            return await asyncio.gather(*(ex.infer(f) for f in inputs))

        results = run(ex, body)
        assert max(r.batch_size for r in results) > 1
        for feeds, result in zip(inputs, results, strict=True):
            if "x" in feeds:
                assert result.outputs["h"].dtype.name == "bfloat16"
                got = result.outputs["h"].astype(np.float32)
                np.testing.assert_allclose(got, feeds["x"], rtol=1e-2, atol=1e-2)
            else:
                assert list(result.outputs["t"]) == list(feeds["s"])


def test_warmup_and_parallelism() -> None:
    model = Model.from_proto(onnx_text(GEMM))
    ex = ModelExecutor(model, ModelConfig(), cores=2)
    assert (ex.instances, ex.threads) == (1, 2)
    ex.warmup()
    asyncio.run(ex.close())
    failing = executor(RESHAPE)
    with pytest.raises(ExecutionError, match="warmup"):
        failing.warmup()
    asyncio.run(failing.close())


def test_warmup_logs_an_output_that_is_not_its_declared_shape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ddddocr's recognizer declares [1, seqlen] and gives [time, 1, classes]: the server
    still serves it, says so at load, and describes the output by the rank it has, every dim
    unknown (the metadata's -1s), not by the wrong declared shape."""
    ex = ModelExecutor(Model.from_proto(onnx_text(MISDECLARED)), ModelConfig(), cores=1)
    with caplog.at_level("WARNING", logger="onnxferry"):
        ex.warmup()
    asyncio.run(ex.close())
    (record,) = [r for r in caplog.records if "declared" in r.getMessage()]
    assert "output 'y' is declared [1, k] but gives [8, 1] at warm-up" in record.getMessage()
    assert [(o.name, o.shape) for o in ex.signature.outputs] == [("y", (None, None))]
    assert ex.signature.inputs == ex.model.signature.inputs


def test_cancelled_request_is_dropped_from_the_queue() -> None:
    ex = executor(slow_model(), max_batch_size=SLOW_ROWS)
    big = rows(SLOW_ROWS, 0, width=256)

    async def body(ex: ModelExecutor) -> None:
        busy = asyncio.ensure_future(ex.infer({"x": big}))
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(ex.infer({"x": big}))
        await asyncio.sleep(0)
        assert ex.queued == 1
        waiting.cancel()
        await asyncio.sleep(0)
        assert ex.queued == 0
        await busy

    run(ex, body)
    assert ex.statistics()["execution_count"] == 1


@pytest.mark.parametrize("spin", [True, False])
def test_spin_setting_reaches_the_sessions(spin: bool) -> None:
    ex = executor(GEMM, spin=spin, intra_op_threads=2)
    options = ex._instances[0].session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == str(int(spin))
    asyncio.run(ex.close())


def _record_threads(ex: ModelExecutor) -> list[str]:
    """The names of the threads each instance's runs happen on, in order."""
    names: list[str] = []
    for instance in ex._instances:
        run_on = instance.run

        def recorded(*args: Any, _run: Any = run_on) -> list[np.ndarray]:
            names.append(threading.current_thread().name)
            return list(_run(*args))

        instance.run = recorded  # type: ignore[method-assign, assignment]
    return names


def test_quick_batches_run_on_the_event_loop_thread_when_every_instance_is_idle() -> None:
    ex = executor(GEMM)
    ex.warmup()  # seeds the compute estimate: far below inline_max_ms
    threads = _record_threads(ex)
    x = rows(2, 0)

    async def body(ex: ModelExecutor) -> list[InferResult]:
        return [await ex.infer({"x": x}) for _ in range(5)]

    results = run(ex, body)
    assert threads == [threading.main_thread().name] * 5
    assert ex.inline_runs == 5
    expected = reference_y(GEMM, x)
    assert all(r.outputs["y"].tobytes() == expected.tobytes() for r in results)
    assert ex.statistics()["inference_stats"]["success"]["count"] == 5


def reference_y(text: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_text(text).SerializeToString())
    return np.asarray(session.run(["y"], {"x": x})[0])


@pytest.mark.parametrize("case", ["off", "no estimate", "too slow", "another instance busy"])
def test_batches_go_to_worker_threads_otherwise(case: str) -> None:
    slow = case in ("too slow", "another instance busy")
    ex = executor(
        slow_model() if slow else GEMM,
        max_batch_size=SLOW_ROWS,
        inline_max_ms=0 if case == "off" else 1.0,
        instances=2 if case == "another instance busy" else 1,
    )
    if case != "no estimate":
        ex.warmup()
    threads = _record_threads(ex)
    width = 256 if slow else 4

    async def body(ex: ModelExecutor) -> None:
        if case == "another instance busy":
            big = asyncio.ensure_future(ex.infer({"x": rows(SLOW_ROWS, 0, width)}))
            await asyncio.sleep(0.01)  # the big run is on a worker now
            await ex.infer({"x": rows(1, 1, width)})  # quick, but one instance is busy
            await big
        else:
            await ex.infer({"x": rows(SLOW_ROWS if slow else 1, 0, width)})

    run(ex, body)
    assert threads and all(name.startswith("ferry-") for name in threads), threads
    assert ex.inline_runs == 0


def test_the_estimate_counts_input_elements_not_rows() -> None:
    """One row of 100,000 values is not "quick" because one row of 3 was: a long sequence
    must not block the event loop."""
    ex = executor(WIDE)
    ex.warmup()  # on x[1, 1]
    threads = _record_threads(ex)

    async def body(ex: ModelExecutor) -> None:
        await ex.infer({"x": rows(1, 0, width=3)})
        await ex.infer({"x": rows(1, 1, width=100_000)})

    run(ex, body)
    assert threads[0] == threading.main_thread().name
    assert threads[1].startswith("ferry-")


def test_a_graph_that_draws_random_numbers_is_never_cached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cache would hand every client the first draw again: off, whatever ferry.toml says,
    with a warning naming the draw."""
    from tests.test_check import NOISY

    with caplog.at_level("WARNING", logger="onnxferry"):
        ex = executor(NOISY, cache_bytes=1 << 20)
    assert ex.cache is None
    (record,) = [r for r in caplog.records if "response cache" in r.getMessage()]
    assert "draws random numbers (RandomNormalLike)" in record.getMessage()
    x = np.zeros((1, 4), np.float32)

    async def body(ex: ModelExecutor) -> list[InferResult]:
        return [await ex.infer({"x": x}) for _ in range(2)]

    first, second = run(ex, body)
    assert not np.array_equal(first.outputs["y"], second.outputs["y"])
    cached = executor(GEMM, cache_bytes=1 << 20)
    assert cached.cache is not None
    run(cached, lambda ex: asyncio.sleep(0))
