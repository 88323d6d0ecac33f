"""`tflite`: the model as TensorFlow Lite (``.tflite``), converted by onnx2tf and verified
against ONNX Runtime.

    ferry package model.onnx --target tflite -o out/tflite
    ferry package model.onnx --target tflite -o out/tflite-nchw --set layout=nchw --set fp16=true

onnx2tf (``onnx2tf.convert``, run on a copy of the model in a scratch folder, its constants
folded by onnxslim instead of onnx2tf's onnxsim step) writes ``<name>.tflite`` (float32; with
``fp16=true`` also ``<name>.fp16.tflite``,
weights in float16, computed in float32).

Layout. onnx2tf builds a channels-last graph. With ``layout=auto`` (the default) an input of
rank 3, 4 or 5 that a convolution, pooling or normalization reads with its channels on axis 1
(directly or through elementwise ops: an image's mean and scale) is taken channels last
(NCW -> NWC, NCHW -> NHWC, NCDHW -> NDHWC: axis 1 moves to the end), and every other input
keeps its ONNX layout: a sequence ``[batch, frames, features]`` into a MatMul, or an image a
tf2onnx export already takes as NHWC (its first op a Transpose), was handed over as
``[batch, features, frames]``. With ``layout=nhwc`` every input of rank 3 to 5 is taken
channels last (what onnx2tf does); with ``layout=nchw`` every input keeps its ONNX layout
(onnx2tf's ``keep_ncw_or_nchw_or_ncdhw_input_names``, a transpose inside the graph).
Outputs of rank 3 to 5 usually come out channels last whatever the inputs; which layout
each output has is read from its shape, and from its values when the shape cannot tell (NHWC
with C == H == W). The
report's notes give every input's and output's layout, shape (-1: open) and name in the file
(onnx2tf keeps input names and calls the outputs ``Identity``, ``Identity_1``, ... in ONNX's
order).

Check ``tflite parity``: the written ``.tflite`` is read back into LiteRT's interpreter
(``ai_edge_litert``) and run on the feed sets of ``inputs`` (a file), else ``samples``
generated ones (``package.checking``), inputs transposed to its layout; its outputs,
transposed back, are compared with ONNX Runtime's (CPU) on the same ``.onnx`` at
``atol``/``rtol`` (parity's defaults, float16's for a model whose weights are float16:
``parity.tolerance.between_runtimes``), and a mismatch fails the report (exit 1). ``tflite
fp16 parity`` judges ``<name>.fp16.tflite`` the same way at ``fp16_atol``/``fp16_rtol`` (1e-2
each). ``size`` reports the bytes of every file.

onnx2tf and TensorFlow run in a fresh (spawned) process whose console goes to a log; the
log's warnings become report notes. No network: onnx2tf fetches sample images from GitHub
for a model whose inputs are all small channels-last images; generated ones are put where it
looks first. A model onnx2tf cannot convert is one line (InputError, exit 2). Erf (every
GELU) is onnx2tf's polynomial of builtin ops (within 1.5e-7), not TensorFlow's erf, which
only the Flex delegate runs; a file that still needs Flex ops fails its check naming them.
ReduceL2 (an L2-normalized embedding's last step) is given to onnx2tf as
Sqrt(ReduceSumSquare): its own ReduceL2 over one axis fails in tf.norm. ONNX Runtime's fused
transformer operators (``Attention``, ``SkipLayerNormalization``, ...) are given to it as the
standard ONNX they stand for (``unfused``).

Open dims. With ``static=auto`` (the default) the ``.tflite`` keeps the model's open dims;
should onnx2tf fail to convert it so (shape arithmetic on an unknown rank, as in Smart Turn's
attention) or LiteRT fail to run it (XNNPack cannot reshape a graph onnx2tf built from shape
arithmetic, as openWakeWord's melspectrogram's) or match ONNX Runtime (Magika's), it is
converted again with every open input fixed at the check's sizes (onnxslim's
``input_shapes``, so the arithmetic folds away), and the note says so. ``static=true`` fixes
them from the start, ``static=false`` never does.
Give ``inputs`` to fix them at the sizes the model is used at: a refusal at sizes chosen here
(PP-OCR's recognizer at a height of 32, not 48) says so.

Strict mode. onnx2tf's strict mode corrects transposition errors by running the graph built
so far after each op it converts: on a 12-layer Whisper encoder (Smart Turn) that is 450 runs
and most of a 90 s conversion. Its shape estimation (a run of the ONNX model for every op's
output, against which it tries axis orders at the ops whose shapes it doubts) took 44 of the
102 s left. With ``strict=auto`` (the default) the model is converted without either first,
and again in strict mode with its estimation (the note says why) only when that file fails to
convert or fails its check (SqueezeNet's softmax comes out transposed without it); a model onnx2tf
cannot convert with its open dims is converted with them fixed first (then in strict mode if
need be), not in strict mode with them open (on PP-OCR's recognizer that failed too: one
whole conversion for nothing). ``strict=true`` always runs both (onnx2tf's own default),
``strict=false`` neither.

Time. onnx2tf's conversions share ``timeout`` seconds (600; inf: no limit): one still
running then is stopped, its worker killed (some of onnx2tf's searches try every pair of axis
orders of an op's inputs, 14,400 Keras models for a Concat of two 5-D tensors, catching every
exception on the way), and the package is refused in one line (exit 2) that says why strict
mode was tried, if it was.

Options (``--set KEY=VALUE``): ``layout`` (auto), ``static`` (auto), ``strict`` (auto),
``fp16`` (false), ``timeout`` (600), ``inputs``, ``samples`` (3), ``atol``, ``rtol``,
``fp16_atol``, ``fp16_rtol``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, one_line
from ..feeds import describe_shapes
from ..graphs import (
    inlined,
    iter_graphs,
    listed,
    open_negative_dims,
    rename_values,
    unread_inputs,
    value_names,
    walk_graphs,
    weights_not_inputs,
)
from ..model import Model
from ..native import NativeOutput, native_output, spawned_worker, within
from ..optimize.qdq_float import as_float_ops
from ..qdq import INTEGER_NOTE, QDQ_NOTE, as_float_products, as_qdq
from ..report import human_size
from ..stft import STFT_NOTE, stft_as_conv
from ..unfused import UNFUSED_NOTE, unfuse
from .base import Check, Options, Packaged, PackageSource, write_tree
from .checking import CHECK_KEYS, check_feeds, check_options, note_unfinite, reference_noise

if TYPE_CHECKING:
    import onnx

    from ..parity import SecondOpinion, Tolerance

KEYS = (
    *CHECK_KEYS, "layout", "static", "strict", "fp16", "timeout", "atol", "rtol", "fp16_atol",
    "fp16_rtol",
)  # fmt: skip
TIMEOUT_S = 600.0
"""onnx2tf's time for all of one package's conversions, by default (``timeout``)."""
LAYOUTS = ("auto", "nhwc", "nchw")
TRI_STATE = ("auto", "true", "false")
LACKS_OP = "OP is not yet implemented"
"""How onnx2tf says it has no converter for an op (``Loop OP is not yet implemented``)."""
QUICK_NOTE = (
    "converted without onnx2tf's strict mode (its accuracy correction, which runs the graph "
    "built so far after each op) and shape estimation (a run of the ONNX model for every "
    "op's output): the check passes (strict=true runs both)"
)
SAMPLE_IMAGES = "calibration_image_sample_data_20x128x128x3_float32.npy"
"""The file onnx2tf reads from its working folder before it tries to download it."""
CHANNELS_LAST = {3: "NWC", 4: "NHWC", 5: "NDHWC"}

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Converted:
    """What onnx2tf wrote (``{"float32" | "float16": bytes}``), its version and the first
    warnings it logged."""

    files: dict[str, bytes]
    version: str
    warnings: list[str]


@dataclass(frozen=True)
class Ran:
    """A ``.tflite``'s outputs on every feed set, in its own layout, under the ONNX names;
    the shapes it takes (``inputs``) and gives (``shapes``), -1 for a dim it leaves open; or
    the ``problem`` that stopped it."""

    outputs: list[Feeds]
    inputs: dict[str, list[int]]
    shapes: dict[str, list[int]]
    version: str
    problem: str | None = None
    tensors: dict[str, str] | None = None
    """The ``.tflite``'s name for each ONNX input and output (onnx2tf names outputs
    ``Identity``, ``Identity_1``, ...)."""


def build(source: PackageSource, outdir: Path, options: Mapping[str, Any]) -> Packaged:
    """Convert ``source`` to TFLite in ``outdir`` and verify it (see the module docstring)."""
    from ..parity import Tolerance
    from ..parity.tolerance import low_precision_note
    from ..runtime import OrtRunner

    model = Model.load(source.model.resolve())
    opts = _options(options, model)
    _installed()
    result = Packaged("tflite", source.name, str(outdir))
    if not {"atol", "rtol"} & set(options) and (note := low_precision_note(model)):
        result.notes.append(note)
    feeds = check_feeds(model, opts["inputs"], opts["samples"], result)
    names = model.signature.output_names
    perms = input_perms(model, opts["layout"])
    for name in unread_inputs(model.proto):  # onnx2tf leaves them out
        del perms[name]
        result.notes.append(f"input {name!r} is read by no node: the .tflite is run without it")
    name32, name16 = f"{source.name}.tflite", f"{source.name}.fp16.tflite"
    fixed = _fixed_shapes(model, feeds[0])
    static = opts["static"] == "true" and bool(fixed)
    reference = [OrtRunner(model).run(f) for f in feeds]
    note_unfinite(reference, opts["inputs"], result)
    second, steps = reference_noise(model, feeds)
    misdeclared = _misdeclared(model, reference[0])
    tolerances = {
        name32: Tolerance(atol=opts["atol"], rtol=opts["rtol"]),
        name16: Tolerance(atol=opts["fp16_atol"], rtol=opts["fp16_rtol"]),
    }
    with tempfile.TemporaryDirectory(prefix="ferry-tflite-") as work, _child() as pool:
        keep = [n for n, p in perms.items() if len(p) in CHANNELS_LAST and p == _same(len(p))]
        deadline = time.monotonic() + opts["timeout"]

        def attempt(shapes: dict[str, list[int]], fixed_next: bool = False) -> _Attempt:
            folder = Path(work) / ("static" if shapes else "open")
            given, notes = _folded(model, shapes, misdeclared)
            copy = given.save(folder / "model.onnx")
            assert copy.path is not None
            if opts["strict"] != "auto":
                return once(str(copy.path), folder, notes, strict=opts["strict"] == "true")
            try:
                quick = once(str(copy.path), folder, notes, strict=False)
            except Unconverted as e:
                # strict mode cannot give onnx2tf an op it lacks; open dims it cannot convert
                # (shape arithmetic on an unknown rank) are fixed next, before strict mode
                if LACKS_OP in e.detail or fixed_next:
                    raise
                why = e.detail
            else:
                if quick.problem is None:
                    quick.notes.append(QUICK_NOTE)
                    return quick
                why = quick.problem
            try:
                strict = once(str(copy.path), folder, notes, strict=True)
            except Unfinished as e:
                raise Unfinished(e.name, e.seconds, strict=True, why=why) from None
            strict.notes.append(f"converted in onnx2tf's strict mode: without it, {why}")
            return strict

        def once(path: str, folder: Path, notes: list[str], strict: bool) -> _Attempt:
            left = max(deadline - time.monotonic(), 0) if math.isfinite(deadline) else None
            try:
                done = within(pool, left, _convert, path, keep, strict)
            except TimeoutError:
                raise Unfinished(source.model.name, opts["timeout"], strict) from None
            if isinstance(done, str):
                raise Unconverted(source.model.name, done)
            files = {name32: done.files["float32"]}
            if opts["fp16"]:
                files[name16] = done.files["float16"]
            runs = {}
            for n, data in files.items():
                (folder / n).write_bytes(data)
                runs[n] = pool.submit(_run, str(folder / n), feeds, perms, names).result()
            judged = _parity(
                "", name32, source.model.name, runs[name32], reference, second,
                tolerances[name32], steps=steps,
            )  # fmt: skip  # LiteRT's own noise is measured on the file written, below
            return _Attempt(done, runs, [*notes], folder, None if judged.ok else judged.detail)

        shown = describe_shapes(fixed)
        auto = opts["static"] == "auto" and bool(fixed) and not static
        sizes_chosen = opts["inputs"] is None
        try:
            chosen = attempt(fixed if static else {}, fixed_next=auto)
        except Unfinished:
            raise  # its worker is gone: no other conversion is tried
        except InputError as e:
            if static and sizes_chosen and isinstance(e, Unconverted):
                raise Unconverted(e.name, e.detail, _chosen_sizes_hint(shown)) from None
            if not auto:
                raise
            chosen = _fixed_if_it_converts(e, lambda: attempt(fixed), shown, sizes_chosen)
        else:
            if auto and chosen.problem is not None:
                chosen = _fixed_if_it_runs(chosen, lambda: attempt(fixed), shown)
        if static:
            chosen.notes.append(f"written with its inputs fixed at {shown} (static=true)")
        write_tree(outdir, {n: (chosen.folder / n).read_bytes() for n in chosen.runs}, result)
        # the check reads back the files as written
        runs = {
            n: pool.submit(_run, str(outdir / n), feeds, perms, names).result() for n in chosen.runs
        }
        done, given_notes = chosen.done, chosen.notes
        tool = f"onnx2tf {done.version}, ai-edge-litert {runs[name32].version}"
        for n, ran in runs.items():  # in the worker's lifetime: LiteRT's noise runs there
            label = "tflite parity" if n == name32 else "tflite fp16 parity"
            own = _reference_kernels(pool, outdir / n, feeds, perms, names, reference)
            check = _parity(
                label, n, source.model.name, ran, reference, second, tolerances[n], tool, own,
                steps=steps,
            )  # fmt: skip
            result.checks.append(check)
    sizes = [(source.model.name, model.size_bytes)]
    sizes += [(n, (outdir / n).stat().st_size) for n in runs]
    size_text = ", ".join(f"{n} {human_size(b)}" for n, b in sizes)
    result.checks.append(Check("size", True, size_text, tool="os.stat"))
    result.notes.append(layout_note(model, runs[name32], reference[0], opts["layout"]))
    if runs[name32].problem is None:
        result.notes += [
            f"input {name!r} is not an input of the .tflite: onnx2tf left it out (no output "
            "needs its values at these sizes), and the check ran the .tflite without it"
            for name in perms
            if name not in runs[name32].inputs
        ]
    result.notes += [f"onnx2tf warned: {w}" for w in done.warnings]
    result.notes += given_notes
    return result


@dataclass
class _Attempt:
    """One conversion: what onnx2tf wrote (in ``folder``), LiteRT's runs of it there (to
    choose between conversions), notes, and how the float32 file missed ONNX Runtime."""

    done: Converted
    runs: dict[str, Ran]
    notes: list[str]
    folder: Path
    mismatch: str | None = None

    @property
    def problem(self) -> str | None:
        """Why the float32 file fails its check (LiteRT could not run it, or its outputs
        differ from ONNX Runtime's), or None."""
        return next(iter(self.runs.values())).problem or self.mismatch


LACKS_HINT = (
    "onnx2tf lacks an op or a pattern of this model: check its supported ops "
    "(github.com/PINTO0309/onnx2tf) and export the model with others"
)


class Unconverted(InputError):
    """onnx2tf could not convert the model: ``detail`` is what it said."""

    def __init__(self, name: str, detail: str, hint: str = LACKS_HINT) -> None:
        detail = detail.rstrip().removesuffix(".")  # a hint or "; ..." follows
        super().__init__(f"onnx2tf cannot convert {name}: {detail}", hint=hint)
        self.name, self.detail = name, detail


class Unfinished(InputError):
    """onnx2tf's conversions ran past their ``timeout`` (``why``: what made a strict-mode
    retry)."""

    def __init__(self, name: str, seconds: float, strict: bool, why: str | None = None) -> None:
        mode = " in its strict mode" if strict else ""
        retried = f", tried because without it, {why.rstrip('.')}" if why else ""
        super().__init__(
            f"onnx2tf did not finish converting {name}{mode} within {seconds:g} s{retried}",
            hint="give it longer: --set timeout=SECONDS",
        )
        self.name, self.seconds = name, seconds


def _chosen_sizes_hint(shown: str) -> str:
    """The hint of a refusal at sizes chosen here for the open dims (``shown``), which may be
    ones the model is not made for."""
    return (
        f"{shown} are sizes chosen here for the open dims: give the sizes the model is used at "
        f"(--set inputs=FILE, a sample); else, {LACKS_HINT}"
    )


def _fixed_if_it_converts(
    error: InputError, convert: Callable[[], _Attempt], shown: str, sizes_chosen: bool
) -> _Attempt:
    """``convert()`` (the inputs fixed at ``shown``) when onnx2tf could not convert the model
    with its open dims (``error``: shape arithmetic on an unknown rank, as in Smart Turn's
    attention); when it cannot convert that either, both reasons (the second is often the op
    behind the first: SLANet's Loop behind a Resize to computed sizes). Sizes chosen here
    for the open dims may be ones the model is not made for (PP-OCR's recognizer at a height
    of 32, not 48: an average pool wider than what is left): the hint says how to give them."""
    try:
        fixed = convert()
    except Unconverted as again:
        if not isinstance(error, Unconverted) or again.detail == error.detail:
            raise error from None
        both = f"{error.detail}; with its inputs fixed at {shown}: {again.detail}"
        hint = _chosen_sizes_hint(shown) if sizes_chosen else LACKS_HINT
        raise Unconverted(error.name, both, hint) from None
    fixed.notes.append(
        f"onnx2tf could not convert it with open dims ({error}): written with its inputs "
        f"fixed at {shown}, the check's sizes (static=false keeps them open)"
    )
    return fixed


def _fixed_if_it_runs(open_dims: _Attempt, convert: Callable[[], _Attempt], shown: str) -> _Attempt:
    """``convert()`` (the inputs fixed at ``shown``) when what it wrote passes its check
    where ``open_dims``'s did not (LiteRT could not run it, or onnx2tf's shape arithmetic
    for open dims gave other values, as on Magika), else ``open_dims`` with a note on why
    fixing them did not help."""
    try:
        fixed = convert()
    except Unfinished:
        raise
    except InputError as e:
        why = str(e)
    else:
        if fixed.problem is None:
            fixed.notes.append(
                f"the .tflite with open dims failed its check ({open_dims.problem}): "
                f"written with its inputs fixed at {shown}, the check's sizes (static=false "
                "keeps them open)"
            )
            return fixed
        why = fixed.problem
    open_dims.notes.append(f"fixing its inputs at {shown} did not help ({why})")
    return open_dims


def _misdeclared(model: Model, outputs: Mapping[str, Any]) -> dict[str, str]:
    """Outputs whose declared shape ONNX Runtime's do not fit (ddddocr's recognizer declares
    ``[1, seqlen]`` and gives ``[time, 1, classes]``), with a note on each: onnx2tf would
    reshape them to the declared shape."""
    return {
        spec.name: f"output {spec.name!r} is declared {spec.shape_text()} but gives "
        f"{list(np.shape(outputs[spec.name]))}: given to onnx2tf without that shape"
        for spec in model.signature.outputs
        if not spec.fits(np.shape(outputs[spec.name]))
    }


def _fixed_shapes(model: Model, feeds: Feeds) -> dict[str, list[int]]:
    """The check's shape of every input that has open dims ({} when none has)."""
    return {
        spec.name: list(feeds[spec.name].shape)
        for spec in model.signature.inputs
        if spec.shape is None or not all(isinstance(d, int) for d in spec.shape)
    }


def input_perms(model: Model, layout: str) -> dict[str, tuple[int, ...]]:
    """Each input's transpose from its ONNX layout to the ``.tflite``'s: axis 1 to the end for
    ranks 3 to 5 with ``nhwc`` (what onnx2tf does), or with ``auto`` for the inputs read as
    channels first (``channels_first_inputs``); none otherwise."""
    channels = channels_first_inputs(model) if layout == "auto" else set()
    perms: dict[str, tuple[int, ...]] = {}
    for spec in model.signature.inputs:
        rank = spec.rank or 0
        moved = layout == "nhwc" or spec.name in channels
        perms[spec.name] = _last(rank) if moved and rank in CHANNELS_LAST else _same(rank)
    return perms


CHANNEL_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "ConvInteger",
        "QLinearConv",
        "MaxPool",
        "AveragePool",
        "LpPool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "BatchNormalization",
        "InstanceNormalization",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
"""Ops that read their first input's axis 1 as channels."""

PASS_THROUGH = frozenset(
    {
        "Identity", "Cast", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Relu", "LeakyRelu",
        "Sigmoid", "Tanh", "Clip", "Pad", "Dropout", "QuantizeLinear", "DequantizeLinear",
    }
)  # fmt: skip
"""Ops that keep a tensor's layout: an image's mean and scale on the way to its first Conv."""


def channels_first_inputs(model: Model) -> set[str]:
    """The inputs that reach a ``CHANNEL_OPS`` op as its first input, directly or through
    ``PASS_THROUGH`` ops only: laid out with channels on axis 1."""
    consumers: dict[str, list[Any]] = {}
    for node in model.proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: set[str] = set()
    for spec in model.signature.inputs:
        seen, frontier = {spec.name}, [spec.name]
        while frontier and spec.name not in found:
            tensor = frontier.pop()
            for node in consumers.get(tensor, []):
                if node.op_type in CHANNEL_OPS and node.input[0] == tensor:
                    found.add(spec.name)
                elif node.op_type in PASS_THROUGH:
                    fresh = [o for o in node.output if o not in seen]
                    seen.update(fresh)
                    frontier += fresh
    return found


def _last(rank: int) -> tuple[int, ...]:
    """The transpose that moves axis 1 to the end (NCHW -> NHWC)."""
    return (0, *range(2, rank), 1)


def _same(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def _parity(
    label: str,
    file: str,
    onnx_name: str,
    ran: Ran,
    reference: list[dict[str, Any]],
    second: SecondOpinion,
    tolerance: Tolerance,
    tool: str = "",
    own: SecondOpinion | None = None,
    *,
    steps: Mapping[str, float] | None = None,
) -> Check:
    """The ``.tflite``'s outputs against ONNX Runtime's (and, where they differ, against ONNX
    Runtime's own noise, ``second``, and LiteRT's on the file, ``own``; a step apart on the
    outputs on a quantization's grid, ``steps``)."""
    from ..parity import compare_within_noise

    if ran.problem is not None:
        return Check(label, False, f"{file}: {ran.problem}", tool=tool)
    candidate, _ = onnx_layout(ran.outputs, reference)
    parity = compare_within_noise(
        reference,
        candidate,
        tolerance,
        second=second,
        candidate_second=own,
        steps=steps,
        reference_name=f"{onnx_name}@onnxruntime",
        candidate_name=f"{file}@litert",
    )
    return Check(label, parity.ok, parity.summary(), tool=tool)


def _reference_kernels(
    pool: Any,
    path: Path,
    feeds: list[Feeds],
    perms: Mapping[str, tuple[int, ...]],
    names: list[str],
    reference: list[dict[str, Any]],
) -> SecondOpinion:
    """The written file on LiteRT's reference kernels, in the worker, when first asked: its
    outputs in the ONNX layout (a failure there is the opinion's failure, said in a note)."""

    def run() -> tuple[list[Feeds], str]:
        ran = pool.submit(_run, str(path), feeds, perms, names, "reference").result()
        if ran.problem is not None:
            raise InputError(ran.problem)
        return onnx_layout(ran.outputs, reference)[0], f"{path.name}@litert (reference kernels)"

    return functools.cache(run)


def onnx_layout(
    outputs: Sequence[Mapping[str, np.ndarray]], reference: Sequence[Mapping[str, Any]]
) -> tuple[list[Feeds], dict[str, bool]]:
    """The ``.tflite``'s outputs in the ONNX layout, and for each output whether it came
    channels last. Its shape decides; when both layouts fit it (C == H == W), the one closer
    to ONNX Runtime's values on the first sample does."""
    last: dict[str, bool] = {}
    for name, got in outputs[0].items():
        want = np.asarray(reference[0].get(name)) if name in reference[0] else None
        if want is None or want.ndim not in CHANNELS_LAST or got.ndim != want.ndim:
            last[name] = False
            continue
        as_is = got.shape == want.shape
        moved = got.shape == tuple(want.shape[i] for i in _last(want.ndim))
        if as_is and moved:
            back = np.transpose(got, np.argsort(_last(got.ndim)))
            last[name] = _distance(back, want) < _distance(got, want)
        else:
            last[name] = moved
    converted = [
        {
            name: np.transpose(got, np.argsort(_last(got.ndim))) if last.get(name) else got
            for name, got in sample.items()
        }
        for sample in outputs
    ]
    return converted, last


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))


def layout_note(model: Model, ran: Ran, reference: Mapping[str, Any], layout: str) -> str:
    """Which layout the ``.tflite`` takes for each input and gives for each output."""

    def kind(name: str, rank: int, last: bool) -> str:
        there = (ran.tensors or {}).get(name, name)
        named = name if there == name else f"{name} (the file's {there})"
        return (
            f"{named} {CHANNELS_LAST[rank]} (axis 1 moved last)" if last else f"{named} as in ONNX"
        )

    if ran.problem is not None:
        return f"layout={layout}: the .tflite did not run, so its layout is not known"
    perms = input_perms(model, layout)
    ins = []
    for spec in model.signature.inputs:
        # onnx2tf left it out (``unread_inputs``, ``_match_inputs``)
        if spec.name not in ran.inputs:
            continue
        rank = spec.rank or 0
        moved = perms[spec.name] != tuple(range(rank))
        shape = ran.inputs[spec.name]
        scalar = " (a scalar in ONNX: give it as [1])" if spec.rank == 0 and shape else ""
        ins.append(f"{kind(spec.name, rank, moved)} {shape}{scalar}")
    _, last = onnx_layout(ran.outputs[:1], [reference])
    outs = []
    for name in model.signature.output_names:
        shape = ran.shapes.get(name, [])
        outs.append(f"{kind(name, len(shape), last.get(name, False))} {shape}")
    return (
        f"layout={layout}: the .tflite takes {'; '.join(ins)} and gives {'; '.join(outs)} "
        "(channels-last tensors are transposed to and from ONNX's layout for the checks)"
    )


@contextlib.contextmanager
def _child() -> Iterator[Any]:
    """One spawned worker process: TensorFlow, onnx2tf and LiteRT stay out of this one (their
    threads, native logging and import-time warnings), and the working folder it changes is
    its own. A crash of the worker is one line. The worker is kept for the next package in
    this process (TensorFlow's import takes about 7 s); each conversion starts from a fresh
    Keras state (``_convert``)."""
    with spawned_worker(
        "onnx2tf or TensorFlow Lite crashed the process that ran them",
        hint="run onnx2tf on the model by hand to see its error",
        keep="tensorflow",
    ) as pool:
        yield pool


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _log_lines(log: str, prefix: str) -> list[str]:
    """onnx2tf's ``prefix`` lines ("ERROR:", "WARNING:"), colours and prefix removed."""
    text = _ANSI.sub("", log)
    lines = [ln.strip() for ln in text.splitlines() if "absl::" not in ln]  # TF's, not onnx2tf's
    return [ln[len(prefix) :].strip() for ln in lines if ln.startswith(prefix)]


def _first_error(log: str) -> str | None:
    """onnx2tf's first error line; where that only announces a traceback, the exception the
    traceback ends in, with the ONNX node it names."""
    errors = _log_lines(log, "ERROR:")
    if not errors or not errors[0].startswith("The trace log is below"):
        return errors[0] if errors else None
    text = _ANSI.sub("", log)
    raised = _RAISED.search(text)
    node = next((e.partition(":")[2].strip() for e in errors if e.startswith("onnx_op_name")), "")
    if raised is None:
        return errors[0]
    message = _TF_FUNCTION.sub("", raised["message"]).strip().removesuffix(" name:")
    return f"{raised['error']}: {message}" + (f" (at node {node})" if node else "")


_RAISED = re.compile(r"^(?:[\w.]+\.)?(?P<error>\w+(?:Error|Exception)): (?P<message>.+)$", re.M)
"""The line a traceback ends in; TensorFlow's errors are spelled with their module
(``tensorflow.python.framework.errors_impl.InvalidArgumentError``)."""
_TF_FUNCTION = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]")
"""Where a TensorFlow op error says it ran (``{{function_node __wrapped__RealDiv_device_...}}``,
``[Op:RealDiv]``)."""


def _as_float32(proto: onnx.ModelProto) -> dict[str, int]:
    """float64 and bfloat16 made float32 everywhere in ``proto`` (inputs, outputs, values,
    initializers, Constant values, casts and dtype attributes), in place; how many of each
    were changed. SwiftF0 computes its pitch in float64, where onnx2tf's Mul fails; onnx2tf
    has no bfloat16 at all (KeyError: 16)."""
    from onnx import AttributeProto, TensorProto, numpy_helper

    names: dict[int, str] = {TensorProto.DOUBLE: "float64", TensorProto.BFLOAT16: "bfloat16"}
    single = TensorProto.FLOAT
    changed = dict.fromkeys(names.values(), 0)

    def widened(tensor: onnx.TensorProto) -> onnx.TensorProto:
        changed[names[tensor.data_type]] += 1
        values = numpy_helper.to_array(tensor).astype(np.float32)
        return numpy_helper.from_array(values, tensor.name)

    for graph in iter_graphs(proto):
        for i, tensor in enumerate(graph.initializer):
            if tensor.data_type in names:
                graph.initializer[i].CopyFrom(widened(tensor))
        for value in (*graph.input, *graph.output, *graph.value_info):
            kind = value.type.tensor_type.elem_type
            if kind in names:
                changed[names[kind]] += 1
                value.type.tensor_type.elem_type = single
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == AttributeProto.TENSOR and attribute.t.data_type in names:
                    attribute.t.CopyFrom(widened(attribute.t))
                elif attribute.name in ("to", "dtype") and attribute.i in names:
                    changed[names[attribute.i]] += 1
                    attribute.i = single
    return {kind: count for kind, count in changed.items() if count}


def _folded(
    model: Model, shapes: Mapping[str, list[int]], unshaped: Mapping[str, str]
) -> tuple[Model, list[str]]:
    """What onnx2tf is given, and notes on it: ``model`` with its weights apart from its inputs
    (IR 3), open dims written as -1 (Paddle) made unknown, and its constants folded by onnxslim
    as onnx2tf's own onnxsim step would (its Conv takes weights computed by ConstantOfShape or
    a Reshape only as constants); with ``shapes``, those inputs fixed at them (onnxslim's
    ``input_shapes``: the shape arithmetic folds away); the outputs in ``unshaped`` without
    their declared shapes (the values are their notes). Without onnxslim, or where it fails,
    unfolded."""
    proto = inlined(weights_not_inputs(model))
    notes = [unshaped[o.name] for o in proto.graph.output if o.name in unshaped]
    for output in proto.graph.output:
        if output.name in unshaped:
            output.type.tensor_type.ClearField("shape")
    notes += _keras_names(proto.graph)
    if quantized_ops := as_qdq(proto):
        notes.append(QDQ_NOTE.format(ops=listed(quantized_ops), tool="onnx2tf"))
    if products := as_float_products(proto):
        notes.append(INTEGER_NOTE.format(ops=listed(products), tool="onnx2tf"))
    _tf_op_names(proto.graph)
    if stfts := stft_as_conv(proto):
        notes.append(STFT_NOTE.format(count=stfts, tool="onnx2tf"))
    if fused := unfuse(proto):
        notes.append(UNFUSED_NOTE.format(ops=listed(fused), tool="onnx2tf"))
    if narrowed := _as_float32(proto):
        counted = " and ".join(f"{count} {kind}" for kind, count in narrowed.items())
        notes.append(
            f"its {counted} tensors and casts were given to onnx2tf as float32 (LiteRT has few "
            "float64 kernels and onnx2tf no bfloat16): the .tflite computes in float32"
        )
    if norms := _norms_as_sums(proto.graph):
        notes.append(
            f"its {norms} ReduceL2 nodes were given to onnx2tf as Sqrt(ReduceSumSquare) "
            "(onnx2tf's ReduceL2 over one axis fails in tf.norm)"
        )
    if quantized := as_float_ops(proto):
        notes.append(
            f"its {quantized} QuantizeLinear/DequantizeLinear nodes were given to onnx2tf as the "
            "float ops that compute them (onnx2tf's QuantizeLinear is a Flex op)"
        )
    if open_negative_dims(proto):
        notes.append("dims written as -1 were given to onnx2tf as unknown")
    try:
        import onnxslim
    except ImportError:
        return Model.from_proto(proto), [*notes, "onnxslim is not installed: nothing folded"]
    fixed = [f"{name}:{','.join(str(d) for d in dims)}" for name, dims in shapes.items()]
    try:
        slimmed = onnxslim.slim(proto, input_shapes=fixed or None)
    except Exception as e:
        notes.append(f"onnxslim could not fold the model for onnx2tf ({one_line(e)})")
        return Model.from_proto(proto), notes
    before, after = len(proto.graph.node), len(slimmed.graph.node)
    if after < before:
        notes.append(
            f"onnxslim {onnxslim.__version__} folded it for onnx2tf: {before} -> {after} nodes"
        )
    return Model.from_proto(slimmed), notes


KERAS_NAME = re.compile(r"[A-Za-z0-9_.:/-]+")
"""Names onnx2tf's Keras layers take (``:`` it makes ``_`` itself); not spaces, quotes or
braces."""


def _keras_names(graph: onnx.GraphProto) -> list[str]:
    """Rename the inputs and outputs whose names onnx2tf cannot give a Keras layer
    (openWakeWord's timer names its output with a JSON text); a note for each input, whose
    name the ``.tflite`` keeps (outputs are ``Identity``, ``Identity_1``, ... in any case)."""
    taken = value_names(graph)
    renames: dict[str, str] = {}
    for value in (*graph.input, *graph.output):
        if KERAS_NAME.fullmatch(value.name):
            continue
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", value.name).strip("_") or "tensor"
        names = itertools.chain([stem], (f"{stem}_{i}" for i in itertools.count(1)))
        new = next(n for n in names if n not in taken)
        taken.add(new)
        renames[value.name] = new
    inputs = {v.name for v in graph.input}
    rename_values(graph, renames)
    return [
        f"input {old!r} is {new!r} in the .tflite: onnx2tf cannot take its name"
        for old, new in renames.items()
        if old in inputs
    ]


TF_OP_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_./>-]*")
"""Names TensorFlow takes for an op (onnx2tf names a Conv's kernel variable after its node)."""


def _tf_op_names(graph: onnx.GraphProto) -> None:
    """Rename, in place, the nodes whose names TensorFlow refuses for an op: the TorchScript
    exporter's ``/model/encoder/pos_conv_embed/conv/Conv`` (a leading ``/``) stopped onnx2tf
    at "the OP name does not match" when it made the Conv's kernel (HuBERT's grouped
    position convolution); other characters become ``_``."""
    taken = {node.name for g in walk_graphs(graph) for node in g.node}
    for g in walk_graphs(graph):
        for node in g.node:
            if not node.name or TF_OP_NAME.fullmatch(node.name):
                continue
            stem = re.sub(r"[^A-Za-z0-9_./>-]", "_", node.name).lstrip("_/>-") or "node"
            names = itertools.chain([stem], (f"{stem}_{i}" for i in itertools.count(1)))
            node.name = next(n for n in names if n not in taken)
            taken.add(node.name)


def _norms_as_sums(graph: onnx.GraphProto) -> int:
    """Rewrite each ReduceL2 (``torch.norm``, ``F.normalize``: every embedding model's last
    step) as ``Sqrt(ReduceSumSquare)``, in place: onnx2tf hands tf.norm a NumPy integer axis,
    which TensorFlow refuses. ReduceSumSquare takes its axes as ReduceL2 does in every opset
    (an attribute before 18, an input from 18). Returns how many were rewritten."""
    from onnx import helper

    taken = value_names(graph)
    rewritten: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        if node.op_type != "ReduceL2" or node.domain not in ("", "ai.onnx"):
            rewritten.append(node)
            continue
        squares = next(
            name
            for i in itertools.count()
            if (name := f"{node.output[0]}_sum_square_{i}") not in taken
        )
        taken.add(squares)
        summed = helper.make_node(
            "ReduceSumSquare", list(node.input), [squares], name=f"{node.name}_sum_square"
        )
        summed.attribute.extend(node.attribute)
        rewritten += [
            summed,
            helper.make_node("Sqrt", [squares], list(node.output), name=node.name),
        ]
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(rewritten)
    return count


@contextlib.contextmanager
def _no_saved_model() -> Iterator[None]:
    """(In the worker.) onnx2tf without its SavedModel: it writes one before the .tflite files,
    which it converts from the Keras model's concrete function and never from that folder
    (only its integer-quantized output, not asked for, reads it back). Writing it was 71 of
    onnx2tf's 190 s on Smart Turn's encoder."""
    import tensorflow as tf

    with _patched(tf.saved_model, "save", lambda *args, **kwargs: None):
        yield


NO_ESTIMATION = "onnxferry: onnx2tf's shape estimation is left to strict mode"


@contextlib.contextmanager
def _no_shape_estimation() -> Iterator[None]:
    """(In the worker.) onnx2tf without its shape estimation: before converting, it runs the
    whole ONNX model in ONNX Runtime for every op's output, and then, at each MatMul,
    Transpose or Reshape whose shapes it doubts, runs the TensorFlow graph built so far and
    tries axis orders against those outputs. Smart Turn's encoder took 102 s with it and 58 s
    without, with the same file's parity; PP-OCR's recognizer built 577 Keras models for one
    attention MatMul. ferry checks the file against ONNX Runtime in any case, and a file that
    fails is converted again in strict mode, which estimates as onnx2tf does. onnx2tf goes on
    without the estimation when the run raises, as on a model ONNX Runtime cannot run; the
    ops that would search axis orders against its values anyway get none
    (``_SEARCHES_WITHOUT_VALUES``)."""
    import importlib

    module = importlib.import_module("onnx2tf.onnx2tf")
    if getattr(module, "dummy_onnx_inference", None) is None:  # another onnx2tf: as it comes
        yield
        return

    def skipped(**_: object) -> None:
        raise RuntimeError(NO_ESTIMATION)

    def no_values(**_: object) -> tuple[dict[str, np.ndarray], None, None]:
        return {}, None, None

    with contextlib.ExitStack() as patches:
        patches.enter_context(_patched(module, "dummy_onnx_inference", skipped))
        for op in _SEARCHES_WITHOUT_VALUES:
            searching = importlib.import_module(f"onnx2tf.ops.{op}")
            if hasattr(searching, "acquisition_of_validation_data"):
                patches.enter_context(
                    _patched(searching, "acquisition_of_validation_data", no_values)
                )
        yield


_SEARCHES_WITHOUT_VALUES = ("Concat", "Tile")
"""onnx2tf's ops that try every pair of axis orders of their two inputs, a Keras model and a
TensorFlow run each, whether or not ONNX values exist to judge them by (the others ask first):
without them every try is thrown away and the inputs' own order kept. A Concat of two 5-D
tensors is 14,400 tries (invisible-watermark's RivaGAN encoder: more than 14 minutes); given
no values to try with, each ends at once, the order kept is the same."""


@contextlib.contextmanager
def _patched(module: object, name: str, value: object) -> Iterator[None]:
    """``module.name`` is ``value`` inside the block (an untyped module's function)."""
    kept = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, kept)


def _estimation_skipped(warning: str) -> bool:
    """Whether ``warning`` is onnx2tf's word on the estimation ``_no_shape_estimation``
    skipped (its reason, then the exception's text)."""
    return warning == NO_ESTIMATION or warning.startswith(
        "The optimization process for shape estimation is skipped"
    )


def _fresh_keras() -> None:
    """(In the worker.) Keras's global state (layer name counters, the graph onnx2tf built)
    cleared, so the kept worker's next conversion is made as in a fresh one."""
    tf_keras = sys.modules.get("tf_keras")
    if tf_keras is not None:
        tf_keras.backend.clear_session()


def _convert(model: str, keep: list[str], strict: bool) -> Converted | str:
    """(In the worker.) Run onnx2tf in the model's folder, the inputs in ``keep`` kept in
    their ONNX layout, its strict mode on or off; the .tflite files, or one line (onnx2tf's
    first error: advice follows it)."""
    work = Path(model).parent
    np.save(work / SAMPLE_IMAGES, np.random.default_rng(0).random((20, 128, 128, 3), np.float32))
    here = os.getcwd()
    os.chdir(work)
    console: NativeOutput | None = None
    try:
        quick = contextlib.nullcontext() if strict else _no_shape_estimation()
        with native_output((1, 2)) as console, _no_saved_model(), quick:
            import onnx2tf

            onnx2tf.convert(
                input_onnx_file_path=model,
                output_folder_path=str(work / "out"),
                not_use_onnxsim=True,
                # onnx2tf matches these after writing every ':' of an input's name as '__'
                # (tf2onnx's "image_tensor:0" was never kept, and went in transposed)
                keep_ncw_or_nchw_or_ncdhw_input_names=[k.replace(":", "__") for k in keep] or None,
                # TFLite has no builtin Erf: tf.math.erf would be a Flex op that LiteRT's
                # interpreter cannot run (every GELU); onnx2tf's polynomial is within 1.5e-7
                replace_to_pseudo_operators=["erf"],  # lower case: the CLI lowers its own
                disable_strict_mode=not strict,
                verbosity="info",
            )
    except (Exception, SystemExit) as e:
        log = console.text() if console else ""
        return one_line(_first_error(log) or one_line(e, line="first", named=True))
    finally:
        os.chdir(here)
        _fresh_keras()
    log = console.text()
    out = work / "out"
    files = {kind: out / f"model_{kind}.tflite" for kind in ("float32", "float16")}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        errors = _log_lines(log, "ERROR:")
        return f"it wrote no {', '.join(missing)}" + (f" ({errors[0]})" if errors else "")
    warnings = [w for w in _log_lines(log, "WARNING:") if not _estimation_skipped(w)]
    warnings = list(dict.fromkeys(warnings))[:3]
    return Converted({k: p.read_bytes() for k, p in files.items()}, onnx2tf.__version__, warnings)


def _run(
    path: str,
    feeds: list[Feeds],
    perms: Mapping[str, tuple[int, ...]],
    names: list[str],
    kernels: str = "default",
) -> Ran:
    """(In the worker.) Read ``path`` into LiteRT's interpreter and run every feed set, each
    input transposed by ``perms``; outputs under the ONNX ``names``, in the file's layout.
    ``kernels="reference"``: on LiteRT's reference kernels, the file's second opinion."""
    from importlib.metadata import version

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    litert = version("ai-edge-litert")
    resolver = OpResolverType.BUILTIN_REF if kernels == "reference" else OpResolverType.AUTO
    with native_output((1, 2)):
        try:
            interpreter = Interpreter(model_path=path, experimental_op_resolver_type=resolver)
            inputs = _match_inputs(interpreter.get_input_details(), list(perms))
            first = {n: np.transpose(feeds[0][n], p) for n, p in perms.items()}
            scalars = set()  # onnx2tf gives a scalar input one axis: it is fed as [1]
            for name, detail in inputs.items():
                wanted = list(first[name].shape)
                known = [int(d) for d in detail["shape_signature"]]
                if not wanted and known in ([1], [-1]):
                    scalars.add(name)
                    wanted = [1]
                if len(known) != len(wanted) or any(
                    k not in (-1, w) for k, w in zip(known, wanted, strict=False)
                ):
                    problem = f"input {name!r} takes {known}, the feed is {wanted} in this layout"
                    return Ran([], {}, {}, litert, problem)
                if list(detail["shape"]) != wanted:
                    interpreter.resize_tensor_input(detail["index"], wanted)
            interpreter.allocate_tensors()
            details = _match_outputs(interpreter.get_output_details(), names)
            outputs = []
            for feed in feeds:
                for name, detail in inputs.items():
                    value = np.transpose(feed[name], perms[name]).astype(detail["dtype"])
                    interpreter.set_tensor(
                        detail["index"], value.reshape(1) if name in scalars else value
                    )
                interpreter.invoke()
                outputs.append(
                    {n: np.array(interpreter.get_tensor(d["index"])) for n, d in details.items()}
                )
        except Exception as e:
            flex = _flex_ops(path) if "Select TensorFlow op" in str(e) else None
            why = (
                f"it needs TensorFlow ops that LiteRT's builtins lack: {flex} (the Flex "
                "delegate, tensorflow-lite-select-tf-ops, runs them)"
                if flex
                else one_line(e, line="first")
            )
            return Ran([], {}, {}, litert, f"LiteRT cannot run it: {why}")
    taken = {n: [int(d) for d in detail["shape_signature"]] for n, detail in inputs.items()}
    given = {n: [int(d) for d in detail["shape_signature"]] for n, detail in details.items()}
    tensors = {n: str(d["name"]) for n, d in {**inputs, **details}.items()}
    return Ran(outputs, taken, given, litert, tensors=tensors)


def _flex_ops(path: str) -> str | None:
    """(In the worker.) The TensorFlow ops a .tflite runs through the Flex delegate, with
    their counts ("ClipByValue (78), Erf (8)"), from TensorFlow's analyzer; None if it
    cannot tell."""
    import io

    import tensorflow as tf

    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            tf.lite.experimental.Analyzer.analyze(model_path=path)
    except Exception:
        return None
    found = re.findall(r"Op#\d+ Flex(\w+)", text.getvalue())
    counts = {op: found.count(op) for op in dict.fromkeys(found)}
    return ", ".join(f"{op} ({n})" for op, n in counts.items()) or None


def _match_inputs(details: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """The interpreter's inputs under the ONNX names: by name (onnx2tf keeps it, ``:`` made
    ``_``), else in order. Every input of the file found by name but some of the model's
    missing: onnx2tf left those out (at fixed sizes, an input whose values no output needs,
    as onnx-asr's ``waveforms_lens`` read only through Shape), and the run goes without them."""
    by_name = {d["name"]: d for d in details}
    found = {n: by_name.get(n) or by_name.get(n.replace(":", "_")) for n in names}
    matched = {n: d for n, d in found.items() if d is not None}
    if len(matched) == len(details):
        return matched
    if len(details) != len(names):
        raise ValueError(f"the .tflite has {len(details)} inputs, the model {len(names)}")
    return dict(zip(names, sorted(details, key=lambda d: d["index"]), strict=True))


def _match_outputs(details: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """The interpreter's outputs under the ONNX names: onnx2tf's ``Identity``, ``Identity_1``,
    ... are the ONNX outputs in order; by name when the file kept them."""
    by_name = {d["name"]: d for d in details}
    if all(n in by_name for n in names):
        return {n: by_name[n] for n in names}
    if len(details) != len(names):
        raise ValueError(f"the .tflite has {len(details)} outputs, the model {len(names)}")

    def position(detail: dict[str, Any]) -> int:
        found = re.fullmatch(r"Identity(?:_(\d+))?", str(detail["name"]))
        return int(found.group(1) or 0) if found else len(names) + int(detail["index"])

    return dict(zip(names, sorted(details, key=position), strict=True))


def _installed() -> None:
    import importlib.util

    lacking = [
        m for m in ("onnx2tf", "tensorflow", "ai_edge_litert") if not importlib.util.find_spec(m)
    ]
    if lacking:
        raise InputError(
            f"the tflite target needs {', '.join(lacking)}",
            hint="pip install 'onnxferry[tflite]'",
        )


def _options(given: Mapping[str, Any], model: Model) -> dict[str, Any]:
    from ..parity.tolerance import FLOAT16, between_runtimes

    default = between_runtimes(model)
    opts = Options("tflite", given, KEYS)
    layout = opts.text("layout", "auto").lower()
    if layout not in LAYOUTS:
        raise opts.refuse("layout", f"one of {', '.join(LAYOUTS)}", "nchw")
    chosen: dict[str, str] = {}
    for key in ("static", "strict"):
        chosen[key] = opts.text(key, "auto").lower()
        if chosen[key] not in TRI_STATE:
            raise opts.refuse(key, f"one of {', '.join(TRI_STATE)}", "true")
    return {
        "layout": layout,
        **chosen,
        "fp16": opts.flag("fp16", False),
        "timeout": opts.number("timeout", TIMEOUT_S, low=1),
        **check_options(opts),
        "atol": opts.number("atol", default.atol, low=0),
        "rtol": opts.number("rtol", default.rtol, low=0),
        "fp16_atol": opts.number("fp16_atol", FLOAT16[0], low=0),
        "fp16_rtol": opts.number("fp16_rtol", FLOAT16[1], low=0),
    }
