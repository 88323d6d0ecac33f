"""An ONNX graph as a torch module: training (``learn``) and gradients (``explain``) use it.

    from onnxferry.torchgraph import to_torch

    module = to_torch("model.onnx")              # parity vs ONNX Runtime checked
    outputs = module(x=torch.randn(4, 1, 8, 8))  # {output name: tensor}

``module`` builds the ``nn.Module`` and checks it; ``ops`` holds one torch function per ONNX
operator. torch is imported when a module is first built, not by importing this package.
"""

from __future__ import annotations

from .module import Block, UnsupportedOperator, check_parity, run_module, to_torch
from .ops import supported_ops

__all__ = [
    "Block",
    "UnsupportedOperator",
    "check_parity",
    "run_module",
    "supported_ops",
    "to_torch",
]
