"""The ``fuse_transformer`` pass: ONNX Runtime's transformer optimizer (attention, LayerNorm,
GELU and bias fusions) applied before quantizing, so the quantized graph still fuses.

    result = TransformerFusion().apply(model, ctx)   # com.microsoft Attention, SkipLayerNorm
    result.details.get("fused")                      # {"Attention": 6, "BiasGelu": 6}

ORT fuses these patterns online too, but only on the float graph: once int8 Q/DQ or
DynamicQuantizeLinear nodes sit between the parts, the patterns no longer match. Fused
offline first, the quantizer sees Attention (QAttention in dynamic int8) and the normalizations
stay fused. A model without a transformer pattern is left unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..errors import one_line
from ..graphs import inlined
from ..model import Model
from .base import Pass, PassContext, PassError, PassResult, param
from .output import graph_key, save_output

FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "QuickGelu",
    "BiasSoftmax",
    "BiasAdd",
)
"""The com.microsoft operators the fusion writes."""


@dataclass(frozen=True)
class TransformerFusion(Pass):
    """Fuse attention, LayerNorm, GELU and bias patterns with ONNX Runtime's transformer
    optimizer (onnxruntime.transformers.optimizer), ahead of int8 quantization."""

    name: ClassVar[str] = "fuse_transformer"
    family: ClassVar[str] = "graph"
    model_type: Literal["bert", "gpt2", "vit", "clip"] = param(
        "bert", "the optimizer's model type (its fusion patterns)"
    )
    num_heads: int = param(0, "attention heads (0: detected from the graph)")
    hidden_size: int = param(0, "hidden size (0: detected from the graph)")

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxruntime.transformers.optimizer import optimize_model

        from .capture import captured

        proto = inlined(model)
        try:
            with captured():
                optimized = optimize_model(
                    proto,
                    model_type=self.model_type,
                    num_heads=self.num_heads,
                    hidden_size=self.hidden_size,
                    opt_level=0,
                )
        except Exception as e:  # the optimizer raises anything on graphs it does not expect
            raise PassError(f"{self.name}: {one_line(e, line='first')}") from e
        out = optimized.model
        fused: dict[str, Any] = {}
        for node in out.graph.node:
            if node.domain == "com.microsoft" and node.op_type in FUSED_OPS:
                fused[node.op_type] = fused.get(node.op_type, 0) + 1
        if not fused or graph_key(out) == graph_key(model.proto):
            return PassResult(
                model, changed=False, notes=["no attention/LayerNorm/GELU pattern to fuse"]
            )
        if not any(o.domain == "com.microsoft" for o in out.opset_import):
            out.opset_import.add(domain="com.microsoft", version=1)  # the optimizer omits it
        saved = save_output(self.name, out, model, ctx)
        what = ", ".join(f"{n} {op}" for op, n in sorted(fused.items()))
        return PassResult(saved, notes=[f"fused {what}"], details={"fused": fused})
