"""Features as groups of a sample's elements, hidden by a baseline: superpixels of an image,
positions of a token sequence, blocks of a signal, columns of a tabular row.

    groups = image_groups(image, layout, segments=50)   # SLIC superpixels (a grid if SLIC fails)
    hidden = baseline(layout, image, None)              # the image's per-channel mean
    masks = np.random.default_rng(0).integers(0, 2, (8, groups.count))     # 0: hidden
    masked = groups.compose(image, hidden, masks)       # 8 images like `image`
    pixels = groups.spread(np.ones(groups.count))       # one value per group -> per element

``spread`` shares a group's value evenly over its elements, so attributions keep their sum
(SHAP's efficiency holds per pixel as it does per superpixel). The baseline is what a hidden
feature becomes: the background's mean (the first background row for tokens), else the image's
per-channel mean, zeros for tabular rows and signals (silence), token id 0, and for a text the
empty piece (``text``: the word is dropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .kinds import Layout


@dataclass(frozen=True)
class Groups:
    """``labels``: the group of each element of a sample (ints shaped like the sample)."""

    labels: np.ndarray
    count: int
    method: str
    """How the groups were made: "slic", "grid", "blocks", "positions" or "features"."""
    whole_axis: int | None = None
    """An axis of the sample that every group spans whole (an image's channels): masks are
    looked up without it and broadcast over it, a third of the lookups for RGB."""

    @cached_property
    def _lookup(self) -> np.ndarray:
        """``labels`` with ``whole_axis`` cut to length 1."""
        if self.whole_axis is None:
            return self.labels
        return np.take(self.labels, [0], axis=self.whole_axis)

    def compose(self, sample: np.ndarray, baseline: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Samples with the groups whose mask is 0 hidden: ``(len(masks), *sample.shape)``,
        one lookup and one ``np.where`` for the whole batch. ``np.take`` keeps the lookup in
        C order (``masks[:, labels]`` puts the batch axis innermost), so with C-ordered
        ``sample`` and ``baseline`` the result goes to the session without another copy."""
        keep = np.take(np.asarray(masks).astype(bool), self._lookup, axis=1)
        return np.where(keep, sample, baseline)

    def spread(self, values: np.ndarray) -> np.ndarray:
        """Per-group values shared out evenly over each group's elements."""
        sizes = np.bincount(self.labels.ravel(), minlength=self.count).astype(np.float64)
        per_element = np.asarray(values, np.float64) / np.maximum(sizes, 1.0)
        spread: np.ndarray = per_element[self.labels]
        return spread


def groups_for(sample: np.ndarray, layout: Layout, segments: int, method: str) -> Groups | None:
    """What a masked method hides: superpixels of an image, about ``segments`` blocks of a
    signal, positions of a token sequence (None for occlusion, which slides its own window,
    for integrated gradients, which attribute every element, and for tabular rows, explained
    feature by feature)."""
    if method in ("occlusion", "integrated-gradients") or layout.kind == "tabular":
        return None
    if layout.kind == "image":
        return image_groups(sample, layout, segments)
    if layout.kind == "signal":
        labels = grid_segments(sample.shape, segments)
        return Groups(labels, int(labels.max()) + 1, "blocks")
    if layout.kind == "volume":
        return volume_groups(layout, segments)
    return element_groups(sample, "positions")


def volume_groups(layout: Layout, segments: int) -> Groups:
    """About ``segments`` cubic blocks of a volume's voxels, each spanning every channel."""
    spatial = grid_segments(tuple(layout.sample_shape[a] for a in layout.spatial_axes), segments)
    count = int(spatial.max()) + 1
    if len(layout.spatial_axes) == len(layout.sample_shape):  # DHW: no channel axis
        return Groups(spatial, count, "blocks")
    channels = len(layout.sample_shape) - 1 if layout.channels_last else 0
    return Groups(_over_channels(spatial, layout), count, "blocks", channels)


def image_groups(sample: np.ndarray, layout: Layout, segments: int) -> Groups:
    """Superpixels of an image sample by skimage's SLIC (the segmentation LIME uses), or square
    patches when SLIC finds fewer than a quarter of ``segments`` (noise, tiny images)."""
    from skimage.segmentation import slic

    image = to_hwc(sample, layout).astype(np.float64)
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    spatial = slic(
        scaled,
        n_segments=segments,
        compactness=1.0,
        channel_axis=-1,
        convert2lab=False,
        start_label=0,
    )
    method = "slic"
    if spatial.max() + 1 < max(2, segments // 4):
        spatial, method = grid_segments(layout.image_size, segments), "grid"
    spatial = _relabel(spatial)
    channels = len(layout.sample_shape) - 1 if layout.channels_last else 0
    return Groups(_over_channels(spatial, layout), int(spatial.max()) + 1, method, channels)


def grid_segments(size: tuple[int, ...], segments: int) -> np.ndarray:
    """Blocks of one side along every axis, as few as make at most ``segments`` (every element
    its own when ``segments`` reaches their number), labelled in C order: square patches of
    an image, stretches of audio, time-frequency blocks of a spectrogram."""
    side = block_side(size, segments)
    blocks = tuple(math.ceil(n / side) for n in size)
    labels: np.ndarray = np.ravel_multi_index(tuple(np.indices(size) // side), blocks)
    return labels


def block_side(size: tuple[int, ...], segments: int) -> int:
    """The smallest side whose blocks tile ``size`` in at most ``segments`` (at least 1)."""

    def count(side: int) -> int:
        return math.prod(math.ceil(n / side) for n in size)

    low, high = 1, max(size, default=1)
    while low < high:
        middle = (low + high) // 2
        if count(middle) <= max(1, segments):
            high = middle
        else:
            low = middle + 1
    return low


def element_groups(sample: np.ndarray, method: str) -> Groups:
    """One group per element: token positions, tabular features."""
    return Groups(np.arange(sample.size).reshape(sample.shape), sample.size, method)


def spatial_labels(groups: Groups, layout: Layout) -> np.ndarray:
    """An image's group labels as one (height, width) map."""
    return groups.labels[..., 0] if layout.channels_last else groups.labels[0]


def baseline(layout: Layout, sample: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """What a hidden feature becomes (see the module docstring), shaped like ``sample``."""
    kind = layout.kind
    if kind == "text":
        return np.zeros_like(sample)  # the empty piece: the word is dropped
    if kind == "tokens":
        row = background[0] if background is not None else np.zeros_like(sample)
        return np.asarray(row, dtype=sample.dtype)
    if background is not None:
        return np.asarray(background.mean(axis=0), dtype=sample.dtype)
    if kind in ("image", "volume"):
        axes = layout.spatial_axes  # each channel's mean
        means = sample.mean(axis=axes, keepdims=True)
        return np.ascontiguousarray(np.broadcast_to(means, sample.shape), dtype=sample.dtype)
    return np.zeros_like(sample)


def to_hwc(sample: np.ndarray, layout: Layout) -> np.ndarray:
    """An image sample as (height, width, channels)."""
    return sample if layout.channels_last else np.moveaxis(sample, 0, -1)


def from_hwc(images: np.ndarray, layout: Layout) -> np.ndarray:
    """(n, height, width, channels) images in the model's layout."""
    return images if layout.channels_last else np.moveaxis(images, -1, 1)


def _over_channels(spatial: np.ndarray, layout: Layout) -> np.ndarray:
    channels = layout.channels
    stacked = np.repeat(spatial[..., None], channels, axis=-1)
    return stacked if layout.channels_last else np.moveaxis(stacked, -1, 0)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels 0..k-1 with none unused."""
    _, dense = np.unique(labels, return_inverse=True)
    relabelled: np.ndarray = dense.reshape(labels.shape)
    return relabelled
