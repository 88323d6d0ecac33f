"""ONNX's Resize (and Upsample) in torch, one axis at a time, as ONNX Runtime computes it.

    plan = AxisPlan.of(Resize(mode="linear"), length=4, resized=8, scale=2.0)
    plan.indices, plan.weights                   # (8, 2): the taps and their weights
    y = resize(x, Resize(mode="nearest"), sizes=[1, 3, 8, 8])

Every output position of an axis reads a few input positions (1 for nearest, 2 for linear, 4
for cubic) with fixed weights; the positions come from the node's
``coordinate_transformation_mode`` and ``nearest_mode`` exactly as the operator defines them,
so the result is a gather and a weighted sum: differentiable in ``x``, and the same on every
mode torch's ``interpolate`` lacks (``tf_crop_and_resize``, ``half_pixel_symmetric``,
``round_prefer_floor``, ``exclude_outside``). Coordinates are float32, as in ONNX Runtime, so
ties between two nearest positions mostly fall the same way: in a sweep of 1616 mode, opset
and size configurations against ONNX Runtime, 14 differ, each a coordinate a rounding error
away from an exact half (``to_torch``'s parity check catches such a model). Antialiasing
(opset 18) is not done here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Resize:
    """A Resize node's attributes (ONNX's defaults for opset 11 and later)."""

    mode: str = "nearest"
    coordinates: str = "half_pixel"
    nearest: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    extrapolation: float = 0.0
    aspect_policy: str = "stretch"


@dataclass(frozen=True)
class AxisPlan:
    """Which input positions each output position of one axis reads, with what weights;
    ``outside`` marks positions past the input (``tf_crop_and_resize``'s extrapolation)."""

    indices: np.ndarray
    weights: np.ndarray
    outside: np.ndarray

    @classmethod
    def of(
        cls,
        how: Resize,
        length: int,
        resized: int,
        scale: float,
        roi: tuple[float, float] = (0.0, 1.0),
    ) -> AxisPlan:
        f32 = np.float32
        out = np.arange(resized, dtype=f32)
        x = _original(how.coordinates, out, f32(scale), length, resized, roi)
        outside = (x < 0) | (x > length - 1) if how.coordinates == "tf_crop_and_resize" else None
        if how.mode == "nearest":
            rounding = how.nearest
            if rounding == "simple":  # opset 10 and Upsample, as ONNX Runtime rounds them
                rounding = "ceil" if scale < 1 else "floor"
            indices = np.clip(_ROUNDING[rounding](x), 0, length - 1)[:, None]
            weights = np.ones_like(indices, dtype=f32)
        elif how.mode == "linear":
            x = np.clip(x, 0, length - 1)
            low = np.floor(x)
            frac = x - low
            indices = np.stack([low, np.minimum(low + 1, length - 1)], axis=1)
            weights = np.stack([1 - frac, frac], axis=1)
        elif how.mode == "cubic":
            low = np.floor(x)
            frac = x - low
            indices = low[:, None] + np.arange(-1, 3, dtype=f32)[None]
            weights = _cubic(frac, f32(how.cubic_a))
            if how.exclude_outside:
                weights = np.where((indices < 0) | (indices > length - 1), 0, weights)
                weights = weights / weights.sum(axis=1, keepdims=True)
            indices = np.clip(indices, 0, length - 1)
        else:
            raise ValueError(f"mode {how.mode!r}")
        return cls(
            indices.astype(np.int64),
            weights.astype(f32),
            outside if outside is not None else np.zeros(resized, bool),
        )


def output_sizes(
    how: Resize,
    shape: Sequence[int],
    *,
    scales: Sequence[float] | None,
    sizes: Sequence[int] | None,
    axes: Sequence[int] | None = None,
) -> tuple[list[int], list[float]]:
    """(output shape, scale per axis) from the node's ``scales`` or ``sizes`` (for ``axes``
    alone when given) and its aspect policy."""
    rank = len(shape)
    picked = [a % rank for a in axes] if axes else list(range(rank))
    out, factors = list(shape), [1.0] * rank
    if sizes:
        wanted = dict(zip(picked, sizes, strict=True))
        if how.aspect_policy != "stretch":
            ratios = [wanted[a] / shape[a] for a in picked]
            common = min(ratios) if how.aspect_policy == "not_larger" else max(ratios)
            for a in picked:
                out[a] = math.floor(shape[a] * common + 0.5)
                factors[a] = common
        else:
            for a in picked:
                out[a] = int(wanted[a])
                factors[a] = out[a] / shape[a] if shape[a] else 1.0
    elif scales:  # the crop's extent is not in the size (ONNX Runtime and the reference)
        for a, s in zip(picked, scales, strict=True):
            factors[a] = float(s)
            out[a] = math.floor(shape[a] * float(s))
    return out, factors


def resize(
    x: Any,
    how: Resize,
    *,
    scales: Sequence[float] | None = None,
    sizes: Sequence[int] | None = None,
    roi: Sequence[float] | None = None,
    axes: Sequence[int] | None = None,
) -> Any:
    """``x`` resized as ONNX's Resize with these inputs (a torch tensor)."""
    import torch

    shape = [int(d) for d in x.shape]
    out, factors = output_sizes(how, shape, scales=scales, sizes=sizes, axes=axes)
    rank = len(shape)
    starts, ends = _roi(roi, rank, [a % rank for a in axes] if axes else list(range(rank)), how)
    given = x.dtype
    weighed = how.mode != "nearest" and not x.is_floating_point()
    if weighed:  # integer pixels: weighed in float32, truncated back once (as ONNX Runtime)
        x = x.float()
    for axis in range(rank):
        if out[axis] == shape[axis] and factors[axis] == 1.0:
            continue  # untouched, a crop's region included (as in ONNX Runtime)
        plan = AxisPlan.of(how, shape[axis], out[axis], factors[axis], (starts[axis], ends[axis]))
        taps = x.movedim(axis, -1)[..., torch.from_numpy(plan.indices)]
        if plan.weights.shape[1] == 1:
            picked = taps[..., 0]
        else:
            picked = (taps * torch.from_numpy(plan.weights).to(x.dtype)).sum(-1)
        if plan.outside.any():
            fill = torch.tensor(how.extrapolation).to(x.dtype)
            picked = torch.where(torch.from_numpy(plan.outside), fill, picked)
        x = picked.movedim(-1, axis)
    if weighed:
        info = torch.iinfo(given)
        x = x.clamp(info.min, info.max).to(given)
    return x


def _roi(
    roi: Sequence[float] | None, rank: int, axes: Sequence[int], how: Resize
) -> tuple[list[float], list[float]]:
    """Each axis's crop start and end (fractions); only ``tf_crop_and_resize`` reads it."""
    starts, ends = [0.0] * rank, [1.0] * rank
    if how.coordinates == "tf_crop_and_resize" and roi:
        half = len(roi) // 2
        for i, a in enumerate(axes[:half]):
            starts[a], ends[a] = float(roi[i]), float(roi[half + i])
    return starts, ends


def _original(
    mode: str,
    out: np.ndarray,
    scale: np.float32,
    length: int,
    resized: int,
    roi: tuple[float, float],
) -> np.ndarray:
    """The input coordinate of each output position (float32), by ONNX's formulas."""
    f32 = np.float32
    if mode in ("half_pixel", "pytorch_half_pixel", "half_pixel_symmetric"):
        x = (out + f32(0.5)) / scale - f32(0.5)
        if mode == "pytorch_half_pixel" and resized == 1:
            x = np.zeros_like(out)
        elif mode == "half_pixel_symmetric":
            adjustment = f32(resized) / (scale * f32(length))
            x = x + f32(length) / f32(2) * (f32(1) - adjustment)
    elif mode == "align_corners":
        x = out * f32(length - 1) / f32(max(resized - 1, 1))
    elif mode == "asymmetric":
        x = out / scale
    elif mode == "tf_half_pixel_for_nn":
        x = (out + f32(0.5)) / scale
    elif mode == "tf_crop_and_resize":
        start, end = f32(roi[0]), f32(roi[1])
        if resized == 1:
            x = np.full_like(out, f32(0.5) * (start + end) * f32(length - 1))
        else:
            x = start * f32(length - 1) + out * ((end - start) * f32(length - 1) / f32(resized - 1))
    else:
        raise ValueError(f"coordinate_transformation_mode {mode!r}")
    return np.asarray(x, f32)


_ROUNDING: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "round_prefer_floor": lambda x: np.ceil(x - np.float32(0.5)),
    "round_prefer_ceil": lambda x: np.floor(x + np.float32(0.5)),
    "floor": np.floor,
    "ceil": np.ceil,
}
"""ONNX's nearest modes: the input position an output position's coordinate rounds to."""


def _cubic(frac: np.ndarray, a: np.float32) -> np.ndarray:
    """Keys' cubic convolution weights of the taps at -1, 0, 1, 2 from the floor."""
    distances = np.stack([frac + 1, frac, 1 - frac, 2 - frac], axis=1)
    d = np.abs(distances)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0)).astype(np.float32)
