"""onnxferry: carry a trained model to a fast, verified, signed ONNX deployment."""

from __future__ import annotations

__version__ = "0.1.0"
