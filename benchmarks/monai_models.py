"""Every verb on MONAI's medical-imaging networks (2D and 3D, random weights, built here):
``ferry convert`` from a factory, then the verbs of ``real_models.py``, one Markdown row each.

    .venv/bin/python -m pip install --no-deps --target build/monai monai==1.6.1 einops==0.8.2
    PYTHONPATH=build/monai .venv/bin/python benchmarks/monai_models.py [--only unet3d,vnet3d]

MONAI is not in the lock files: it is installed beside the project, into a folder of its own,
only for this run. The networks are small settings of MONAI's own classes (nobody here wrote
them): U-Nets, SegResNet, DynUNet, UNETR and SwinUNETR (transformers over 3D patches), VNet,
HighResNet, DenseNet-121, EfficientNet-B0 and a ViT classifier, on single-channel volumes of
32^3 (SwinUNETR 64^3: its bottleneck's InstanceNorm needs more than one voxel) or images.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

NETWORKS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "basicunet2d": ("BasicUNet", "x=1x1x64x64",
                    {"spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                     "features": (8, 8, 16, 32, 64, 8)}),
    "unet3d": ("UNet", "x=1x1x32x32x32",
               {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": (8, 16, 32),
                "strides": (2, 2), "num_res_units": 1}),
    "segresnet3d": ("SegResNet", "x=1x1x32x32x32",
                    {"spatial_dims": 3, "init_filters": 8, "in_channels": 1, "out_channels": 2}),
    "dynunet3d": ("DynUNet", "x=1x1x32x32x32",
                  {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                   "kernel_size": [3, 3, 3], "strides": [1, 2, 2], "upsample_kernel_size": [2, 2],
                   "filters": [8, 16, 32]}),
    "unetr3d": ("UNETR", "x_in=1x1x32x32x32",
                {"in_channels": 1, "out_channels": 2, "img_size": (32, 32, 32), "feature_size": 8,
                 "hidden_size": 96, "mlp_dim": 192, "num_heads": 4}),
    "swinunetr3d": ("SwinUNETR", "x_in=1x1x64x64x64",
                    {"in_channels": 1, "out_channels": 2, "feature_size": 12, "spatial_dims": 3}),
    "vnet3d": ("VNet", "x=1x1x32x32x32", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}),
    "highresnet3d": ("HighResNet", "x=1x1x16x16x16",
                     {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}),
    "attentionunet2d": ("AttentionUnet", "x=1x1x64x64",
                        {"spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                         "channels": (8, 16, 32), "strides": (2, 2)}),
    "densenet2d": ("DenseNet121", "x=1x1x64x64",
                   {"spatial_dims": 2, "in_channels": 1, "out_channels": 3}),
    "efficientnet2d": ("EfficientNetBN", "inputs=1x3x64x64",
                       {"model_name": "efficientnet-b0", "pretrained": False, "spatial_dims": 2,
                        "in_channels": 3, "num_classes": 4}),
    "vit2d": ("ViT", "x=1x1x32x32",
              {"in_channels": 1, "img_size": (32, 32), "patch_size": (8, 8), "spatial_dims": 2,
               "hidden_size": 96, "mlp_dim": 192, "num_heads": 4, "num_layers": 2,
               "classification": True, "num_classes": 3, "post_activation": None}),
}  # fmt: skip
"""name -> (MONAI network class, the input ``NAME=DxD...``, its arguments)."""


def network(name: str) -> Any:
    """The factory ``ferry convert benchmarks/monai_models.py:network`` cannot take
    arguments, so each network has one below; this builds any of them, in eval mode."""
    import torch
    from monai.networks import nets

    torch.manual_seed(0)
    cls, _, arguments = NETWORKS[name]
    return getattr(nets, cls)(**arguments).eval()


def _factory(name: str) -> Any:
    def build() -> Any:
        return network(name)

    build.__name__ = name
    return build


for _name in NETWORKS:
    globals()[_name] = _factory(_name)


def main(argv: list[str] | None = None) -> int:
    import real_models as rm  # benchmarks/ is on the path when this file runs as a script

    args = rm.table_arguments(__doc__, "unet3d,vnet3d", "build/monai-models", argv)
    rng = np.random.default_rng(0)

    def arguments(name: str) -> list[object]:
        return [f"{__file__}:{name}", "--input-shape", NETWORKS[name][1]]

    names = args.names or list(NETWORKS)
    return rm.convert_table("network", names, arguments, rm.one_input(rng.standard_normal), args)


if __name__ == "__main__":
    sys.exit(main())
