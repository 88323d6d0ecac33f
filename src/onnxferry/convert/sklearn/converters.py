"""Converters ferry adds to skl2onnx, for estimators it has none for.

    register_target_regressor()   # before convert_sklearn, when a pipeline holds one

``TransformedTargetRegressor`` (a regressor fitted on a transformed target, its predictions
mapped back): the inner regressor through skl2onnx, then the inverse of the target's
transform as ONNX operators. The inverses written: a scaler's (``StandardScaler``,
``MinMaxScaler``, ``MaxAbsScaler``: affine) and the inverse functions of the usual pairs
(``np.expm1`` for ``np.log1p``, ``np.exp`` for ``np.log``, ``np.square`` for ``np.sqrt``,
none). Any other inverse is refused by name; the verification judges the rest.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


@functools.cache
def register_target_regressor() -> None:
    """Register ``convert_transformed_target`` for TransformedTargetRegressor, once."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes
    from sklearn.compose import TransformedTargetRegressor

    update_registered_converter(
        TransformedTargetRegressor,
        "OnnxferryTransformedTargetRegressor",
        calculate_linear_regressor_output_shapes,
        convert_transformed_target,
    )


def convert_transformed_target(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx's converter for a fitted TransformedTargetRegressor (see the module)."""
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
    from skl2onnx.algebra.onnx_ops import OnnxIdentity
    from skl2onnx.common.data_types import guess_numpy_type

    model = operator.raw_operator
    version = container.target_opset
    dtype = guess_numpy_type(operator.inputs[0].type)
    predicted = OnnxSubEstimator(model.regressor_, operator.inputs[0], op_version=version)
    inverse = _inverse(model.transformer_, predicted, dtype, version)
    result = OnnxIdentity(inverse, op_version=version, output_names=operator.outputs[:1])
    result.add_to(scope, container)


def _inverse(transformer: Any, y: Any, dtype: Any, version: int) -> Any:
    """``transformer.inverse_transform`` of ``y`` as ONNX operators; RuntimeError naming it
    when it has none here."""
    from skl2onnx.algebra.onnx_ops import OnnxAdd, OnnxDiv, OnnxExp, OnnxMul, OnnxSub

    def constant(value: Any) -> np.ndarray:
        return np.asarray(value, dtype=dtype).reshape(1, -1)

    name = type(transformer).__name__
    if name == "StandardScaler":
        if transformer.scale_ is not None:
            y = OnnxMul(y, constant(transformer.scale_), op_version=version)
        if transformer.mean_ is not None:
            y = OnnxAdd(y, constant(transformer.mean_), op_version=version)
        return y
    if name == "MinMaxScaler":
        shifted = OnnxSub(y, constant(transformer.min_), op_version=version)
        return OnnxDiv(shifted, constant(transformer.scale_), op_version=version)
    if name == "MaxAbsScaler":
        return OnnxMul(y, constant(transformer.scale_), op_version=version)
    if name == "FunctionTransformer":
        inverse = transformer.inverse_func
        if inverse is None:
            return y
        if inverse is np.exp:
            return OnnxExp(y, op_version=version)
        if inverse is np.expm1:
            return OnnxSub(OnnxExp(y, op_version=version), constant(1.0), op_version=version)
        if inverse is np.square:
            return OnnxMul(y, y, op_version=version)
        label = getattr(inverse, "__name__", repr(inverse))
        raise RuntimeError(
            f"the inverse_func {label} of the TransformedTargetRegressor has no ONNX form "
            "here (np.exp, np.expm1, np.square and none have)"
        )
    raise RuntimeError(
        f"the target transformer {name} of the TransformedTargetRegressor has no ONNX inverse "
        "here (StandardScaler, MinMaxScaler, MaxAbsScaler and func/inverse_func pairs have)"
    )
