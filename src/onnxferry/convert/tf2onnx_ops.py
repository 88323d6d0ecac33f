"""TensorFlow ops tf2onnx has no handler for, written here in ONNX ops it has.

    register_missing_ops()      # once per process, before a tf2onnx conversion

- ``Erfc``: ``1 - Erf(x)``. TensorFlow's exact GELU (``tf.nn.gelu(approximate=False)``,
  Keras 3's ``activation="gelu"``) is ``0.5 * x * erfc(-x / sqrt(2))``, so every Keras model
  with an exact GELU (ViT, BERT-style encoders) stopped at it. Where erfc is below float32's
  step next to 1 (x > 3.9), ``1 - erf`` is 0; inside a GELU that is a difference of at most
  ``x * 1e-8``.

Handlers go into tf2onnx's own registry (``tf2onnx.handler.tf_op``), which every tf2onnx
entry point reads, Keras' ``model.export(format="onnx")`` included.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def register_missing_ops() -> None:
    """Add this module's handlers to tf2onnx's registry (idempotent)."""
    from tf2onnx.handler import tf_op

    tf_op("Erfc")(_Erfc)


class _Erfc:
    @classmethod
    def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:  # Erf: opset 9
        import numpy as np
        from tf2onnx import utils

        x = node.input[0]
        dtype = ctx.get_dtype(x)
        one = ctx.make_const(
            utils.make_name(f"{node.name}_one"), np.array(1, utils.map_onnx_to_numpy_type(dtype))
        )
        erf = ctx.make_node("Erf", [x], shapes=[ctx.get_shape(x)], dtypes=[dtype])
        ctx.replace_inputs(node, [one.output[0], erf.output[0]])
        node.type = "Sub"
