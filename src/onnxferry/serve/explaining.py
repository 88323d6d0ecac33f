"""The explain endpoint: attributions for a request's rows, computed by the served version.

    POST /v2/models/tabular/explain
    {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [...]}],
     "parameters": {"method": "kernelshap", "target": 1, "max_evals": 4000}}
    -> outputs "attributions" (FP32, shaped like the explained input), "base_values" and
       "scores" (FP32, one per row); for texts (a string per row, explained word by word)
       "attributions" is [rows, words] and "words" (BYTES, the same shape) names each place;
       for a table model (one [rows, 1] input per column) "attributions" is [rows, columns]
       and "columns" (BYTES) names them

The body is an infer request, read, decoded and validated exactly as infer's (same limits,
same auth). Its ``parameters`` choose the explanation (``ExplainRequest``): ``method`` (one of
``explain.METHODS``), ``input`` (the input explained; default the first), ``target`` (a class
index, an output name or ``OUTPUT:INDEX``), ``max_evals``, ``samples``, ``segments``,
``window``, ``seed``, ``kind`` (image, tabular, tokens, signal, text or volume, where the
input's shape cannot tell); ``background`` is not taken (SHAP uses the request's own rows, or
zeros).

Every perturbation runs through the version's executor (``ExecutorSession``): its batcher,
queue limit, response cache and memory budget apply, in requests of at most its
``max_batch_size`` rows. The server caps the rows evaluated at ``explain_max_evals`` and the
time at the request's deadline (its ``timeout``, the model's, the server's), itself capped at
``explain_timeout_s``: an explanation that cannot finish in time is 504, one that needs more
evaluations than allowed is 400 with the number it needed. At most ``explain_concurrency``
explanations run at once (one more: 503 with Retry-After). Each answered explanation is
counted in ``ferry_explanations_total`` and its evaluations and seconds beside it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FerryError, InputError, RunError
from .asgi import HttpError
from .endpoint import Call, Reply, error_text
from .executor import ExecutionError
from .infer import Done, Inference, RestExchange
from .protocol import InferRequest
from .versions import ModelVersion

PARAMETERS: dict[str, type | tuple[type, ...]] = {
    "method": str,
    "input": str,
    "target": (int, str),
    "max_evals": int,
    "samples": int,
    "segments": int,
    "window": int,
    "seed": int,
    "kind": str,
}
"""Request parameters the endpoint reads, and their JSON types (others, e.g. ``timeout``,
belong to the request as a whole)."""
DEFAULT_METHOD = "kernelshap"
_OPTION = re.compile(r"--([a-z][a-z-]*)")


def as_parameters(text: str) -> str:
    """An explain error's hint as a client of the endpoint gives it: ``--kind signal`` (the
    command line's option) is ``parameters.kind signal``; options with no parameter stay."""

    def parameter(match: re.Match[str]) -> str:
        name = match.group(1).replace("-", "_")
        return f"parameters.{name}" if name in PARAMETERS else match.group(0)

    return _OPTION.sub(parameter, text)


@dataclass(frozen=True)
class ExplainRequest:
    """What one request asks to explain, from its ``parameters`` (``parse``)."""

    method: str = DEFAULT_METHOD
    input: str | None = None
    target: int | str | None = None
    max_evals: int | None = None
    samples: int | None = None
    segments: int = 50
    window: int | None = None
    seed: int = 0
    kind: str | None = None

    @classmethod
    def parse(cls, parameters: Mapping[str, Any]) -> ExplainRequest:
        """The parameters checked for type (400 with the parameter's name when wrong)."""
        from ..explain import METHODS

        values: dict[str, Any] = {}
        for key, kind in PARAMETERS.items():
            if key not in parameters:
                continue
            value = parameters[key]
            if isinstance(value, bool) or not isinstance(value, kind):
                names = (
                    kind.__name__
                    if isinstance(kind, type)
                    else " or ".join(k.__name__ for k in kind)
                )
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
                raise HttpError(400, f"parameter {key} must be {names}, got {shown}", "")
            values[key] = value
        method = values.get("method", DEFAULT_METHOD)
        if method not in METHODS:
            raise HttpError(400, f"unknown method {method!r}; use one of {', '.join(METHODS)}", "")
        for key in ("max_evals", "samples", "segments", "window"):
            if key in values and values[key] < 1:
                raise HttpError(400, f"parameter {key} must be at least 1", "")
        return cls(**values)


class Explaining:
    """The explain endpoint (the app's "explain" route): infer's path (``Inference.answer``)
    with an explanation as its work."""

    def __init__(self, inference: Inference) -> None:
        self.inference = inference
        self.settings = inference.settings
        self.running = 0

    async def __call__(self, call: Call) -> Reply:
        exchange = RestExchange(self.inference, call)
        start = time.monotonic()
        _, label = await self.inference.answer(call.model, call.version, exchange, start, self.work)
        return 200, call.model, label

    async def work(
        self, served: ModelVersion, request: InferRequest, deadline: float | None
    ) -> Done:
        """Explain the request's rows within the server's caps; the outputs and the count."""
        wanted = ExplainRequest.parse(request.parameters)
        cap = time.monotonic() + self.settings.explain_timeout_s
        deadline = cap if deadline is None else min(deadline, cap)
        if self.running >= self.settings.explain_concurrency:
            text = f"{self.running} explanations are running (the server's limit); retry later"
            raise HttpError(503, text, "busy", ((b"retry-after", b"1"),))
        self.running += 1
        try:
            outputs, evaluations = await explain_served(
                served,
                request.inputs,
                wanted,
                deadline=deadline,
                max_evals=self.settings.explain_max_evals,
            )
        finally:
            self.running -= 1
        metrics = self.inference.metrics

        def count(seconds: float) -> None:
            metrics.explained(
                served.name, served.version, wanted.method, seconds=seconds, evaluations=evaluations
            )

        return Done(outputs, count)


class ExecutorSession:
    """The slice of an ONNX Runtime session that ``explain`` calls (``run``), answered by a
    served version's executor from a worker thread: each call is one request on the event
    loop, with the explanation's deadline."""

    def __init__(
        self, served: ModelVersion, loop: asyncio.AbstractEventLoop, deadline: float | None
    ) -> None:
        self.served = served
        self.loop = loop
        self.deadline = deadline

    def run(
        self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray], _: Any = None
    ) -> list[np.ndarray]:
        names = list(output_names) if output_names else None
        job = self.served.executor.infer(dict(feeds), output_names=names, deadline=self.deadline)
        try:
            result = asyncio.run_coroutine_threadsafe(job, self.loop).result()
        except ExecutionError as e:  # as ONNX Runtime's own session says it (explain probes)
            raise RunError(e.message, hint=e.hint) from e
        wanted = names or list(result.outputs)
        return [result.outputs[name] for name in wanted]


async def explain_served(
    served: ModelVersion,
    inputs: Mapping[str, np.ndarray],
    wanted: ExplainRequest,
    *,
    deadline: float | None,
    max_evals: int,
) -> tuple[dict[str, np.ndarray], int]:
    """Explain ``inputs`` (validated against the version's signature) on ``served``: the V2
    outputs and the rows evaluated. ``deadline`` is a ``time.monotonic()`` time; ``max_evals``
    the server's cap."""
    from ..explain import BudgetExceeded, MethodUnavailable, explain

    evals = min(wanted.max_evals or max_evals, max_evals)
    seconds = None if deadline is None else deadline - time.monotonic()
    if seconds is not None and seconds <= 0:
        raise HttpError(504, "the request's deadline passed before the explanation began", "")
    session = ExecutorSession(served, asyncio.get_running_loop(), deadline)
    config = served.config
    batching = config.max_batch_size > 0
    try:
        explanation = await asyncio.to_thread(
            explain,
            served.model,
            dict(inputs),
            wanted.method,
            input_name=wanted.input,
            target=wanted.target,
            max_evals=evals,
            deadline=seconds,
            batch_size=config.max_batch_size if batching else None,
            samples=wanted.samples,
            segments=wanted.segments,
            window=wanted.window,
            seed=wanted.seed,
            kind=wanted.kind,
            session=session,
        )
    except BudgetExceeded as e:
        late = deadline is not None and time.monotonic() >= deadline
        raise HttpError(504 if late else 400, error_text(e), "deadline" if late else "") from None
    except MethodUnavailable as e:
        raise HttpError(400, error_text(e), "") from None
    except FerryError as e:
        if deadline is not None and time.monotonic() >= deadline:
            raise HttpError(504, error_text(e), "deadline") from None
        if isinstance(e, InputError):
            raise HttpError(400, as_parameters(error_text(e)), "bad_request") from None
        raise
    if not explanation.complete:
        done = len(explanation.attributions)
        text = f"explained {done} of {explanation.requested} rows before the deadline"
        raise HttpError(504, f"{text}; send fewer rows or a longer timeout", "deadline")
    outputs = {
        "attributions": explanation.attributions.astype(np.float32),
        "base_values": explanation.base_values.astype(np.float32),
        "scores": np.asarray(explanation.scores, np.float32),
    }
    if explanation.words is not None:  # "" after a shorter text's last word
        outputs["words"] = np.asarray(explanation.words, dtype=object)[explanation.inputs]
    if explanation.table is not None:
        outputs["columns"] = np.asarray(explanation.table.columns, dtype=object)
    return outputs, explanation.evaluations
