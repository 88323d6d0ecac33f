"""Every verb on TensorFlow 1 training checkpoints nobody here wrote: musicnn's four taggers
(TF 1.13, shipped inside its wheel as ``.meta``, ``.index`` and ``.data-*``), each through
``ferry convert FOLDER``, then the verbs of ``real_models.py``, one Markdown row each.

    .venv/bin/python benchmarks/tf1_checkpoints.py [--only MTT_musicnn,MSD_vgg]

Each graph holds the model and its training: Adam, gradients (2896 nodes for the musicnn
ones), a sigmoid cross-entropy on a labels placeholder, an ``is_training`` placeholder that
switches every batch norm and dropout through TF1 ``tf.cond``s. The spectrogram fed is what
musicnn computes from audio: log(1 + 10000 mel), 187 frames of 96 bands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.real_models

from tests.real_models import SAVEDMODEL_WHEELS, WheelFile, fetch_wheel_model

TAGGERS = ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg")
"""musicnn's checkpoints: MagnaTagATune's 50 tags or the Million Song Dataset's, by its own
musically motivated CNN or a VGG."""


def checkpoint(name: str) -> Path:
    """The checkpoint's folder, fetched from musicnn's wheel (cached)."""
    known = SAVEDMODEL_WHEELS["musicnn_mtt"]
    spec = WheelFile(f"musicnn_{name}", known.requirement, known.sha256, f"musicnn/{name}/")
    return fetch_wheel_model(spec)


def main(argv: list[str] | None = None) -> int:
    import real_models as rm  # benchmarks/ is on the path when this file runs as a script

    args = rm.table_arguments(__doc__, "MTT_musicnn,MSD_vgg", "build/tf1-checkpoints", argv)
    rng = np.random.default_rng(0)

    def arguments(name: str) -> list[object]:
        return [checkpoint(name)]

    def spectrogram(shape: list[int]) -> np.ndarray:
        return 3 * rng.random(shape)

    names = args.names or list(TAGGERS)
    return rm.convert_table("checkpoint", names, arguments, rm.one_input(spectrogram), args)


if __name__ == "__main__":
    sys.exit(main())
