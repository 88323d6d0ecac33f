"""skl2onnx's export of an estimator, tidied, and checked to load in ONNX Runtime.

    opsets = target_opsets(ConvertOptions())          # {"": 22, "ai.onnx.ml": 3} (today)
    proto = convert_estimator(pipeline, "classification", 4, np.dtype(np.float32), opsets,
                              "batch", False)        # an onnx.ModelProto, or ExportError
    expected_signature(pipeline, "classification", 4, np.dtype(np.float32), "batch")
    library_versions()                                # {"scikit-learn": ..., "skl2onnx": ...}

skl2onnx is given the estimator as it predicts (``prepare.for_export``). A classifier's
probabilities come out as a tensor (no ZipMap); a two-class SVC's scores as its
decision_function, ``[-d, d]`` (skl2onnx's ``raw_scores``); a classifier with neither
predict_proba nor decision_function (hard voting) gives ``label`` alone. Dim 0 of the input
and outputs is named (or fixed) as the batch dim says. An ``ExportError`` names the pipeline
step skl2onnx failed on, and keeps skl2onnx's bare reason for the float64 fallback; one
marked ``refused`` (a booster setting known not to convert) is raised at load.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import FerryError
from ...model import Model
from ...runtime import create_session, runtime_limits
from ...signature import Signature, TensorSpec, dtype_from_numpy
from ..base import ConversionError, ConvertOptions
from .boosters import BoosterError, booster_package, converters_for
from .estimators import describe_estimator, final_step, said, steps_of, walk
from .inputs import INPUT
from .prepare import for_export
from .table import Table
from .text import text_options, text_problem

if TYPE_CHECKING:
    import onnx

_CONVERTER_HINT = (
    "register a converter for it with skl2onnx.update_registered_converter, or replace the "
    "step with one skl2onnx supports"
)


_TEXT_HINT = "fit the vectorizer without stop_words, or with ngram_range=(1, 1), to convert it"


class ExportError(ConversionError):
    """A ConversionError that keeps skl2onnx's (or ONNX Runtime's) bare reason."""

    def __init__(self, message: str, *, hint: str, detail: str, refused: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.detail = detail
        self.refused = refused
        """Known not to convert (a booster setting): nothing to verify, so raised at load."""


def target_opsets(options: ConvertOptions) -> dict[str, int]:
    """``options.opset``, else skl2onnx's latest tested one capped at what ONNX Runtime loads,
    with the ai.onnx.ml opset skl2onnx pairs with it."""
    import skl2onnx

    main = options.opset or min(skl2onnx.get_latest_tested_opset_version(), runtime_limits()[1])
    ml = 3 if main >= 18 else 2 if main >= 15 else 1  # skl2onnx's pairing of the two
    return {"": main, "ai.onnx.ml": ml}


def convert_estimator(
    estimator: Any,
    task: str,
    n_features: int,
    dtype: np.dtype[Any],
    opsets: dict[str, int],
    batch: str | int,
    by_user: bool,
    vectorizer: Any = None,
    table: Table | None = None,
) -> onnx.ModelProto:
    """The ONNX model, checked to load in ONNX Runtime when float64 or text; ExportError if
    not. A text pipeline (``vectorizer`` at its head) takes one string per row; a table
    pipeline one input per column."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        StringTensorType,
    )

    exported = for_export(estimator)
    tensor_type = DoubleTensorType if dtype == np.float64 else FloatTensorType
    initial = [(INPUT, tensor_type([None, n_features]))]
    options: dict[int, dict[str, Any]] = {}
    if table is not None:
        initial = table.initial_types(dtype)
    if vectorizer is not None:
        initial = [(INPUT, StringTensorType([None]))]
        options[id(vectorizer)] = text_options(vectorizer)
        if problem := text_problem(vectorizer):
            raise _step_error(estimator, vectorizer, problem, _TEXT_HINT)
    final = final_step(exported)
    if task == "classification":
        options[id(final)] = {"zipmap": False}  # probabilities as a tensor, not maps
        if _binary_svc_scores(final):  # skl2onnx's default is [d, -d]; sklearn's is [-d, d]
            options[id(final)]["raw_scores"] = True
    try:
        with warnings.catch_warnings():  # scikit-learn's deprecations of what skl2onnx reads
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            proto = _convert(convert_sklearn, exported, initial, opsets, options, final)
    except Exception as e:
        raise _conversion_error(estimator, e, dtype, by_user) from e
    model: onnx.ModelProto = proto
    _tidy(model, batch)
    if task == "classification" and labels_only(estimator):  # hard voting: skl2onnx's vote
        # shares have no reference to be verified against
        kept = [o for o in model.graph.output if o.name != "probabilities"]
        del model.graph.output[:]
        model.graph.output.extend(kept)
    if dtype == np.float64 or vectorizer is not None:
        problem = _ort_problem(model)
        if problem:
            raise _conversion_error(estimator, problem, dtype, by_user)
    return model


def _convert(
    convert_sklearn: Any,
    exported: Any,
    initial: list[tuple[str, Any]],
    opsets: dict[str, int],
    options: dict[int, dict[str, Any]],
    final: Any,
) -> Any:
    """skl2onnx's convert_sklearn; again without the final step's options when it takes
    none (a classifier that gives tensors already)."""
    try:
        return convert_sklearn(
            exported, initial_types=initial, target_opset=opsets, options=options
        )
    except NameError as e:
        if "zipmap" not in str(e):
            raise
        options.pop(id(final))
        return convert_sklearn(
            exported, initial_types=initial, target_opset=opsets, options=options
        )


def labels_only(estimator: Any) -> bool:
    """A classifier with neither predict_proba nor decision_function (a hard-voting
    VotingClassifier): its model gives ``label`` alone."""
    return not (hasattr(estimator, "predict_proba") or hasattr(estimator, "decision_function"))


def _binary_svc_scores(final: Any) -> bool:
    """A two-class SVC / NuSVC without probabilities, whose scores are decision_function."""
    from sklearn.svm import SVC, NuSVC

    if not isinstance(final, (SVC, NuSVC)) or len(getattr(final, "classes_", ())) != 2:
        return False
    return getattr(final, "probability", False) is not True  # "deprecated" in 1.9 when unset


def _conversion_error(
    estimator: Any, error: Exception | str, dtype: np.dtype[Any], by_user: bool
) -> ExportError:
    """One line naming the step skl2onnx failed on (matched by class name in its error)."""
    if isinstance(error, BoosterError):
        refusal = _step_error(estimator, error.estimator, error.reason, error.hint, error.tool)
        refusal.refused = error.known
        return refusal
    text = said(error)
    name = describe_estimator(estimator)
    for path, step in walk(estimator):
        cls = type(step).__name__
        leaf = path and step is not None and not isinstance(step, str) and not steps_of(step)
        if leaf and re.search(rf"\b{re.escape(cls)}\b", text):
            return _step_error(estimator, step, text, _CONVERTER_HINT)
    if dtype == np.float64:
        hint = "pass float32 sample inputs (x.astype(np.float32)) to export in float32"
        if not by_user:
            hint = _CONVERTER_HINT
        return ExportError(
            f"skl2onnx cannot export the {name} in float64: {text}", hint=hint, detail=text
        )
    return ExportError(
        f"skl2onnx cannot convert the {name}: {text}",
        hint=_CONVERTER_HINT + ", or try another opset (--opset)",
        detail=text,
    )


def _step_error(
    estimator: Any, step: Any, reason: str, hint: str, tool: str = "skl2onnx"
) -> ExportError:
    """ "skl2onnx cannot convert step 'path' (Class) of the Pipeline(...): reason", or "...
    convert the Class: reason" when the step is the whole estimator."""
    path = next((p for p, s in walk(estimator) if s is step), "")
    what = f"the {type(step).__name__}"
    if path:
        what = f"step {path!r} ({type(step).__name__}) of the {describe_estimator(estimator)}"
    return ExportError(f"{tool} cannot convert {what}: {reason}", hint=hint, detail=reason)


def _ort_problem(proto: onnx.ModelProto) -> str | None:
    """Why ONNX Runtime cannot load the model (skl2onnx writes some float64 models, and text
    models with a regular expression RE2 rejects, that ONNX Runtime does not load), or None."""
    try:
        create_session(Model.from_proto(proto))
    except FerryError as e:
        return e.message.split(": ", 1)[-1]  # without "onnxruntime cannot load <name>: "
    return None


def _tidy(proto: onnx.ModelProto, batch: str | int) -> None:
    """Name dim 0 of the input and outputs (skl2onnx leaves it unnamed) and drop the
    duplicate opset imports skl2onnx writes."""
    for value in (*proto.graph.input, *proto.graph.output):
        if not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value") and not dims[0].dim_param:
            if isinstance(batch, str):
                dims[0].dim_param = batch
            else:
                dims[0].dim_value = batch
    versions: dict[str, int] = {}
    for opset in proto.opset_import:
        versions[opset.domain] = max(versions.get(opset.domain, 0), int(opset.version))
    del proto.opset_import[:]
    for domain, version in versions.items():
        entry = proto.opset_import.add()
        entry.domain, entry.version = domain, version


def expected_signature(
    estimator: Any,
    task: str,
    n_features: int,
    dtype: np.dtype[Any],
    batch: str | int,
    *,
    text: bool = False,
    table: Table | None = None,
) -> Signature:
    """The signature skl2onnx would give, for a reference whose estimator did not convert."""
    float_type = dtype_from_numpy(dtype)
    inputs: tuple[TensorSpec, ...] = (TensorSpec(INPUT, float_type, (batch, n_features)),)
    if text:
        inputs = (TensorSpec(INPUT, dtype_from_numpy(object), (batch,)),)
    if table is not None:
        inputs = tuple(
            TensorSpec(name, dtype_from_numpy(kind), (batch, 1))
            for name, kind in table.element_types(dtype)
        )
    outputs: tuple[TensorSpec, ...]
    if task == "classification":
        classes = np.asarray(getattr(estimator, "classes_", []))
        label = dtype_from_numpy(object if classes.dtype.kind in "OUS" else np.int64)
        outputs = (
            TensorSpec("label", label, (batch,)),
            TensorSpec("probabilities", float_type, (batch, len(classes))),
        )[: 1 if labels_only(estimator) else 2]
    elif task == "outlier detection":
        outputs = (
            TensorSpec("label", dtype_from_numpy(np.int64), (batch, 1)),
            TensorSpec("scores", float_type, (batch, 1)),
        )
    elif task == "clustering":
        mixture = not hasattr(estimator, "transform")
        clusters = getattr(estimator, "n_components" if mixture else "n_clusters", None)
        outputs = (
            TensorSpec("label", dtype_from_numpy(np.int64), (batch, 1) if mixture else (batch,)),
            TensorSpec("probabilities" if mixture else "scores", float_type, (batch, clusters)),
        )
    elif task == "transformation":
        outputs = (TensorSpec("variable", float_type, (batch, _width(estimator, n_features))),)
    else:
        outputs = (TensorSpec("variable", float_type, (batch, 1)),)
    return Signature(inputs, outputs)


def _width(transformer: Any, n_features: int) -> int | None:
    """How many columns ``transform`` gives (asked of one row of zeros), or None."""
    try:
        return int(np.asarray(transformer.transform(np.zeros((1, n_features)))).shape[1])
    except Exception:  # only the signature's dim: the reference's run shows the real error
        return None


def library_versions(boosters: Sequence[Any] = ()) -> dict[str, str]:
    """The versions of scikit-learn and skl2onnx, for the report; with ``boosters`` (the
    LightGBM / XGBoost / CatBoost estimators inside), theirs and onnxmltools' too."""
    import importlib

    modules = {"scikit-learn": "sklearn", "skl2onnx": "skl2onnx"}
    if "onnxmltools" in converters_for(boosters):
        modules["onnxmltools"] = "onnxmltools"
    modules.update({p: p for p in sorted({booster_package(b) or "" for b in boosters})})
    return {
        name: str(importlib.import_module(module).__version__)  # xgboost is "xgboost-cpu" too
        for name, module in modules.items()
    }
