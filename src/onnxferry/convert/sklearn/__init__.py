"""scikit-learn estimators and pipelines to ONNX through skl2onnx, verified against predict.

    source = load_sklearn(pipeline, ConvertOptions())                      # a fitted estimator
    source = load_sklearn("model.joblib", ConvertOptions(trust_pickle=True))  # or a saved one
    source.reference.run({"input": x})          # {"label": ..., "probabilities": ...}
    source.candidates[0].export(Path("model.onnx"))

The ONNX model has one input, "input" [batch, n_features] (a text pipeline's: one string per
row, [batch]; a table pipeline's: one [batch, 1] input per DataFrame column), and skl2onnx's
outputs: a
classifier gives "label" [batch] (int64, or string for string classes) and "probabilities"
[batch, n_classes] (predict_proba; decision_function scores for a classifier without it); a
regressor gives "variable" [batch, n_targets]; an outlier detector "label" (-1 or 1) and
"scores" (decision_function); a clusterer "label" and "scores" (distances) or
"probabilities" (a mixture's); a transformer "variable" (transform). ``SklearnRunner``
returns the same names, shapes and dtypes from the same methods (``tasks``), so the two
compare directly.

The element type (the float64 rule), decided once at load:

1. Sample inputs given: their dtype, float32 or float64 (the user's data says how the model
   is fed; float64 samples mean a float64 model, DoubleTensorType end to end).
2. Otherwise a classifier is float32: its probabilities lie in [0, 1], where float32's
   ~1e-7 rounding stays far inside the 1e-4 tolerance.
3. Otherwise a regressor (or an outlier detector, clusterer or transformer, by its scores,
   distances or transform) is float64 when its outputs change as its inputs are rounded to
   float32 (probed on generated rows): it then computes in float64 (linear, kernel and
   neighbour models; not trees, which round their inputs to float32 themselves), and its
   outputs are in the user's units, where float32 loses digits wherever large terms cancel.
   The probe cannot know the data's scale, so any change counts. Else float32.

When rule 3 picks float64 but skl2onnx or ONNX Runtime cannot run the estimator in float64
(e.g. SVR, tree ensembles with skl2onnx 1.20), the export falls back to float32 and
``details["dtype_reason"]`` says why; float64 samples (rule 1) turn the same into a
ConversionError. A pickle or joblib file runs code as it loads, so a path is loaded only
with ``trust_pickle``.

The modules: ``source`` (``load_sklearn``, ``SklearnRunner``, the tolerances),
``estimators`` (the estimator or trusted pickle, its task and steps), ``tasks`` (what it
does and which method gives each output), ``boosters`` and ``booster_files`` (LightGBM and
XGBoost), ``inputs`` (the input and the float64 rule), ``text`` (text pipelines), ``table``
(table pipelines) and ``export`` (skl2onnx, tidied and checked). They share their working
parts by public
names; this ``__init__`` is the boundary.
"""

from __future__ import annotations

from .estimators import describe_estimator
from .inputs import INPUT
from .source import FLOAT32_TOLERANCE, FLOAT64_TOLERANCE, SklearnRunner, load_sklearn

__all__ = [
    "FLOAT32_TOLERANCE",
    "FLOAT64_TOLERANCE",
    "INPUT",
    "SklearnRunner",
    "describe_estimator",
    "load_sklearn",
]
