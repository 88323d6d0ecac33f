"""The bundled example's source model in PyTorch: `make demo` converts it with

    ferry convert examples/tiny_classifier/model.py:build -o build/demo/model.onnx

It is the same function as examples/tiny_classifier/model.onnx (same weights, drawn from a
seeded numpy generator by ``weights``), so the golden data next to this file, computed
by the ONNX reference implementation, judges the converted model too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CLASSES = 10


def weights(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """conv weight [8, 3, 3, 3], conv bias [8], fc weight [classes, 8], fc bias [classes]."""
    rng = np.random.default_rng(seed)
    conv_w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    conv_b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    fc_w = (rng.standard_normal((CLASSES, 8)) * 0.5).astype(np.float32)
    fc_b = (rng.standard_normal(CLASSES) * 0.1).astype(np.float32)
    return conv_w, conv_b, fc_w, fc_b


def build() -> tuple[Any, tuple[Any, ...]]:
    """The module and an example input: Conv -> ReLU -> global average pool -> Linear -> softmax."""
    import torch

    conv_w, conv_b, fc_w, fc_b = weights()

    class TinyClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, conv_w.shape[0], 3, padding=1)
            self.fc = torch.nn.Linear(fc_w.shape[1], fc_w.shape[0])

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            features = torch.relu(self.conv(image)).mean(dim=(2, 3))
            return torch.softmax(self.fc(features), dim=-1)

    module = TinyClassifier().eval()
    state = {"conv.weight": conv_w, "conv.bias": conv_b, "fc.weight": fc_w, "fc.bias": fc_b}
    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return module, (torch.zeros(2, 3, 16, 16),)
