"""Every verb on Keras's own image networks (``keras.applications``, random weights, built here):
``ferry convert`` of a saved ``.keras`` file, then the verbs of ``real_models.py``, one Markdown
row each.

    .venv/bin/python benchmarks/keras_applications.py [--only mobilenet_v3_small,convnext_tiny]

The networks are Keras's classes at small input sizes, with ``weights=None`` (nothing is
downloaded) and their preprocessing inside the model where Keras puts it (MobileNetV3's
Rescaling, EfficientNet's and ConvNeXt's Normalization): hard-swish, squeeze-and-excite,
depthwise and separable convolutions, LayerScale, NASNet's cells, Inception's branches.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

NETWORKS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "mobilenet_v3_small": ("MobileNetV3Small", 96, {}),
    "mobilenet_v2": ("MobileNetV2", 96, {"alpha": 0.35}),
    "efficientnet_b0": ("EfficientNetB0", 64, {}),
    "efficientnet_v2_b0": ("EfficientNetV2B0", 64, {}),
    "convnext_tiny": ("ConvNeXtTiny", 64, {}),
    "densenet121": ("DenseNet121", 64, {}),
    "resnet50_v2": ("ResNet50V2", 64, {}),
    "nasnet_mobile": ("NASNetMobile", 64, {}),
    "xception": ("Xception", 71, {}),
    "inception_v3": ("InceptionV3", 75, {}),
}
"""name -> (keras.applications class, its square input side, other arguments)."""


def save(name: str, folder: Path) -> Path:
    """The network saved as ``folder/NAME.keras`` (10 classes, softmax, seeded weights)."""
    import keras

    keras.utils.set_random_seed(0)
    cls, side, arguments = NETWORKS[name]
    model = getattr(keras.applications, cls)(
        weights=None, input_shape=(side, side, 3), classes=10, **arguments
    )
    path = folder / f"{name}.keras"
    model.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    import real_models as rm  # benchmarks/ is on the path when this file runs as a script

    args = rm.table_arguments(__doc__, "mobilenet_v2,xception", "build/keras-applications", argv)
    rng = np.random.default_rng(0)

    def arguments(name: str) -> list[object]:
        return [save(name, args.workdir)]

    def pixels(shape: list[int]) -> np.ndarray:
        return rng.uniform(0, 255, shape)

    names = args.names or list(NETWORKS)
    return rm.convert_table("network", names, arguments, rm.one_input(pixels), args)


if __name__ == "__main__":
    sys.exit(main())
