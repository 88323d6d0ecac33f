"""Convert a trained model to ONNX, verified against the source framework.

    model = onnxferry.convert(module, "model.onnx", inputs=[{"x": x}])
    print(model.provenance[-1].to_text())

One module per source framework (torch, keras (with TF SavedModel), tflite, sklearn, onnx)
builds a ``Source``: a reference runner and the exporters to try; ``dispatch`` verifies them.
"""

from .base import Candidate, ConversionError, ConvertOptions, ParityFailure, Source
from .dispatch import FRAMEWORKS, Conversion, convert, detect_framework

__all__ = [
    "FRAMEWORKS",
    "Candidate",
    "Conversion",
    "ConversionError",
    "ConvertOptions",
    "ParityFailure",
    "Source",
    "convert",
    "detect_framework",
]
