"""The ``weight_only`` pass: MatMul weights to 4 or 8 bits in blocks (ONNX Runtime's
MatMulNBits), activations stay float; fast where ORT has MatMulNBits kernels (x86 with AVX2).

    result = WeightOnly(bits=4, block_size=32).apply(model, ctx)
    result.details.get("quantized")      # how many MatMuls became MatMulNBits

With ``accuracy_level=4`` ORT computes the product in int8 (fast on VNNI/AMX); 0 lets ORT pick.
``nodes_to_exclude`` keeps named MatMuls in float (the mixed-precision search's decisions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..errors import one_line
from ..graphs import constants_to_initializers, inlined
from ..model import Model
from .base import Pass, PassContext, PassError, PassResult, param
from .output import lifted_weights, save_output


@dataclass(frozen=True)
class WeightOnly(Pass):
    """Quantize MatMul weights to int4/int8 blocks (MatMulNBits); activations stay float."""

    name: ClassVar[str] = "weight_only"
    family: ClassVar[str] = "int8"
    bits: int = param(4, "weight bits: 4 or 8")
    block_size: int = param(32, "weights per scale along the reduction axis (16..256)")
    symmetric: bool = param(True, "symmetric blocks (no zero point)")
    accuracy_level: int = param(0, "compute type: 0 ORT's choice, 1 fp32, 4 int8 (VNNI/AMX)")
    nodes_to_exclude: Sequence[str] = param((), "MatMul node names to keep in float")

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        from .capture import captured

        if self.bits not in (4, 8) or self.accuracy_level not in range(5):
            raise PassError(
                f"{self.name}: bits must be 4 or 8 and accuracy_level 0..4, got {self.bits} "
                f"and {self.accuracy_level}"
            )
        proto = inlined(model)
        lifted = constants_to_initializers(proto.graph)  # the quantizer reads initializers
        try:
            with captured():
                quantizer = MatMulNBitsQuantizer(
                    proto,
                    bits=self.bits,
                    block_size=self.block_size,
                    is_symmetric=self.symmetric,
                    accuracy_level=self.accuracy_level or None,
                    nodes_to_exclude=list(self.nodes_to_exclude),
                )
                quantizer.process()
        except Exception as e:
            raise PassError(f"{self.name}: {one_line(e, line='first')}") from e
        out = quantizer.model.model
        count = sum(1 for n in out.graph.node if n.op_type == "MatMulNBits")
        if not count:
            return PassResult(model, changed=False, notes=["no MatMul with a constant weight"])
        saved = save_output(self.name, out, model, ctx)
        return PassResult(
            saved,
            notes=[
                f"{count} MatMul(s) to {self.bits}-bit blocks of {self.block_size}",
                *lifted_weights(lifted),
            ],
            details={"quantized": count},
        )
