"""A folder of images as model input: the files in a fixed order, and the preprocessing that
turns each into the tensor row the model takes.

    prep = Preprocess(resize=(224, 224), layout="nchw", mean=(0.485, 0.456, 0.406))
    files = list_images(Path("photos"))                 # sorted relative paths
    plan = prep.resolve(model.signature.inputs[0])      # sizes, layout, dtype from the model
    row = plan.load(Path("photos") / files[0])          # float32 [3, 224, 224]

Order: every file under the folder (recursively) whose suffix is an image type Pillow reads,
sorted by its path relative to the folder (``/``-separated); row N is the N-th file.

Preprocessing, in order: decode with Pillow, convert to RGB (or L for a one-channel input),
resize to W x H (bilinear) when ``resize`` is given or the model's input has a fixed size,
then for float inputs multiply by ``scale`` (default 1/255) and normalize per channel with
``mean`` and ``std``; finally lay the channels out as the model wants (``nchw`` or ``nhwc``;
default: read from the model's input shape, a dim of 1 or 3 after the batch axis means nchw).
A uint8 input gets the pixels as they are. An unreadable file is a DataError naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError, one_line
from ..signature import TensorSpec

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
LAYOUTS = ("nchw", "nhwc")


def list_images(folder: Path) -> list[str]:
    """The image files under ``folder`` (recursively), as sorted ``/``-separated relative
    paths; DataError when there are none."""
    found = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not found:
        raise DataError(
            f"{folder} holds no images",
            hint=f"give a folder of {', '.join(sorted(IMAGE_SUFFIXES))} files",
        )
    return found


@dataclass(frozen=True)
class Preprocess:
    """How image files become rows: ``resize`` (width, height), ``layout`` (nchw | nhwc),
    ``scale`` (applied first), per-channel ``mean`` and ``std`` (applied after scaling).
    None means: decided from the model's input (see the module docstring)."""

    resize: tuple[int, int] | None = None
    layout: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.layout is not None and self.layout not in LAYOUTS:
            raise UsageError(f"unknown layout {self.layout!r}", hint="use nchw or nhwc")
        if self.resize is not None and min(self.resize) < 1:
            raise UsageError(f"resize must be positive, got {self.resize}", hint="--resize 224x224")
        if self.std is not None and any(s == 0 for s in self.std):
            raise UsageError("std must not be 0", hint="--std 0.229,0.224,0.225")

    @property
    def given(self) -> bool:
        """Whether any option was set."""
        return any(
            v is not None for v in (self.resize, self.layout, self.scale, self.mean, self.std)
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "resize": list(self.resize) if self.resize else None,
            "layout": self.layout,
            "scale": self.scale,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
        }

    def resolve(self, spec: TensorSpec) -> ImagePlan:
        """This preprocessing made concrete for the model input ``spec`` (a rank-4 image
        input); UsageError when it cannot be."""
        if spec.rank != 4:
            raise UsageError(
                f"input {spec.name!r} has shape {spec.shape_text()}, not an image batch "
                "[N, C, H, W] or [N, H, W, C]",
                hint="a folder of images feeds a model whose one input is rank 4",
            )
        shape = spec.shape or (None,) * 4
        layout = self.layout or (
            "nhwc" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "nchw"
        )
        c, h, w = (
            (shape[1], shape[2], shape[3]) if layout == "nchw" else (shape[3], shape[1], shape[2])
        )
        channels = c if isinstance(c, int) else 3
        if channels not in (1, 3):
            raise UsageError(
                f"input {spec.name!r} takes {channels} channels in {layout} layout",
                hint="images give 1 (L) or 3 (RGB) channels; check --layout",
            )
        size = self.resize
        if size is None and isinstance(w, int) and isinstance(h, int):
            size = (w, h)
        is_float = spec.dtype.kind == "float"
        if spec.dtype.numpy != np.dtype(np.uint8) and not is_float:
            raise UsageError(
                f"input {spec.name!r} takes {spec.dtype.numpy}; images feed float or uint8 inputs"
            )
        if not is_float and (self.scale is not None or self.mean or self.std):
            raise UsageError(
                f"input {spec.name!r} takes uint8 pixels; --scale, --mean and --std do not apply"
            )
        mean = _per_channel(self.mean, channels, "mean", 0.0)
        std = _per_channel(self.std, channels, "std", 1.0)
        scale = 1 / 255 if self.scale is None else self.scale
        return ImagePlan(
            spec.dtype.numpy, layout, channels, size, scale if is_float else None, mean, std
        )


@dataclass(frozen=True)
class ImagePlan:
    """Preprocessing resolved against one model input: what ``load`` does to each file."""

    dtype: np.dtype[np.generic]
    layout: str
    channels: int
    size: tuple[int, int] | None  # (width, height)
    scale: float | None  # None: uint8 pixels as they are
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def load(self, path: Path) -> np.ndarray:
        """One image file as a model row (no batch axis); DataError naming the file when
        Pillow cannot read it."""
        from PIL import Image

        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
                if self.size is not None and image.size != self.size:
                    image = image.resize(self.size, Image.Resampling.BILINEAR)
                pixels = np.asarray(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(
                f"cannot read image {path}: {one_line(e, 160)}",
                hint="remove or replace the file, or convert it to PNG/JPEG",
            ) from e
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        row = pixels
        if self.scale is not None:
            scaled = pixels.astype(np.float32) * np.float32(self.scale)
            scaled -= np.asarray(self.mean, np.float32)
            scaled /= np.asarray(self.std, np.float32)
            row = scaled.astype(self.dtype, copy=False)
        if self.layout == "nchw":
            row = row.transpose(2, 0, 1)
        return np.ascontiguousarray(row)


def _per_channel(
    values: Sequence[float] | None, channels: int, what: str, default: float
) -> tuple[float, ...]:
    if values is None:
        return (default,) * channels
    if len(values) == 1:
        return (float(values[0]),) * channels
    if len(values) != channels:
        raise UsageError(
            f"--{what} has {len(values)} values; the model takes {channels} channels",
            hint=f"give one value or {channels}",
        )
    return tuple(float(v) for v in values)
