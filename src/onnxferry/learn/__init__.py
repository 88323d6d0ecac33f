"""Learning on ONNX models: an ONNX graph as a trainable torch module, fine-tuning it, and
exporting it back verified; federated rounds over several clients' data (``federated``, Flower).

    module = to_torch("model.onnx")            # torch.nn.Module, parity vs ONNX Runtime checked
    module = train_epochs(module, x, y, epochs=3, lr=1e-3)
    tuned = finetune("model.onnx", "train.npz", labels_key="y", epochs=2, output="tuned.onnx")
"""

from __future__ import annotations

from ..torchgraph import Block, UnsupportedOperator, check_parity, to_torch
from .federated import FederatedRun, federated
from .finetune import FinetuneResult, finetune
from .surgery import Head, find_head, freeze_until, new_head, replace_block
from .training import Dataset, TrainConfig, TrainingLog, accuracy, evaluate, fit, train_epochs

__all__ = [
    "Block",
    "Dataset",
    "FederatedRun",
    "FinetuneResult",
    "Head",
    "TrainConfig",
    "TrainingLog",
    "UnsupportedOperator",
    "accuracy",
    "check_parity",
    "evaluate",
    "federated",
    "find_head",
    "finetune",
    "fit",
    "freeze_until",
    "new_head",
    "replace_block",
    "to_torch",
    "train_epochs",
]
