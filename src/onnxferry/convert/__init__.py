"""Convert a trained model to ONNX, verified against the source framework.

    model = onnxferry.convert(module, "model.onnx", inputs=[{"x": x}])
    report = model.last_report(Conversion)  # a Report[Conversion]: report.result.chosen, ...
    print(report.to_text())

One module per source framework (torch, keras (with TF SavedModel), tflite, sklearn, onnx)
builds a ``Source``: a reference runner and the exporters to try; ``dispatch`` verifies them.
"""

from .against import compare_to_source
from .base import FRAMEWORKS, Candidate, ConversionError, ConvertOptions, ParityFailure, Source
from .dispatch import Conversion, convert, detect_framework
from .factory import is_factory

__all__ = [
    "FRAMEWORKS",
    "Candidate",
    "Conversion",
    "ConversionError",
    "ConvertOptions",
    "ParityFailure",
    "Source",
    "compare_to_source",
    "convert",
    "detect_framework",
    "is_factory",
]
