"""The load generator behind ``ferry bench --url``: concurrent KServe V2 clients against a server.

    report = asyncio.run(load_test("http://127.0.0.1:8000", "mlp", concurrency=(1, 8, 32)))
    report = run_load_test("http://127.0.0.1:8000", "mlp", concurrency=(1, 8))   # sync wrapper
    print(render_table(report.table()))       # one row per concurrency level
    report.rows[0].p50_ms, report.rows[0].server.queue_ms
    Report(verb="bench", result=report)       # like the other verbs (ok, to_dict, tables)

Per level: ``warmup_s`` of untimed requests, then N workers (tritonclient's asyncio client,
one event loop) loop ``infer`` for ``duration_s``; each request is timed with
``time.perf_counter`` around the call (build the body, send, wait, parse). The server-side
queue / compute split comes from ``GET /v2/models/{m}/stats`` (Triton's statistics
extension): the difference across the timed window divided by its request count, as
perf_analyzer reports it. Inputs are generated from the model metadata (symbolic dims -1 -> 1)
by the one feed policy (``feeds.plan_feeds``) unless ``feeds`` are given. Latencies become one
``measure.LatencyStats`` per level (``LoadRow.latency``), the same shape as a local bench.

It is a client: it encodes requests with tritonclient and reads the model's signature from the
V2 metadata (``signature.dtype_from_v2``), so it needs nothing of the server package.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from tritonclient.http import InferInput, InferRequestedOutput
from tritonclient.http.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from ..errors import FeedError, InputError, UsageError, one_line
from ..feeds import plan_feeds
from ..measure import LatencyStats
from ..signature import Signature, TensorSpec, dtype_from_v2
from .results import LoadReport, LoadRow, ServerSplit

_COMPUTE = ("compute_input", "compute_infer", "compute_output")
_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_LINE = 240  # characters of an error a report line keeps


def run_load_test(url: str, model: str, **options: Any) -> LoadReport:
    """``load_test`` from synchronous code (a fresh event loop, uvloop when installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(load_test(url, model, **options))
    return uvloop.run(load_test(url, model, **options))


async def load_test(
    url: str,
    model: str,
    *,
    concurrency: Sequence[int],
    binary: bool = True,
    duration_s: float = 5.0,
    version: str | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    warmup_s: float | None = None,
    seed: int = 0,
    timeout_s: float = 60.0,
) -> LoadReport:
    """Throughput, latency percentiles and the server-side split at each concurrency level.

        report = await load_test("http://127.0.0.1:8000", "mlp", concurrency=[1, 8])

    ``warmup_s`` defaults to a fifth of ``duration_s`` (at most 1 s). InputError (one line)
    when the server cannot be reached or has no such model; FeedError when ``feeds`` do not
    fit the model's metadata; failed requests during the run are counted, not raised.
    """
    levels = _levels(concurrency)
    if not duration_s > 0:
        raise UsageError(f"duration must be positive, got {duration_s}", hint="e.g. --duration 5")
    warm = min(1.0, duration_s / 5) if warmup_s is None else warmup_s
    if warm < 0:
        raise UsageError(f"warm-up must be at least 0 s, got {warmup_s}", hint="e.g. 0.5")
    target, ssl = _split_url(url)
    client = InferenceServerClient(target, conn_limit=max(levels), conn_timeout=timeout_s, ssl=ssl)
    try:
        metadata = await _metadata(client, url, model, version)
        signature = signature_from_metadata(metadata)
        arrays = _feeds(signature, feeds, seed)
        inputs = _infer_inputs(arrays, signature, binary)
        outputs = [InferRequestedOutput(s.name, binary_data=binary) for s in signature.outputs]
        report = LoadReport(
            url=url,
            model=model,
            version=version,
            binary=binary,
            duration_s=duration_s,
            warmup_s=warm,
            inputs={i.name(): {"datatype": i.datatype(), "shape": i.shape()} for i in inputs},
        )
        shot = _Shot(client, model, version or "", inputs, outputs, timeout_s)
        for level in levels:
            report.rows.append(await _run_level(shot, level, duration_s, warm, report.notes))
        return report
    finally:
        await client.close()


# --- setup ------------------------------------------------------------------------------


def _levels(concurrency: Sequence[int]) -> list[int]:
    levels = list(concurrency)
    if not levels:
        raise UsageError("no concurrency level given", hint="e.g. --concurrency 1,8,32")
    for c in levels:
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise UsageError(f"concurrency must be a positive integer, got {c!r}", hint="e.g. 8")
    return levels


def _split_url(url: str) -> tuple[str, bool]:
    """("host:port[/prefix]", ssl) for tritonclient, which takes no scheme."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"cannot use server URL {url!r}",
            hint="give it as http://HOST:PORT, e.g. --url http://127.0.0.1:8000",
        )
    return parts.netloc + parts.path.rstrip("/"), parts.scheme == "https"


async def _metadata(
    client: InferenceServerClient, url: str, model: str, version: str | None
) -> dict[str, Any]:
    """The model's V2 metadata; InputError (one line) if the server or the model is missing."""
    try:
        metadata: dict[str, Any] = await client.get_model_metadata(model, version or "")
    except _NETWORK_ERRORS as e:
        raise InputError(
            f"cannot reach a V2 inference server at {url} ({one_line(e, limit=_LINE)})",
            hint="start it (e.g. ferry serve MODEL --port PORT) or fix --url",
        ) from None
    except InferenceServerException as e:
        what = model if version is None else f"{model} version {version}"
        known = await _model_names(client)
        hint = f"the server has {', '.join(known)}" if known else "check the model name"
        raise InputError(
            f"the server at {url} has no model {what} ({_server_message(e)})", hint=hint
        ) from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("inputs"), list):
        raise InputError(
            f"the server at {url} answered model metadata without an inputs list",
            hint="point --url at a KServe V2 (Open Inference Protocol) server",
        )
    return metadata


async def _model_names(client: InferenceServerClient) -> list[str]:
    """Model names from the repository index, when the server offers it (best effort)."""
    try:
        index = await client.get_model_repository_index()
    except (InferenceServerException, *_NETWORK_ERRORS):
        return []
    if not isinstance(index, list):
        return []
    return sorted({str(m["name"]) for m in index if isinstance(m, dict) and "name" in m})


def signature_from_metadata(metadata: Mapping[str, Any]) -> Signature:
    """A Signature from V2 model metadata; -1 dims become unknown (None)."""

    def specs(key: str) -> tuple[TensorSpec, ...]:
        out = []
        for t in metadata.get(key) or []:
            shape = tuple(None if int(d) < 0 else int(d) for d in t["shape"])
            out.append(TensorSpec(str(t["name"]), dtype_from_v2(str(t["datatype"])), shape))
        return tuple(out)

    try:
        return Signature(specs("inputs"), specs("outputs"))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(
            f"the server's model metadata is malformed ({one_line(e, limit=_LINE)})",
            hint="point --url at a KServe V2 (Open Inference Protocol) server",
        ) from None


def _feeds(
    signature: Signature, feeds: Mapping[str, np.ndarray] | None, seed: int
) -> dict[str, np.ndarray]:
    if feeds is None:
        return plan_feeds(signature).feeds(seed)  # no graph here: first candidates, not probed
    signature.validate(feeds)
    return dict(feeds)


def _infer_inputs(
    arrays: Mapping[str, np.ndarray], signature: Signature, binary: bool
) -> list[InferInput]:
    inputs = []
    for spec in signature.inputs:
        array = arrays[spec.name]
        tensor = InferInput(spec.name, list(array.shape), str(spec.v2_datatype))
        try:
            tensor.set_data_from_numpy(array, binary_data=binary)
        except InferenceServerException as e:
            hint = "drop --json" if not binary else "give feeds that match the model"
            why = one_line(e.message() or e, limit=_LINE)
            raise FeedError(f"input {spec.name!r}: {why}", hint=hint) from None
        inputs.append(tensor)
    return inputs


# --- the run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shot:
    """Everything one request needs; the InferInput objects are only read, so workers share
    them."""

    client: InferenceServerClient
    model: str
    version: str
    inputs: list[InferInput]
    outputs: list[InferRequestedOutput]
    timeout_s: float


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    last_success: float = 0.0  # perf_counter() when the last successful request returned


async def _worker(shot: _Shot, deadline: float, tally: _Tally) -> None:
    clock = time.perf_counter
    append = tally.latencies.append
    while clock() < deadline:
        t0 = clock()
        try:
            await shot.client.infer(
                shot.model, shot.inputs, model_version=shot.version, outputs=shot.outputs
            )
        except (InferenceServerException, *_NETWORK_ERRORS) as e:
            tally.errors += 1
            if tally.first_error is None:
                tally.first_error = (
                    f"no response within {shot.timeout_s:g} s"
                    if isinstance(e, asyncio.TimeoutError)
                    else _error_text(e)
                )
            if not isinstance(e, InferenceServerException):
                await asyncio.sleep(0.01)  # a dead server fails fast; do not spin
            continue
        tally.last_success = clock()
        append(tally.last_success - t0)


async def _run_level(
    shot: _Shot, concurrency: int, duration_s: float, warmup_s: float, notes: list[str]
) -> LoadRow:
    if warmup_s > 0:
        deadline = time.perf_counter() + warmup_s
        await asyncio.gather(*(_worker(shot, deadline, _Tally()) for _ in range(concurrency)))
    before = await _statistics(shot, notes)
    tallies = [_Tally() for _ in range(concurrency)]
    start = time.perf_counter()
    deadline = start + duration_s
    await asyncio.gather(*(_worker(shot, deadline, t) for t in tallies))
    wall = time.perf_counter() - start
    after = await _statistics(shot, notes) if before is not None else None
    server = server_split(before, after, shot.model) if before and after else None

    latencies = [x for t in tallies for x in t.latencies]
    # Throughput over the window the successes span, so one request stuck until the client
    # timeout (counted as an error) does not dilute it.
    span = max((t.last_success for t in tallies), default=0.0) - start
    errors = sum(t.errors for t in tallies)
    first_error = next((t.first_error for t in tallies if t.first_error), None)
    return LoadRow(
        concurrency=concurrency,
        errors=errors,
        wall_s=wall,
        latency=LatencyStats.from_seconds(latencies, span) if latencies else None,
        server=server,
        first_error=first_error,
    )


async def _statistics(shot: _Shot, notes: list[str]) -> dict[str, Any] | None:
    """The statistics-extension answer, or None (noted once) when the server has none."""
    try:
        stats: dict[str, Any] = await shot.client.get_inference_statistics(shot.model, shot.version)
    except (InferenceServerException, *_NETWORK_ERRORS) as e:
        if isinstance(e, InferenceServerException):
            why = _server_message(e)
        else:
            why = one_line(e, limit=_LINE)
        note = f"no server-side queue/compute split: GET /v2/models/{shot.model}/stats: {why}"
        if note not in notes:
            notes.append(note)
        return None
    return stats


def server_split(
    before: Mapping[str, Any], after: Mapping[str, Any], model: str
) -> ServerSplit | None:
    """Per-request server time between two statistics answers (every version of ``model``
    summed), or None if the server counted no successful request in between."""
    a, b = _totals(before, model), _totals(after, model)
    d = {k: b[k] - a[k] for k in a}
    if d["success_count"] <= 0:
        return None

    def per_request(key: str) -> float:
        count = d[f"{key}_count"] or d["success_count"]
        return d[f"{key}_ns"] / count / 1e6

    return ServerSplit(
        requests=int(d["inference_count"] or d["success_count"]),
        executions=int(d["execution_count"]),
        queue_ms=per_request("queue"),
        compute_input_ms=per_request("compute_input"),
        compute_infer_ms=per_request("compute_infer"),
        compute_output_ms=per_request("compute_output"),
    )


def _totals(stats: Mapping[str, Any], model: str) -> dict[str, int]:
    totals = dict.fromkeys(
        ["inference_count", "execution_count", "success_count", "success_ns"]
        + [f"{k}_{u}" for k in ("queue", *_COMPUTE) for u in ("count", "ns")],
        0,
    )
    for entry in stats.get("model_stats") or []:
        if entry.get("name") != model:
            continue
        totals["inference_count"] += int(entry.get("inference_count", 0))
        totals["execution_count"] += int(entry.get("execution_count", 0))
        inference = entry.get("inference_stats") or {}
        for key in ("success", "queue", *_COMPUTE):
            item = inference.get(key) or {}
            totals[f"{key}_count"] += int(item.get("count", 0))
            totals[f"{key}_ns"] += int(item.get("ns", 0))
    return totals


def _server_message(error: InferenceServerException) -> str:
    """The server's error message, or "HTTP <status>" when its body had no V2 error field
    (tritonclient then reports its own decoding failure instead)."""
    text = (error.message() or "").strip()
    message = one_line(text, limit=_LINE) if text else ""
    if error.status() and (not message or message.startswith("an exception occurred")):
        return f"HTTP {error.status()}"
    return message or f"HTTP {error.status()}"


def _error_text(error: BaseException) -> str:
    if not isinstance(error, InferenceServerException):
        return one_line(error, limit=_LINE)
    message = _server_message(error)
    status = error.status()
    return f"HTTP {status}: {message}" if status and not message.startswith("HTTP") else message
