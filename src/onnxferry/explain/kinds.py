"""What an explained input is: its kind (image, tabular, tokens, signal, text, volume) and how
its array splits into the samples to explain.

    layout, samples = plan_layout(model.signature.input("x"), x)   # x: float32[8, 4]
    layout.kind, layout.batch_axis, samples.shape                  # "tabular", True, (8, 4)

The kind comes from the signature and the array, and ``kind=`` overrides it: 4-D float
NCHW/NHWC with 1 or 3 channels is an image, 2-D integer is a token sequence, 2-D float is a
tabular row (a signal when its name says audio: ``waveforms``, ``pcm``, ``speech``; asked for
when over ``WIDE_ROW`` long, like BirdNET's ``INPUT[batch, 144000]``), 2-D
boolean is a tabular row of flags, 5-D float CDHW/DHWC with at most 4 channels is a volume
(a CT or MRI scan; ``kind="volume"`` takes DHW too), explained in 3-D blocks, 3-D
float with one axis of 1 (mono audio, ``[batch, samples, 1]``) is a signal,
a string per row (``[batch]`` or ``[batch, 1]``) is a text, explained word by word (``text``).
A signal is any float or integer sample of 1 to 3 axes explained by neighbourhood: windows
and blocks of neighbouring elements along every axis (a stretch of audio, a time-frequency
patch of a spectrogram, a run of feature frames), where tabular rows are explained one
feature at a time. The batch axis: an open leading dim (``batch``, ``N``) is one; a fixed leading
dim of a 2-D or 4-D input is a fixed batch (1 for a batch-1 export, run in chunks of that
size); a 1-D input, or a 3-D image whose first dim is 3 channels, has none (each sample is a
whole model input, run one per ``session.run``). ``batch_axis=`` overrides that guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import FeedError, UsageError
from ..signature import TensorSpec

KINDS = ("image", "tabular", "tokens", "signal", "text", "volume")
_SIGNAL_NAME = re.compile(r"wave|audio|pcm|signal|speech|sound", re.IGNORECASE)
"""Names of a 1-D float sample that is a stretch of audio, not a row of features."""
WIDE_ROW = 4096
"""A 1-D float sample longer than this, named like neither, may be a table's row or a stretch of
a signal: explained as a row, one feature at a time, it costs a model run per element."""
CHANNELS = (1, 3)
VOLUME_CHANNELS = 4
"""A volume's channel axis holds at most this many (CT: 1; MRI: up to 4 sequences)."""


@dataclass(frozen=True)
class Layout:
    """How one input's array maps to samples, and what kind of input it is."""

    kind: str
    batch_axis: bool
    """The model takes a leading batch axis on this input."""
    fixed_batch: int | None
    """That axis's fixed size (1 for a batch-1 export); None when open or absent."""
    sample_shape: tuple[int, ...]
    channels_last: bool = False
    """Images: NHWC (True) or NCHW (False)."""
    row_axis: int = 0
    """The axis the model takes this input's rows along (``Signature.row_axes``: 1 for a
    time-major ``x[seq_len, batch_size, 8]``); samples are rows first whatever it is."""

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of an image sample."""
        shape = self.sample_shape
        return (shape[0], shape[1]) if self.channels_last else (shape[1], shape[2])

    @property
    def channels(self) -> int:
        if not self.spatial_axes or len(self.spatial_axes) == len(self.sample_shape):
            return 1
        return self.sample_shape[-1] if self.channels_last else self.sample_shape[0]

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """An image's or a volume's axes other than its channels' (a 3-D volume has none);
        () for other kinds."""
        rank = len(self.sample_shape)
        if self.kind not in ("image", "volume"):
            return ()
        if self.kind == "volume" and rank == 3:
            return (0, 1, 2)
        return tuple(range(rank - 1)) if self.channels_last else tuple(range(1, rank))

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "batch_axis": self.batch_axis,
            "fixed_batch": self.fixed_batch,
            "sample_shape": list(self.sample_shape),
            "channels_last": self.channels_last,
        }


def has_batch_axis(spec: TensorSpec, array_rank: int) -> bool:
    """Whether the model's input takes a leading batch axis (see the module docstring)."""
    shape = spec.shape
    if shape is None:
        return True  # unknown rank: the given array's leading axis is the batch
    if not shape:
        return False
    if shape[0] is None:
        return True
    if array_rank == len(shape) + 1:
        return False  # the array stacks whole model inputs
    if spec.dtype.kind == "string" and isinstance(shape[0], str):
        return True  # texts[batch]: one string per row
    if len(shape) == 1:
        return False  # a fixed-size vector of features or tokens
    return not (len(shape) == 3 and shape[0] == 3)  # CHW: an image without a batch axis


def plan_layout(
    spec: TensorSpec,
    array: np.ndarray,
    kind: str | None = None,
    batch_axis: bool | None = None,
    ids: bool = False,
) -> tuple[Layout, np.ndarray]:
    """The layout of ``array`` (given for ``spec``) and its samples, ``(N, *sample_shape)``,
    cast to the model's element type. ``ids``: the graph indexes a table with the input's
    values (``feeds.index_ranges``), so a float row of them is tokens, not a table.
    FeedError when the array does not fit the input; UsageError when the kind cannot be told
    or does not fit."""
    array = _cast(spec, np.asarray(array))
    batched = has_batch_axis(spec, array.ndim) if batch_axis is None else batch_axis
    rank = spec.rank if spec.rank is not None else array.ndim
    if batched and array.ndim == rank:
        samples = array
    elif (batched and array.ndim == rank - 1) or (not batched and array.ndim == rank):
        samples = array[None]
    elif not batched and array.ndim == rank + 1:
        samples = array
    else:
        raise FeedError(
            f"input {spec.name!r} {spec.shape_text()} cannot take an array of shape "
            f"{list(array.shape)}",
            hint="give one input per row, shaped like the model's input",
        )
    if samples.shape[0] == 0:
        raise FeedError(f"input {spec.name!r} holds no rows to explain", hint="give at least one")
    fixed = None
    if batched and spec.shape and isinstance(spec.shape[0], int):
        fixed = spec.shape[0]
    sample_shape = tuple(int(d) for d in samples.shape[1:])
    found = kind or detect_kind(spec, sample_shape, ids)
    if found not in KINDS:
        raise UsageError(f"unknown input kind {found!r}", hint=f"use one of {', '.join(KINDS)}")
    channels_last = _check_kind(spec, found, sample_shape)
    layout = Layout(found, batched, fixed, sample_shape, channels_last)
    return layout, samples


def detect_kind(spec: TensorSpec, sample_shape: tuple[int, ...], ids: bool = False) -> str:
    """ "image", "tabular", "tokens", "signal", "text" or "volume" for one sample's shape and
    the input's element type (a float input the graph uses as ``ids``, Keras's float token ids,
    counts as integers); UsageError when it cannot be told."""
    element = spec.dtype.kind
    if element == "string" and sample_shape in ((), (1,)):
        return "text"
    if (element == "int" or ids) and len(sample_shape) == 1:
        return "tokens"
    if element == "float" and len(sample_shape) == 3 and _channel_axis(sample_shape) is not None:
        return "image"
    if element == "float" and len(sample_shape) == 1:
        if _SIGNAL_NAME.search(spec.name):
            return "signal"
        if sample_shape[0] > WIDE_ROW:
            raise UsageError(
                f"cannot tell whether input {spec.name!r} ({spec.dtype.onnx_name} "
                f"{spec.shape_text()}) holds rows of {sample_shape[0]} features or signals of "
                f"{sample_shape[0]} samples",
                hint="give the kind: --kind signal (windows of neighbouring samples) or "
                "--kind tabular (each feature alone: a model run per feature)",
            )
        return "tabular"
    if element == "bool" and len(sample_shape) == 1:
        return "tabular"  # a row of flags
    if element == "float" and len(sample_shape) == 2 and 1 in sample_shape:
        return "signal"
    if element == "float" and len(sample_shape) == 4 and _volume_channel_axis(sample_shape):
        return "volume"
    raise UsageError(
        f"cannot tell what kind of input {spec.name!r} is ({spec.dtype.onnx_name} "
        f"{spec.shape_text()}, samples of shape {list(sample_shape)})",
        hint=f"give the kind: --kind {'|'.join(_fitting_kinds(spec, sample_shape))}",
    )


def _fitting_kinds(spec: TensorSpec, sample_shape: tuple[int, ...]) -> list[str]:
    """The kinds samples of this shape can be explained as (a volume's ``[C, D, H, W]`` only
    as tabular: the hint offered signal, which then refused it)."""
    fitting = []
    for kind in KINDS:
        try:
            _check_kind(spec, kind, sample_shape)
        except UsageError:
            continue
        fitting.append(kind)
    return fitting or list(KINDS)


def _channel_axis(sample_shape: tuple[int, ...]) -> int | None:
    """0 for CHW, 2 for HWC, None when neither end holds 1 or 3 channels (CHW wins a tie)."""
    if sample_shape[0] in CHANNELS:
        return 0
    if sample_shape[-1] in CHANNELS:
        return 2
    return None


def _volume_channel_axis(sample_shape: tuple[int, ...]) -> str | None:
    """ "first" for CDHW, "last" for DHWC (at most VOLUME_CHANNELS channels; first wins a
    tie), None when neither end can be channels."""
    if sample_shape[0] <= VOLUME_CHANNELS:
        return "first"
    if sample_shape[-1] <= VOLUME_CHANNELS:
        return "last"
    return None


def _check_kind(spec: TensorSpec, kind: str, sample_shape: tuple[int, ...]) -> bool:
    """Whether samples of this shape can be explained as ``kind``; returns channels_last."""
    if kind == "volume":
        end = _volume_channel_axis(sample_shape) if len(sample_shape) == 4 else None
        if spec.dtype.kind != "float" or not (len(sample_shape) == 3 or end):
            raise UsageError(
                f"input {spec.name!r} (samples of shape {list(sample_shape)}, "
                f"{spec.dtype.onnx_name}) is not a volume",
                hint=f"volumes are float DHW, CDHW or DHWC with at most {VOLUME_CHANNELS} "
                "channels; give another --kind",
            )
        return end == "last"
    if kind == "image":
        axis = _channel_axis(sample_shape) if len(sample_shape) == 3 else None
        if axis is None or spec.dtype.kind != "float":
            raise UsageError(
                f"input {spec.name!r} (samples of shape {list(sample_shape)}, "
                f"{spec.dtype.onnx_name}) is not an image",
                hint="images are float CHW or HWC with 1 or 3 channels; give another --kind",
            )
        return axis == 2
    if kind == "tokens" and (spec.dtype.kind not in ("int", "float") or len(sample_shape) != 1):
        raise UsageError(
            f"input {spec.name!r} (samples of shape {list(sample_shape)}, "
            f"{spec.dtype.onnx_name}) is not a token sequence",
            hint="token ids are one row of numbers per input; give another --kind",
        )
    if kind == "signal" and not 1 <= len(sample_shape) <= 3:
        raise UsageError(
            f"input {spec.name!r} (samples of shape {list(sample_shape)}) is not a signal",
            hint="a signal's samples have 1 to 3 axes (time, and channels or features); "
            "give another --kind",
        )
    if kind == "text" and (spec.dtype.kind != "string" or sample_shape not in ((), (1,))):
        raise UsageError(
            f"input {spec.name!r} (samples of shape {list(sample_shape)}, "
            f"{spec.dtype.onnx_name}) is not a text",
            hint="a text is one string per row; give another --kind",
        )
    if kind == "tabular" and spec.dtype.kind == "bool" and len(sample_shape) != 1:
        raise UsageError(
            f"input {spec.name!r} (samples of shape {list(sample_shape)}) is not a row of flags",
            hint="boolean inputs are explained as one row of flags per input",
        )
    numeric = ("float", "int", "bool") if kind == "tabular" else ("float", "int")
    if kind in ("tabular", "signal") and spec.dtype.kind not in numeric:
        raise UsageError(
            f"input {spec.name!r} ({spec.dtype.onnx_name}) holds no numbers to explain",
            hint="explain a numeric input (--input NAME)",
        )
    return False


def _cast(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """The array in the input's element type, when that loses nothing of its kind (float to
    float, integer to integer); FeedError otherwise."""
    if not spec.is_array:
        raise spec.not_an_array()
    want = spec.dtype.numpy
    if array.dtype == want:
        return array
    if spec.dtype.kind == "string" and array.dtype.kind in "US":
        return array.astype(object)
    same = {"f": "f", "i": "iu", "u": "iu", "b": "b"}.get(want.kind, "")
    if array.dtype.kind in same or (want.kind == "f" and array.dtype.kind in "iu"):
        return array.astype(want)
    raise FeedError(
        f"input {spec.name!r} takes {spec.dtype.onnx_name}, got a {array.dtype} array",
        hint=f"give {want} values",
    )
