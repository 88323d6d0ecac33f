"""The flush_denormals pass: the model marked to run with denormal floats flushed to zero.

    FlushDenormals().apply(model, ctx).model   # the same graph, marked

The graph is unchanged; ``denormals.MODEL_KEY`` in its metadata makes every session ferry
creates for it (serve, bench, batch, the search's judge) flush denormals on all of its threads
(``runtime.SessionConfig.flush_denormals`` overrides). Like any pass it is kept only within the
budget and when measurably faster: on padded text, all-MiniLM-L6-v2 ran 1.18x (fp32) and
1.35x (int8) faster on a short sentence, identical outputs; a CNN on digits, no change
(RESULTS.md, "denormals"). With plain ONNX Runtime: the session entry
``session.set_denormal_as_zero`` on the process's first session, run from the thread that
created it (ONNX Runtime sets that thread's mode once, and its own threads per session).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..denormals import MODEL_KEY, flushes
from ..graphs import inlined, set_metadata
from ..model import Model
from .base import Pass, PassContext, PassResult
from .output import save_output


@dataclass(frozen=True)
class FlushDenormals(Pass):
    """Mark the model to run with denormal floats flushed to zero (faster where a model meets
    them, e.g. transformer encoders on padded inputs); the graph is unchanged."""

    name: ClassVar[str] = "flush_denormals"
    family: ClassVar[str] = "runtime"

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        if flushes(model):
            return PassResult(model, changed=False, notes=["the model is marked already"])
        proto = inlined(model)
        set_metadata(proto, {MODEL_KEY: "1"})
        return PassResult(save_output(self.name, proto, model, ctx), notes=[_NOTE])


_NOTE = (
    f"marked {MODEL_KEY}=1: ferry's sessions flush denormals; with plain ONNX Runtime set "
    "session.set_denormal_as_zero on the process's first session"
)
