"""Runs one model version: ONNX Runtime sessions (instances x intra-op threads) behind a
dynamic batcher, with per-request deadlines and Triton-style statistics.

    executor = ModelExecutor(model, ModelConfig(max_batch_size=8))
    executor.warmup()                                    # one run per instance, sync
    result = await executor.infer({"x": x}, output_names=["y"], deadline=time.monotonic() + 1)
    result.outputs["y"], result.batch_size               # rows of the batch it ran in
    executor.statistics()                                # GET /v2/models/m/stats entry
    executor.memory_bytes, executor.loaded               # its sessions' memory, held or not
    await executor.close()                               # drains queued and in-flight work

Scheduling, all on the event loop thread (each instance has its own session and worker
thread; a batch costs one hand-off to its worker and one back):

- Requests are dispatched once the loop has taken in every request that arrived with them
  (one ``call_soon``), so requests that arrive together share a batch.
- An idle instance takes the queue at once, so at low load a request never waits for
  company (concurrency 1 pays no queue delay).
- When every instance is idle and the batch should take at most ``inline_max_ms`` (a
  running average of compute time per input element, seeded by ``warmup``, so a long
  sequence counts as much as many rows), the batch runs right on the loop thread: for
  small models the hand-off to a worker thread and back costs more than the run itself.
- While every instance is busy, requests accumulate; the next free instance takes the oldest
  request plus every queued request with the same non-batch shapes and dtypes, up to
  ``max_batch_size`` rows. Load itself makes the batches.
- An idle instance holds back only while recent load says more rows are on their way (the
  most rows recently in the system, queued plus running, exceed what is queued and running
  now) and the oldest request has waited less than ``max_queue_delay_ms``, timed by
  ``timers.call_at_ns`` (event loops round timers to whole milliseconds). A wait that times
  out short of its target lowers the estimate, so a drop in load costs at most one delay.

A device pool (``devices = ["cuda:0", "cuda:1"]``, ``devices.parse_devices``) is
``instances`` sessions (default 1) on each device, each made with its ``device_id``; the
same queue feeds them, and an idle instance is taken in turn (the one idle longest), so
batches spread over the devices even at low load (``device_runs`` counts them). Plain
instances reuse the one that ran last, whose caches are warm.

Before the queue: with ``cache_bytes`` (and not ``deterministic = false``, nor a graph that
draws random numbers, ``graphs.random_ops``) a request whose digest is in the response cache
(``cache.ResponseCache``, one per executor, so a reload starts empty) is answered from it at
once; a miss runs and its answer is kept. A version whose sessions the repository's memory
budget unloaded (``budget.MemoryBudget``) waits for their reload, within its deadline;
meanwhile nothing unloads it, nor while requests are queued or running.

Deadlines: a request still queued at its deadline fails with DeadlineExceeded without
running; a request whose deadline passes mid-run fails at once, and when every request of a
run has failed or been cancelled the run is stopped with ``RunOptions.terminate`` (each run
has its own RunOptions, so the session stays usable). A batch run on the loop thread cannot
be stopped; it was expected to take at most ``inline_max_ms``. Nor can a run on
``provider = "openvino"`` (``ovsession``: OpenVINO's runtime has no RunOptions).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import numpy as np
import onnxruntime as ort

from ..devices import Device, device_session
from ..errors import FeedError, FerryError
from ..feeds import describe_shapes, plan_feeds
from ..graphs import random_ops, sized_by_data, time_major_inputs
from ..model import Model
from ..runtime import (
    SessionConfig,
    create_session,
    from_ortvalue,
    needs_ortvalue_outputs,
    ort_error_message,
    ort_inputs,
    usable_cores,
)
from ..signature import Signature
from .budget import MemoryBudget, arena_options, release_free_memory, resident_bytes
from .cache import ResponseCache
from .config import ModelConfig
from .timers import call_at_ns

log = logging.getLogger("onnxferry")


class QueueFull(FerryError):
    """Too many requests are waiting for this model (HTTP 503)."""


class DeadlineExceeded(FerryError):
    """The request's deadline passed before its result was ready (HTTP 504)."""


class ExecutionError(FerryError):
    """ONNX Runtime failed on input that matches the signature (HTTP 500)."""


class ExecutorClosed(FerryError):
    """The executor is shutting down and takes no new requests (HTTP 503)."""


@dataclass(frozen=True, slots=True)
class InferResult:
    """Outputs of one request, and where its time went."""

    outputs: dict[str, np.ndarray]
    queue_ns: int
    compute_ns: int
    batch_size: int  # rows of the batch this request ran in


class _Request:
    __slots__ = (
        "abandoned",
        "batch",
        "deadline",
        "feeds",
        "future",
        "key",
        "names",
        "rows",
        "size",
        "start_ns",
        "timer",
    )

    def __init__(
        self,
        feeds: Mapping[str, np.ndarray],
        names: tuple[str, ...] | None,
        deadline: float | None,
        future: asyncio.Future[InferResult],
        rows: int,
        key: tuple[Any, ...] | None,
    ) -> None:
        self.feeds = feeds
        self.names = names
        self.deadline = deadline
        self.future = future
        self.rows = rows
        self.size = _elements(feeds)
        self.key = key  # None: cannot share a batch
        self.start_ns = time.monotonic_ns()
        self.timer: asyncio.TimerHandle | None = None
        self.batch: _Batch | None = None
        self.abandoned = False  # failed or cancelled before its result arrived


class _Batch:
    """One run: its requests, what it asks for, and (after the run) what came back."""

    __slots__ = (
        "done",
        "error",
        "failed",
        "index",
        "live",
        "loop",
        "names",
        "options",
        "outputs",
        "requests",
        "rows",
        "size",
        "start_ns",
        "times",
        "unbatchable",
    )

    def __init__(self, requests: list[_Request], names: tuple[str, ...], rows: int) -> None:
        self.requests = requests
        self.names = names
        self.rows = rows
        self.size = sum(r.size for r in requests)  # input elements, for the compute estimate
        self.live = len(requests)
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4  # a terminated run is expected, not an error
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: Any = None  # what the worker calls on the loop with the finished batch
        self.index = 0  # the instance that runs it
        self.outputs: list[dict[str, np.ndarray]] = []
        self.error: BaseException | None = None
        self.failed: dict[int, BaseException] = {}  # requests that failed run on their own
        self.start_ns = 0
        self.times = (0, 0, 0)  # compute_input, compute_infer, compute_output (ns)
        self.unbatchable = False


class _Instance:
    """One session and what it needs to run a batch; knows nothing of the executor."""

    def __init__(self, session: ort.InferenceSession, signature: Signature, model: str) -> None:
        self.session = session
        self.model = model
        self.input_names = signature.input_names
        self.bf16_inputs = any(s.dtype.onnx_name == "BFLOAT16" for s in signature.inputs)
        self.ortvalue_outputs = needs_ortvalue_outputs(signature)

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        names: Sequence[str],
        options: ort.RunOptions | None,
    ) -> list[np.ndarray]:
        if self.ortvalue_outputs:
            values = self.session.run_with_ort_values(
                list(names), ort_inputs(feeds, all_ortvalues=True), options
            )
            return [from_ortvalue(v) for v in values]
        inputs: Mapping[str, Any] = ort_inputs(feeds) if self.bf16_inputs else feeds
        results = self.session.run(list(names), inputs, options)
        return [r if isinstance(r, np.ndarray) else np.asarray(r, dtype=object) for r in results]

    def execute(self, batch: _Batch) -> None:
        """Concatenate, run and split one batch (in the worker thread); fills the batch."""
        requests = batch.requests
        t0 = time.monotonic_ns()
        batch.start_ns = t0
        t1 = t2 = t0
        try:
            if len(requests) == 1:
                feeds = requests[0].feeds
            else:
                feeds = {
                    n: np.concatenate([r.feeds[n] for r in requests]) for n in self.input_names
                }
            t1 = time.monotonic_ns()
            arrays = self.run(feeds, batch.names, batch.options)
            t2 = time.monotonic_ns()
            outputs = dict(zip(batch.names, arrays, strict=True))
            if len(requests) == 1:
                batch.outputs = [_pick(outputs, requests[0].names, batch.names)]
            elif all(a.ndim and a.shape[0] == batch.rows for a in arrays):
                batch.outputs = _split(outputs, requests, batch.names)
            else:  # outputs do not follow the batch axis: run each request on its own
                batch.unbatchable = True
                batch.outputs = [self._run_alone(r, batch) for r in requests]
        except Exception as e:
            if len(requests) > 1 and not batch.options.terminate:
                self._run_each(batch)
            else:
                batch.error = self._error(e, batch.options)
        t3 = time.monotonic_ns()
        batch.times = (t1 - t0, t2 - t1, t3 - t2)

    def _run_each(self, batch: _Batch) -> None:
        """A batch whose run failed, run request by request: one request's values that the
        model rejects (an unknown category, an index past a table) fail that request, not
        the others it was batched with."""
        batch.outputs = []
        for i, request in enumerate(batch.requests):
            try:
                batch.outputs.append(self._run_alone(request, batch))
            except Exception as e:
                batch.outputs.append({})
                batch.failed[i] = self._error(e, batch.options)
        if len(batch.failed) == len(batch.requests):
            batch.error = batch.failed[0]

    def _run_alone(self, request: _Request, batch: _Batch) -> dict[str, np.ndarray]:
        arrays = self.run(request.feeds, batch.names, batch.options)
        return _pick(dict(zip(batch.names, arrays, strict=True)), request.names, batch.names)

    def _error(self, error: Exception, options: ort.RunOptions) -> FerryError:
        if options.terminate:
            return DeadlineExceeded(
                f"model {self.model!r}: the run was stopped at the request deadline",
                hint="raise the timeout or send smaller inputs",
            )
        if isinstance(error, FerryError):
            return error
        return ExecutionError(
            f"model {self.model!r} failed to run: {ort_error_message(error)}",
            hint="the inputs match the signature, but the model rejects their values",
        )


def _elements(feeds: Mapping[str, np.ndarray]) -> int:
    """Input elements of a request (at least 1), the unit of the compute estimate."""
    return max(1, sum(a.size for a in feeds.values()))


def _pick(
    outputs: dict[str, np.ndarray], wanted: tuple[str, ...] | None, ran: tuple[str, ...]
) -> dict[str, np.ndarray]:
    if wanted is None or wanted == ran:
        return outputs
    return {n: outputs[n] for n in wanted}


def _split(
    outputs: dict[str, np.ndarray], requests: list[_Request], ran: tuple[str, ...]
) -> list[dict[str, np.ndarray]]:
    parts = []
    start = 0
    for r in requests:
        stop = start + r.rows
        parts.append({n: outputs[n][start:stop] for n in (r.names or ran)})
        start = stop
    return parts


def _worker(instance: _Instance, inbox: SimpleQueue[_Batch | None]) -> None:
    while (batch := inbox.get()) is not None:
        instance.execute(batch)
        assert batch.loop is not None
        try:
            batch.loop.call_soon_threadsafe(batch.done, batch)
        except RuntimeError:  # the loop was closed under a running batch
            log.warning("a batch finished after its event loop closed")


def batch_axis(signature: Signature) -> bool:
    """True when every input and output has a leading dynamic dim, the inputs' named leading
    dims are one name, and that is where their rows lie (``Signature.row_axes``: not a
    time-major ``x[seq_len, batch_size, 8]``, whose requests concatenated would run as one
    longer sequence): the model can run concatenated requests."""
    specs = [*signature.inputs, *signature.outputs]
    if not signature.inputs or any(not s.shape or isinstance(s.shape[0], int) for s in specs):
        return False
    names = {s.shape[0] for s in signature.inputs if s.shape and isinstance(s.shape[0], str)}
    return len(names) <= 1 and all(axis == 0 for axis in signature.row_axes().values())


class _Counter:
    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


_PHASES = ("compute_input", "compute_infer", "compute_output")
_REQUEST_STATS = ("success", "fail", "queue", *_PHASES, "cache_hit", "cache_miss")


class ModelExecutor:
    """Serves one model version; see the module docstring for the scheduling policy.

    Use it from one event loop at a time; ``statistics`` and ``infer`` are loop-thread calls.
    """

    def __init__(
        self,
        model: Model,
        config: ModelConfig,
        *,
        cores: int | None = None,
        name: str | None = None,
        version: str = "1",
    ) -> None:
        self.model = model
        self.config = config
        self.signature: Signature = model.signature
        self.name = name or model.name
        self.version = version
        cores = usable_cores() if cores is None else cores
        pool = config.device_pool
        per_device = config.instances or 1
        if pool:  # ``instances`` sessions on each device, interleaved so turns spread them
            self.instances = len(pool) * per_device
            self.threads = config.intra_op_threads or max(1, cores // self.instances)
        else:
            self.instances, self.threads = config.parallelism(cores)
        self.devices: list[Device | None] = (
            [d for _ in range(per_device) for d in pool] if pool else [None] * self.instances
        )
        """The device of each instance (None: ``config.provider`` as it is)."""
        self.instance_runs = [0] * self.instances
        """Batches each instance has run (a pool's spread; also ``device_runs``)."""
        self.batching: bool = (
            config.max_batch_size > 0
            and batch_axis(self.signature)
            and not sized_by_data(model.proto)
            and not self.signature.merged_row_outputs()
            and not time_major_inputs(model.proto)
        )
        session_config = SessionConfig(
            provider=config.provider,
            threads=self.threads,
            inter_threads=1,
            **arena_options(
                config, {"session.intra_op.allow_spinning": "1" if config.spin else "0"}
            ),
            fallback=False,  # a server asked for a provider runs on it or does not load
            own_weights=True,  # files copied over a served version cannot reach its sessions
            precision=config.precision,
            engine_cache=None if config.engine_cache is None else Path(config.engine_cache),
            calibration_table=(
                None if config.calibration_table is None else Path(config.calibration_table)
            ),
        )
        self._session_config = session_config
        self._memory_base = resident_bytes(trim=True)
        self._instances = [
            _Instance(self._new_session(device), self.signature, self.name)
            for device in self.devices
        ]
        self.memory_bytes = max(0, resident_bytes(trim=True) - self._memory_base)
        """Resident memory its sessions took when they were made and warmed up (budget.py)."""
        self.loaded = True  # False while the memory budget has unloaded its sessions
        self.budget: MemoryBudget | None = None  # the repository's, when it has one
        self.last_used = time.monotonic()
        self._waking = 0  # requests waiting for the budget to reload the sessions
        drawn = random_ops(model.proto) if config.cached else []
        if drawn:
            log.warning(
                "model %s: no response cache: its graph draws random numbers (%s), so a cached "
                "answer would repeat one draw (deterministic = true in ferry.toml does not "
                "change the graph)", self.name, ", ".join(drawn),
            )  # fmt: skip
        self.cache = ResponseCache(config.cache_bytes) if config.cached and not drawn else None
        self._cache_version = f"{version}@{model.digest}" if self.cache is not None else ""
        self._output_names = tuple(o.name for o in self._instances[0].session.get_outputs())
        self._known_outputs = frozenset(self._output_names)
        self._input_names = tuple(self.signature.input_names)
        self._input_set = frozenset(self._input_names)
        self._max_rows = max(1, config.max_batch_size)
        self._delay_ns = round(config.max_queue_delay_ms * 1e6)
        self._inline_ns = config.inline_max_ms * 1e6
        self._element_ns: float | None = None  # running average of compute per input element
        self.inline_runs = 0  # batches run on the event loop thread
        self._timeout_s = None if config.timeout_ms is None else config.timeout_ms / 1000

        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Request] = deque()
        self._queued = 0  # live requests in the queue
        self._queued_rows = 0
        self._running_rows = 0
        self._idle = list(range(self.instances))
        self._rotate = pool != []  # a pool takes turns; plain instances reuse the warmest
        self._estimate = 1  # rows recently in the system (queued + running)
        self._wait_armed = False  # _arm_timer or a _TIMER call to _waited is pending
        self._dispatch_pending = False  # a call_soon(_dispatch_later) is pending
        self._closing = False
        self._drained: asyncio.Future[None] | None = None

        self._request_stats = {k: _Counter() for k in _REQUEST_STATS}
        self._batch_stats: dict[int, tuple[_Counter, _Counter, _Counter]] = {}
        self._inference_count = 0
        self._execution_count = 0
        self._last_inference_ms = 0

        self._inboxes: list[SimpleQueue[_Batch | None]] = [SimpleQueue() for _ in self._instances]
        self._threads = [
            threading.Thread(
                target=_worker, args=(inst, box), name=f"ferry-{self.name}-{i}", daemon=True
            )
            for i, (inst, box) in enumerate(zip(self._instances, self._inboxes, strict=True))
        ]
        for t in self._threads:
            t.start()
        self._finalizer = weakref.finalize(self, _stop, self._inboxes)

    # --- public API --------------------------------------------------------------------

    async def infer(
        self,
        feeds: dict[str, np.ndarray],
        *,
        output_names: list[str] | None = None,
        deadline: float | None = None,
    ) -> InferResult:
        """Run one request (feeds already validated against the signature) through the
        batcher. ``deadline`` is a ``time.monotonic()`` time; None means now plus the
        config's ``timeout_ms``, or no deadline when that is None too.

        Raises QueueFull, DeadlineExceeded, ExecutionError, ExecutorClosed, or FeedError for
        unknown input or output names and for more rows than ``max_batch_size`` (when the
        model batches; Triton refuses those too).
        """
        if self._closing:
            raise ExecutorClosed(
                f"model {self.name!r} version {self.version} is shutting down",
                hint="retry; a newer version or a restarted server will answer",
            )
        loop = self._bind_loop()
        names = tuple(output_names) if output_names else None  # [] asks for all, like None
        if names is not None and not self._known_outputs.issuperset(names):
            unknown = next(n for n in names if n not in self._known_outputs)
            raise FeedError(
                f"model {self.name!r} has no output {unknown!r}",
                hint=f"outputs are {list(self._output_names)}",
            )
        if feeds.keys() != self._input_set:
            self.signature.validate(feeds)
        rows, key = self._batch_key(feeds)
        if self.batching and rows > self.config.max_batch_size:
            raise FeedError(
                f"the request holds {rows} rows, over model {self.name!r}'s max_batch_size of "
                f"{self.config.max_batch_size}",
                hint="split the request, or raise max_batch_size in the model's ferry.toml",
            )
        if deadline is None and self._timeout_s is not None:
            deadline = time.monotonic() + self._timeout_s
        cache_key = None
        if self.cache is not None:
            lookup_ns = time.monotonic_ns()
            cache_key = self.cache.key(feeds, names, self._cache_version)
            hit = self.cache.get(cache_key)
            if hit is not None:
                return self._cached(hit, rows, lookup_ns)
            self._request_stats["cache_miss"].add(time.monotonic_ns() - lookup_ns)
        self.last_used = time.monotonic()
        if not self.loaded:
            await self._wake(deadline)
        if deadline is not None and deadline <= time.monotonic():
            self._request_stats["fail"].add(0)
            raise self._deadline_error()
        if self._queued >= self.config.max_queue_size:
            self._request_stats["fail"].add(0)
            raise QueueFull(
                f"model {self.name!r} has {self._queued} requests waiting (max_queue_size)",
                hint="retry later, or raise max_queue_size / instances in ferry.toml",
            )
        request = _Request(feeds, names, deadline, loop.create_future(), rows, key)
        if deadline is not None:
            request.timer = loop.call_later(deadline - time.monotonic(), self._expire, request)
        self._queue.append(request)
        self._queued += 1
        self._queued_rows += rows
        self._estimate = max(self._estimate, self._queued_rows + self._running_rows)
        if self._idle and not self._dispatch_pending:
            self._dispatch_pending = True
            loop.call_soon(self._dispatch_later)
        try:
            result = await request.future
        except asyncio.CancelledError:
            self._abandon(request)
            raise
        if cache_key is not None and self.cache is not None:
            self.cache.put(cache_key, result.outputs)
        return result

    def _cached(self, outputs: dict[str, np.ndarray], rows: int, start_ns: int) -> InferResult:
        """A response cache hit: the stored answer, counted as Triton counts one."""
        ns = time.monotonic_ns() - start_ns
        self._request_stats["cache_hit"].add(ns)
        self._request_stats["success"].add(ns)
        return InferResult(outputs, 0, 0, rows)

    async def _wake(self, deadline: float | None) -> None:
        """Wait until the memory budget has reloaded the sessions it unloaded (budget.py);
        no other version unloads this one meanwhile."""
        self._waking += 1
        try:
            while not self.loaded and self.budget is not None and not self._closing:
                await self.budget.wake(self, deadline)
        except DeadlineExceeded:
            self._request_stats["fail"].add(0)
            raise
        finally:
            self._waking -= 1
        if self._closing or not self.loaded:
            raise ExecutorClosed(
                f"model {self.name!r} version {self.version} is shutting down",
                hint="retry; a newer version or a restarted server will answer",
            )

    @property
    def idle(self) -> bool:
        """No request queued, running or waiting for a reload: the budget may unload it."""
        return not self._queued and not self._busy() and not self._waking

    def unload_sessions(self) -> bool:
        """Free the sessions (loop thread), for the memory budget; the next request waits
        for ``restore_sessions``. False when it is not idle, closed or already unloaded."""
        if not self.loaded or not self.idle or self._closing:
            return False
        for instance in self._instances:
            del instance.session
        self.loaded = False
        release_free_memory()
        return True

    def restore_sessions(self) -> None:
        """Make the sessions again after ``unload_sessions`` (blocking: a worker thread)."""
        instances = list(self._instances)
        sessions = [self._new_session(device) for device in self.devices]
        for instance, session in zip(instances, sessions, strict=True):
            instance.session = session
        self.loaded = True

    def _new_session(self, device: Device | None) -> ort.InferenceSession:
        if device is None:
            return create_session(self.model, self._session_config)
        return device_session(self.model, self._session_config, device)

    def device_runs(self) -> dict[str, int]:
        """Batches run per device of the pool ({"cuda:0": 12, "cuda:1": 11}); {} without
        one."""
        runs: dict[str, int] = {}
        for device, count in zip(self.devices, self.instance_runs, strict=True):
            if device is not None:
                runs[str(device)] = runs.get(str(device), 0) + count
        return runs

    def warmup(self, feeds: Mapping[str, np.ndarray] | None = None) -> None:
        """One run per instance on ``feeds`` (default: the one feed policy's, at the config's
        ``warmup_dims``), and one more timed run that seeds the compute estimate;
        ExecutionError if a run fails. A model with an input of unknown rank, for which no
        feed can be made, is served without (a warning says so)."""
        hint = "set warmup_dims or warmup_inputs in the model's ferry.toml"
        unranked = [s.name for s in self.signature.inputs if s.shape is None]
        if feeds is None and unranked:
            log.warning(
                "model %s: input %r has an unknown rank, so it is served without a warm-up "
                "(the first request pays for it); set warmup_inputs in the model's ferry.toml",
                self.name,
                unranked[0],
            )
            return
        if feeds is None:
            try:
                plan = plan_feeds(
                    self.model,
                    dims=dict(self.config.warmup_dims),
                    session=self._instances[0].session,
                )
            except FerryError as e:
                raise ExecutionError(f"model {self.name!r}: {e.message}", hint=hint) from e
            feeds = plan.feeds(seed=0)
        for instance in [*self._instances, self._instances[0]]:
            start = time.monotonic_ns()
            try:
                outputs = instance.run(feeds, self._output_names, None)
            except Exception as e:
                raise ExecutionError(
                    f"model {self.name!r} failed its warmup run on "
                    f"{describe_shapes({k: v.shape for k, v in feeds.items()})}: "
                    f"{ort_error_message(e)}",
                    hint=hint,
                ) from e
            self._element_ns = (time.monotonic_ns() - start) / _elements(feeds)
        self._observe_outputs(dict(zip(self._output_names, outputs, strict=True)))
        grown = resident_bytes(trim=True) - self._memory_base  # the arena the runs grew
        self.memory_bytes = max(self.memory_bytes, grown)

    def _observe_outputs(self, outputs: Mapping[str, np.ndarray]) -> None:
        """Each output that the warm-up shows is not the shape the model declares (ddddocr's
        recognizer declares ``[1, seqlen]`` and gives ``[time, 1, classes]``) is logged, and
        described from then on (metadata, Triton's config) by the rank it has, every dim
        unknown: the declared shape would tell clients a wrong one."""
        wrong = {
            spec.name: np.shape(outputs[spec.name])
            for spec in self.signature.outputs
            if spec.name in outputs and not spec.fits(np.shape(outputs[spec.name]))
        }
        for spec in self.signature.outputs:
            if spec.name in wrong:
                log.warning(
                    "model %s: output %r is declared %s but gives %s at warm-up; its metadata "
                    "gives it as %s (`ferry check` tells more)",
                    self.name, spec.name, spec.shape_text(), list(wrong[spec.name]),
                    [-1] * len(wrong[spec.name]),
                )  # fmt: skip
        if wrong:
            outputs_seen = tuple(
                replace(spec, shape=(None,) * len(wrong[spec.name])) if spec.name in wrong else spec
                for spec in self.signature.outputs
            )
            self.signature = replace(self.signature, outputs=outputs_seen)

    async def close(self) -> None:
        """Stop taking requests, finish the queued and running ones, stop the threads."""
        self._closing = True
        if self._loop is not None and (self._queued or self._busy()):
            if self._drained is None:
                self._drained = self._loop.create_future()
            self._dispatch()
            await asyncio.shield(self._drained)
        if self._finalizer.alive:
            self._finalizer()
            await asyncio.to_thread(_join, self._threads)
            self._instances.clear()  # frees the sessions

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def queued(self) -> int:
        """Requests waiting for an instance."""
        return self._queued

    def statistics(self) -> dict[str, Any]:
        """This version's entry of Triton's statistics extension (GET /v2/models/m/stats),
        with ``device_stats``: the batches each device of a ``--devices`` pool ran ([] without
        one)."""
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self._last_inference_ms,
            "inference_count": self._inference_count,
            "execution_count": self._execution_count,
            "inference_stats": {k: c.to_dict() for k, c in self._request_stats.items()},
            "batch_stats": [
                {"batch_size": size, **_phases(counters)}
                for size, counters in sorted(self._batch_stats.items())
            ],
            "memory_usage": [],
            # ferry's own, beside Triton's fields (gRPC's ModelStatistics has no place for it)
            "device_stats": [
                {"device": device, "execution_count": count}
                for device, count in self.device_runs().items()
            ],
        }

    # --- scheduling (event loop thread) -------------------------------------------------

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None and (self._queued or self._busy()):
                raise RuntimeError("a ModelExecutor serves one event loop at a time")
            self._loop = loop
            self._drained = None
            self._wait_armed = False  # a timer for the old loop
        return loop

    def _batch_key(self, feeds: Mapping[str, np.ndarray]) -> tuple[int, tuple[Any, ...] | None]:
        """(rows, key): requests with equal keys can share a batch; None shares nothing."""
        if not self.batching:
            return 1, None
        if len(self._input_names) == 1:
            a = feeds[self._input_names[0]]
            return (a.shape[0], (a.dtype, a.shape[1:])) if a.ndim else (1, None)
        arrays = [feeds[n] for n in self._input_names]
        if any(a.ndim == 0 for a in arrays):
            return 1, None
        rows = arrays[0].shape[0]
        if any(a.shape[0] != rows for a in arrays):
            return rows, None
        return rows, tuple(x for a in arrays for x in (a.dtype, a.shape[1:]))

    def _dispatch_later(self) -> None:
        self._dispatch_pending = False
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand batches to idle instances (or run one here), or arm the wait timer (see the
        module docstring)."""
        now = time.monotonic_ns()
        while self._idle and self._queue:
            head = self._queue[0]
            if head.abandoned:
                self._queue.popleft()
                continue
            if self._should_wait(head, now):
                if not self._wait_armed:
                    self._wait_armed = True
                    self._running_loop().call_soon(self._arm_timer)
                return
            batch = self._take(now)
            if batch is None:
                continue
            inline = self._busy() == 0 and self._quick(batch.size)
            batch.index = self._idle.pop(0 if self._rotate else -1)
            batch.loop = self._loop
            batch.done = self._finished
            self._running_rows += batch.rows
            if inline:
                self.inline_runs += 1
                self._instances[batch.index].execute(batch)
                self._settle(batch)
                now = time.monotonic_ns()
            else:
                self._inboxes[batch.index].put(batch)
        self._check_drained()

    def _busy(self) -> int:
        """Instances running a batch."""
        return self.instances - len(self._idle)

    def _quick(self, elements: int) -> bool:
        """Whether a batch with this many input elements should take at most
        ``inline_max_ms``."""
        return self._element_ns is not None and self._element_ns * elements <= self._inline_ns

    def _should_wait(self, head: _Request, now: int) -> bool:
        if not self.batching or self._closing or head.key is None:
            return False
        # the rows expected soon, shared by the idle instances
        expected = self._estimate - self._running_rows
        target = min(self._max_rows, -(-expected // len(self._idle)))
        if self._queued_rows >= target:
            return False
        return now - head.start_ns < self._delay_ns

    def _arm_timer(self) -> None:
        """Still waiting once this loop iteration's requests are in: start the wait timer.
        (Requests that arrive together fill the batch without any timer.)"""
        head = self._live_head()
        if head is None or not self._idle:
            self._wait_armed = False
        elif not self._should_wait(head, time.monotonic_ns()):
            self._wait_armed = False
            self._dispatch()  # the delay ran out meanwhile
        else:
            call_at_ns(self._running_loop(), head.start_ns + self._delay_ns, self._waited)

    def _live_head(self) -> _Request | None:
        queue = self._queue
        while queue and queue[0].abandoned:
            queue.popleft()
        return queue[0] if queue else None

    def _waited(self) -> None:
        """The wait timer: run what has come; a full wait that ended short of its target
        lowers the load estimate."""
        self._wait_armed = False
        head = self._live_head()
        if head is None or not self._idle:
            return
        if time.monotonic_ns() - head.start_ns >= self._delay_ns:
            self._estimate = max(1, self._queued_rows + self._running_rows)
        self._dispatch()

    def _take(self, now: int) -> _Batch | None:
        """The oldest live request and every queued one that may join it (max rows)."""
        queue = self._queue
        first = queue.popleft()
        taken = [first]
        rows = first.rows
        key = first.key
        if key is not None and rows < self._max_rows:
            keep = []
            while queue and rows < self._max_rows:
                r = queue.popleft()
                if r.abandoned:
                    continue
                if r.key == key and rows + r.rows <= self._max_rows:
                    taken.append(r)
                    rows += r.rows
                else:
                    keep.append(r)
            queue.extendleft(reversed(keep))
        live = []
        now_s = now / 1e9
        for r in taken:
            if r.deadline is not None and r.deadline <= now_s:
                self._expire(r)  # counted out of the queue there
            else:
                live.append(r)
        if not live:
            return None
        rows = sum(r.rows for r in live)
        self._queued -= len(live)
        self._queued_rows -= rows
        names = live[0].names
        if names is None or any(r.names != names for r in live):
            names = self._output_names
        batch = _Batch(live, names, rows)
        for r in live:
            r.batch = batch
        return batch

    def _finished(self, batch: _Batch) -> None:
        """Back on the loop from a worker: settle the batch, dispatch more."""
        self._settle(batch)
        self._dispatch()

    def _settle(self, batch: _Batch) -> None:
        """A batch has run: answer its requests, record statistics, free its instance."""
        self._idle.append(batch.index)
        self._running_rows -= batch.rows
        end = time.monotonic_ns()
        compute = sum(batch.times)
        if batch.unbatchable and self.batching:
            self.batching = False
            log.warning(
                "model %r: outputs do not follow the batch axis; dynamic batching is off",
                self.name,
            )
        if batch.error is None:
            self._execution_count += 1
            self.instance_runs[batch.index] += 1
            self._last_inference_ms = int(time.time() * 1000)
            counters = self._batch_stats.get(batch.rows)
            if counters is None:
                counters = self._batch_stats[batch.rows] = (_Counter(), _Counter(), _Counter())
            for counter, ns in zip(counters, batch.times, strict=True):
                counter.add(ns)
            each = batch.times[1] / batch.size
            old = self._element_ns
            self._element_ns = each if old is None else 0.8 * old + 0.2 * each
        stats = self._request_stats
        answered = 0
        for i, r in enumerate(batch.requests):
            if r.timer is not None:
                r.timer.cancel()
            if r.abandoned or r.future.done():
                continue
            queue_ns = batch.start_ns - r.start_ns
            error = batch.error or batch.failed.get(i)
            if error is not None:
                r.future.set_exception(error)
                stats["fail"].add(end - r.start_ns)
                continue
            r.future.set_result(InferResult(batch.outputs[i], queue_ns, compute, batch.rows))
            stats["success"].add(end - r.start_ns)
            stats["queue"].add(queue_ns)
            answered += 1
            self._inference_count += r.rows
        if answered:  # Triton adds a batch's compute times to each of its requests
            for phase, ns in zip(_PHASES, batch.times, strict=True):
                stats[phase].add(ns * answered, answered)

    def _expire(self, request: _Request) -> None:
        """A request's deadline passed: fail it now, and stop its run if nobody else waits."""
        if request.abandoned or request.future.done():
            return
        request.future.set_exception(self._deadline_error())
        self._request_stats["fail"].add(time.monotonic_ns() - request.start_ns)
        self._abandon(request)

    def _abandon(self, request: _Request) -> None:
        if request.abandoned:
            return
        request.abandoned = True
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        batch = request.batch
        if batch is None:  # still queued; dropped from the queue lazily
            self._queued -= 1
            self._queued_rows -= request.rows
            self._check_drained()
            return
        batch.live -= 1
        if batch.live == 0:
            batch.options.terminate = True

    def _check_drained(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done() and not self._queued and not self._busy():
            drained.set_result(None)

    def _deadline_error(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"model {self.name!r}: the request deadline passed before the result was ready",
            hint="raise the timeout, or add instances if requests queue",
        )

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop


def _phases(counters: tuple[_Counter, ...]) -> dict[str, dict[str, int]]:
    return {p: c.to_dict() for p, c in zip(_PHASES, counters, strict=True)}


def _stop(inboxes: list[SimpleQueue[_Batch | None]]) -> None:
    for box in inboxes:
        box.put(None)


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join()
