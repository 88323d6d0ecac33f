"""`ferry convert`: detect the framework, try every exporter, keep the one that passes parity.

    model = convert(module, "model.onnx", inputs=[{"x": x}])
    model = convert("train.py:make_model", "model.onnx", input_shapes={"x": (1, 3, 224, 224)})
    report = model.last_report(Conversion)   # typed: a Report[Conversion]
    report.to_text()                         # which exporter, why, and the parity figures
    report.result.chosen, report.result.attempts[0].parity

Verification runs every candidate (a fallback only when none before it passed) on several
input shapes (each dynamic axis takes at least two values), on the user's samples when given
and on realistic generated inputs otherwise. The checks go in order: output names, output
count, shapes at each tested shape, values. When no candidate passes, VerificationError (exit
1) carries the report; nothing is written.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..data import load_feeds
from ..errors import FerryError, InputError, UnknownOperatorError, UsageError, one_line
from ..feeds import Given, verification_feeds
from ..graphs import name_output_dims, set_metadata, sized_by_data
from ..model import Model
from ..parity import Divergence, Parity, Tolerance
from ..report import Report, Table
from ..runtime import OrtRunner, runtime_limits
from ..signature import Signature
from .base import FRAMEWORKS, Candidate, ConversionError, ConvertOptions, ParityFailure, Source
from .factory import Built, is_factory, run_factory
from .verdict import SourceJudge

SAME_SPEED = 0.05
"""Latencies closer than this fraction count as equal: the preferred exporter is kept."""

CHOOSING_S = 2.0
"""About how long each exporter's model is timed when several pass (200 runs of a fast
model; 10 of a 3D segmentation network at a second a run, not 200)."""


@dataclass
class Attempt:
    """One exporter's try: exported or not, and its parity against the source."""

    exporter: str
    status: str = "error"  # "chosen", "passed", "failed" (parity), "error" (export), NOT_TRIED
    error: str | None = None
    hint: str | None = None
    """What to do about ``error``, where the exporter's error says."""
    export_s: float | None = None
    parity: Parity | None = None
    latency_ms: float | None = None
    caveats: list[str] = field(default_factory=list)
    """Where the export took a value the source computes from its inputs as fixed
    (``Candidate.caveats``)."""
    dims: dict[str, dict[int, str]] = field(default_factory=dict)
    """Output dims the export left unknown that followed a named input dim in every
    verification run (``Signature.dims_following_inputs``): named so in the model kept."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "exporter": self.exporter,
            "status": self.status,
            "error": "; ".join(filter(None, (self.error, self.hint))) or None,
            "export_s": self.export_s,
            "latency_ms": self.latency_ms,
            "parity": self.parity.to_dict() if self.parity else None,
            "caveats": self.caveats,
        }

    def fixed(self, kind: str = "") -> str:
        """The caveats (of one ``kind``, their opening words, then left out) as one clause,
        "" for none."""
        said = [c.removeprefix(kind).strip() for c in self.caveats if c.startswith(kind)]
        more = f" and {len(said) - _CAVEATS} more" if len(said) > _CAVEATS else ""
        return "; ".join(said[:_CAVEATS]) + more


NOT_TRIED = "not tried"
"""A fallback candidate's status when one before it passed."""

_CAVEATS = 3
"""Places a trace fixed a value, named in one line."""
_BRANCH = "a Python boolean"
"""The caveats that are a branch (the others fix a number or a count)."""


@dataclass
class Conversion:
    """What `convert` did (ReportBody): the source, every attempt, the choice and why."""

    source: str
    framework: str
    output: str | None
    verified: bool
    shapes: list[dict[str, list[int]]] = field(default_factory=list)
    inputs_from: str = "generated"
    attempts: list[Attempt] = field(default_factory=list)
    chosen: str | None = None
    reason: str = ""
    divergence: Divergence | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.chosen is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "framework": self.framework,
            "output": self.output,
            "verified": self.verified,
            "chosen": self.chosen,
            "reason": self.reason,
            "inputs_from": self.inputs_from,
            "tested_shapes": self.shapes,
            "attempts": [a.to_dict() for a in self.attempts],
            "divergence": self.divergence.to_dict() if self.divergence else None,
            "details": self.details,
        }

    def tables(self) -> list[Table]:
        rows = []
        for a in self.attempts:
            worst = a.parity.worst if a.parity else None
            if a.status == NOT_TRIED:
                detail = "a fallback: tried only when the exporters before it fail"
            elif a.error or a.parity is None:
                detail = a.error or "not verified"
            else:
                detail = "outputs match" if a.parity.ok else a.parity.summary()
            rows.append(
                (
                    a.exporter,
                    a.status.upper(),
                    a.parity.max_abs if a.parity else None,
                    worst.name if worst else None,
                    a.latency_ms,
                    a.export_s,
                    detail,
                )
            )
        columns = ("exporter", "result", "max abs", "worst", "p50 ms", "export s", "detail")
        shapes = "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) for s in self.shapes)
        tables = [Table(f"convert {self.source} ({self.framework}) on {shapes}", columns, rows)]
        if self.chosen is not None:
            tables.append(Table("choice", ("kept", "why"), [(self.chosen, self.reason)]))
            kept = next(a for a in self.attempts if a.exporter == self.chosen)
            if kept.parity is not None:  # per output: errors, top-1, exact match (1 - flips)
                tables.extend(kept.parity.tables())
        if self.divergence is not None:
            d = self.divergence
            tables.append(
                Table(
                    "first divergence",
                    ("layer", "onnx tensor", "op", "max abs", "required atol"),
                    [(d.node, d.tensor, d.op_type, d.max_abs, d.required_atol)],
                )
            )
        return tables


def convert(
    source: Any,
    output: str | Path | None = None,
    *,
    framework: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: Given | None = None,
    dynamic: Mapping[str, Mapping[int, str]] | None = None,
    opset: int | None = None,
    tolerance: Tolerance | None = None,
    verify: bool = True,
    trust_pickle: bool = False,
    example_inputs: Any = None,
    custom_export: str | Path | None = None,
    graph_outputs: Sequence[str] = (),
    bindings: Mapping[str, bool | int | float] | None = None,
) -> Model:
    """Convert ``source`` to ONNX, verified against the source framework; write ``output``.

    ``source``: a torch ``nn.Module`` / ExportedProgram, a scikit-learn estimator, a Keras
    model, a ``tf.function`` with an input signature (or a ``ConcreteFunction``), an ONNX
    ``Model``, or a path: ``file.py:function`` (a factory that builds any of
    these models, ``convert.factory``), ``.pt``/``.pth``/``.jit`` (TorchScript), ``.pt2``
    (ExportedProgram), ``.keras``, a SavedModel directory, a frozen TensorFlow graph
    ``.pb``, a TF1 checkpoint (its ``.meta``, or its folder), ``.tflite``,
    ``.pkl``/``.joblib`` (needs ``trust_pickle``: unpickling runs code), ``.onnx``; or a
    ``Source`` built by the caller (a custom exporter, verified like the built-in ones).
    ``custom_export``: a Python file translating the torch model's custom layers to ONNX (its
    ``custom_translation_table`` for the dynamo exporter, ``symbolics`` for TorchScript's;
    see ``convert.torch.custom``).
    ``graph_outputs`` and ``bindings``: a TensorFlow graph's outputs (instead of its ends)
    and placeholders fixed to a value (``{"keep_prob": 1.0}``), for a frozen graph or a TF1
    checkpoint (``convert.graphdef``, ``convert.checkpoint``).
    Returns the Model; its report is ``model.last_report(Conversion)``. Raises
    ConversionError (exit 2) when no exporter produces a model and
    VerificationError (exit 1, with ``.report``) when none passes parity; nothing is written
    then.
    """
    options = options_for(
        input_shapes,
        inputs,
        dynamic,
        opset,
        trust_pickle,
        custom_export,
        graph_outputs=graph_outputs,
        bindings=bindings,
    )
    loaded = load_source(source, options, framework=framework, example_inputs=example_inputs)
    tolerance = tolerance or loaded.tolerance or Tolerance()
    result = Conversion(
        source=_describe(source),
        framework=loaded.framework,
        output=str(output) if output is not None else None,
        verified=verify,
        details={"source": loaded.description, **loaded.details},
    )
    feeds = _verification_feeds(loaded, options, result)
    judge = SourceJudge(loaded, feeds, tolerance) if verify else None
    with tempfile.TemporaryDirectory(prefix="onnxferry-convert-") as tmp:
        models: dict[str, Model] = {}
        unknown: list[UnknownOperatorError] = []
        for i, candidate in enumerate(loaded.candidates):
            attempt = Attempt(candidate.exporter)
            result.attempts.append(attempt)
            if candidate.fallback and any(a.status == "passed" for a in result.attempts):
                attempt.status = NOT_TRIED
                continue
            model = _export(candidate, Path(tmp) / f"candidate{i}" / "model.onnx", attempt)
            if model is None:
                continue
            models[candidate.exporter] = model
            if judge is not None:
                found = _verify(model, judge, attempt)
                unknown += [found] if found is not None else []
            else:
                attempt.status = "passed"
        _choose(result, models, feeds)
        report = Report("convert", result, notes=list(loaded.notes))
        if not verify:
            report.notes.append(
                "NOT VERIFIED: --no-verify skipped the parity check against the source; "
                "this model may differ from the original"
            )
        if result.chosen is None:
            _fail(result, report, loaded, models, feeds, tolerance, unknown)
        kept = next(a for a in result.attempts if a.exporter == result.chosen)
        if branches := kept.fixed(_BRANCH):
            report.notes.append(
                f"{kept.exporter} kept branches as the example took them where the code "
                f"turned a tensor (a value or a size) into a Python boolean ({branches}): "
                f"verified on {len(feeds)} input sets, but inputs that take another branch may "
                "get other outputs"
            )
        chosen = models[result.chosen]  # type: ignore[index]
        if name_output_dims(chosen.proto, kept.dims):
            named = ", ".join(
                f"{output}[{axis}] {name!r}"
                for output, axes in kept.dims.items()
                for axis, name in axes.items()
            )
            report.notes.append(
                f"output dims {kept.exporter} left unnamed took the names of the input dims "
                f"they followed in all {len(feeds)} input sets checked: {named}"
            )
        _stamp(chosen, result, loaded)
        final = chosen.save(output) if output is not None else chosen.detached()
    final.provenance.append(report)
    return final


# --- steps ---------------------------------------------------------------------------------


def detect_framework(source: Any) -> str:
    """The framework a source comes from, by type for objects and by name/content for paths."""
    if isinstance(source, Model):
        return "onnx"
    if not isinstance(source, (str, Path)):
        for cls in type(source).__mro__:
            module = cls.__module__
            if module.startswith("torch"):
                return "torch"
            if module.startswith(("sklearn", "lightgbm", "xgboost", "catboost")):
                return "sklearn"  # boosters and their scikit-learn estimators too
            if module.startswith(("keras", "tf_keras")):
                return "keras"
            if module.startswith("tensorflow"):  # a tf.function or ConcreteFunction
                return "tf"
            if module.startswith("onnx") and type(source).__name__ == "ModelProto":
                return "onnx"
        raise UsageError(
            f"cannot tell which framework a {type(source).__name__} comes from",
            hint=f"pass framework= one of {', '.join(FRAMEWORKS)}",
        )
    text = str(source)
    if is_factory(text):
        raise UsageError(
            f"{text} is a factory: its framework is that of the model it returns",
            hint="load it with load_source, which runs it",
        )
    path = Path(text)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory", hint="check the path")
    from .checkpoint import is_checkpoint

    if is_checkpoint(path):  # a TF1 checkpoint's .meta graph, or its folder
        return "tf"
    if path.is_dir():
        from .torch.pretrained import WEIGHTS, is_pretrained_dir, names_a_transformers_model

        if (path / "saved_model.pb").is_file():
            return "tf"
        if any(path.glob("*.onnx")):
            return "onnx"
        if is_pretrained_dir(path):
            return "torch"
        if names_a_transformers_model(path):
            raise InputError(
                f"{path}: a Hugging Face model folder without PyTorch weights (none of "
                f"{', '.join(WEIGHTS)})",
                hint="save the model with save_pretrained from PyTorch",
            )
        if any(path.glob("*.index")):
            _weights_only_checkpoint(path)
        raise InputError(
            f"{path}: a directory with neither saved_model.pb, a checkpoint's .meta, an .onnx "
            "model nor a Hugging Face model (config.json and its weights)",
            hint="pass a model file, or --framework",
        )
    by_suffix = {
        ".onnx": "onnx",
        ".keras": "keras",
        ".h5": "keras",
        ".hdf5": "keras",  # Keras 2's ModelCheckpoint default, e.g. fer's emotion_model.hdf5
        ".pb": "tf",  # a frozen GraphDef, or a SavedModel's saved_model.pb
        ".tflite": "tflite",
        ".pt": "torch",
        ".pth": "torch",
        ".pt2": "torch",
        ".ckpt": "torch",  # a training checkpoint (PyTorch Lightning's), e.g. pesto's weights
        ".ts": "torch",
        ".jit": "torch",  # Silero VAD ships its TorchScript as silero_vad.jit
        ".torchscript": "torch",
        ".pkl": "sklearn",
        ".pickle": "sklearn",
        ".joblib": "sklearn",
    }
    suffix = path.suffix.lower()
    from .torch.sources import is_torch_save

    if suffix in (".pkl", ".pickle") and is_torch_save(path):
        return "torch"  # torch.save under a pickle's name (facial_emotion_recognition's)
    if suffix in by_suffix:
        return by_suffix[suffix]
    from .sklearn.booster_files import booster_file_kind

    if booster_file_kind(path) is not None:  # LightGBM's model.txt, XGBoost's model.json
        return "sklearn"
    with path.open("rb") as file:
        head = file.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    if suffix == ".index" or ".data-" in path.name:
        _weights_only_checkpoint(path)
    if suffix == ".safetensors":
        raise InputError(
            f"{path}: safetensors weights, not a model: nothing in it says how they connect",
            hint="give a factory FILE.py:FUNCTION that builds the model and loads them "
            "(safetensors.torch.load_file), or the Hugging Face folder with its config.json",
        )
    if is_torch_save(path):
        return "torch"  # a torch.save file under another name: pytorch_model.bin
    from .sklearn.estimators import is_pickle

    if is_pickle(path):
        return "sklearn"  # a pickle under no pickle's name; its loader says what it holds
    raise InputError(
        f"{path}: cannot tell which framework this file comes from",
        hint=f"pass --framework, one of {', '.join(FRAMEWORKS)}",
    )


def _weights_only_checkpoint(path: Path) -> None:
    """InputError for a TensorFlow checkpoint's weights without a ``.meta`` graph (what
    ``tf.train.Checkpoint`` and Keras' ``save_weights`` write)."""
    raise InputError(
        f"{path}: a TensorFlow checkpoint's weights (.index, .data-*) without its graph "
        "(a .meta): nothing in them says how they connect",
        hint="give a factory FILE.py:FUNCTION that builds the model and restores them "
        "(tf.train.Checkpoint(model=...).restore), or export a SavedModel",
    )


def load_source(
    source: Any,
    options: ConvertOptions,
    *,
    framework: str | None = None,
    example_inputs: Any = None,
) -> Source:
    """The framework loader's Source for ``source`` (a caller-built Source is used as is:
    its own reference and exporters). ``framework`` overrides detect_framework.
    ``example_inputs``: torch's example inputs (positional, or by keyword); for any other
    framework one feed set, ``{input name: array}`` or arrays in the order of the model's
    inputs, kept as the first of the source's samples."""
    if isinstance(source, Source):
        return source
    if is_factory(source):
        _graph_options_unused(options, "a factory's model")
        return _load_built(run_factory(source), options, framework, example_inputs)
    name = framework or detect_framework(source)
    if name == "torch" or example_inputs is None:
        loaded = _load_framework(source, options, name, example_inputs)
    else:  # another framework's example inputs: a feed set (by name, or in the inputs' order)
        given = example_inputs if isinstance(example_inputs, (tuple, list)) else [example_inputs]
        one = None
        if name == "keras" and len(given) == 1 and not isinstance(given[0], Mapping):
            one = np.asarray(given[0])  # shapes a subclassed model's input
        loaded = _load_framework(source, options, name, one)
        loaded.samples.append(_named_example(example_inputs, loaded.reference.signature))
    if options.input_shapes or options.dynamic_axes:
        _check_input_names(options, loaded.reference.signature)
    return loaded


def _check_input_names(options: ConvertOptions, signature: Signature) -> None:
    """UsageError for an ``--input-shape`` or ``--dynamic`` that names no input of the
    loaded model (a typo there left every axis as the example had it)."""
    names = signature.input_names
    for flag, given in (
        ("--input-shape", options.input_shapes),
        ("--dynamic", options.dynamic_axes),
    ):
        unknown = [n for n in given or {} if n not in names]
        if unknown:
            raise UsageError(
                f"{flag} names {unknown[0]!r}, which is not an input of this model (its "
                f"inputs: {', '.join(names) or 'none'})",
                hint=f"name {' or '.join(map(repr, names[:4])) or 'no input'} in {flag}",
            )


def _load_framework(source: Any, options: ConvertOptions, name: str, example: Any) -> Source:
    """``source`` loaded by the loader of framework ``name`` (``example``: torch's example
    inputs, or the one array that shapes a subclassed Keras model)."""
    if options.custom_export is not None and name != "torch":
        raise UsageError(
            f"--custom-export translates torch layers; this source is {name}",
            hint="leave out --custom-export (custom_export=) for this source",
        )
    if name != "tf":
        _graph_options_unused(options, f"a model of {name}")
    if name == "torch":
        from .torch import load_torch

        return load_torch(source, options, example_inputs=example)
    if name == "sklearn":
        from .sklearn import load_sklearn

        return load_sklearn(source, options)
    if name == "keras":
        from .keras import load_keras

        return load_keras(source, options, example)
    if name == "tf":
        from .keras import load_saved_model

        if not isinstance(source, (str, Path)):
            from .tf_function import load_tf_function

            _graph_options_unused(options, "a TensorFlow function")
            return load_tf_function(source, options)
        from .checkpoint import is_checkpoint, load_checkpoint

        path = Path(source)
        if is_checkpoint(path):
            return load_checkpoint(path, options)
        if path.is_file() and path.name != "saved_model.pb":
            from .graphdef import load_graph_def

            return load_graph_def(path, options)
        _graph_options_unused(replace(options, bindings={}), "a SavedModel")  # --bind: its own
        return load_saved_model(path.parent if path.is_file() else path, options)
    if name == "tflite":
        from .tflite import load_tflite

        return load_tflite(source, options)
    if name == "onnx":
        from .onnx import load_onnx

        if not isinstance(source, (str, Path, Model)):
            source = Model.from_proto(source)
        return load_onnx(source, options)
    raise UsageError(f"unknown framework {name!r}", hint=f"use one of {', '.join(FRAMEWORKS)}")


def _graph_options_unused(options: ConvertOptions, what: str) -> None:
    """UsageError when ``--graph-outputs`` or ``--bind`` is given for ``what``: they choose a
    TensorFlow graph's outputs and placeholders (a frozen .pb, a checkpoint)."""
    given = ["--graph-outputs"] * bool(options.graph_outputs) + ["--bind"] * bool(options.bindings)
    if given:
        raise UsageError(
            f"{' and '.join(given)}: for a TensorFlow graph (a frozen .pb, a checkpoint's "
            f".meta), and this source is {what}",
            hint=f"leave out {' and '.join(given)} for this source",
        )


def _load_built(
    built: Built, options: ConvertOptions, framework: str | None, example_inputs: Any
) -> Source:
    """The Source for what a factory returned, of the framework of the model it built, with
    its example inputs (``example_inputs`` when given), as ``load_source`` takes them."""
    if framework is None:
        unknown = ConversionError(
            f"the factory returned a {type(built.model).__name__}, not a model of "
            f"{', '.join(FRAMEWORKS)}",
            hint="return the model, or (model, example inputs)",
        )
        if isinstance(built.model, (str, Path)):  # a path is given as the source itself
            raise unknown
        try:
            framework = detect_framework(built.model)
        except UsageError as e:
            raise unknown from e
    example = example_inputs if example_inputs is not None else built.example
    loaded = load_source(built.model, options, framework=framework, example_inputs=example)
    loaded.description = built.description
    loaded.notes += built.notes
    return loaded


def _named_example(example: Any, signature: Signature) -> dict[str, np.ndarray]:
    """A non-torch model's example inputs by input name: ``{name: array}`` as given, or
    arrays in the order of the model's inputs (a tuple or list, or one array for a model of
    one input), as a Keras model is called. Floats take the input's float type (a
    scikit-learn model's float64 rows for its float32 input)."""
    if isinstance(example, Mapping):
        named = {k: np.asarray(v) for k, v in example.items()}
    else:
        arrays = list(example) if isinstance(example, (tuple, list)) else [example]
        names = [spec.name for spec in signature.inputs]
        if len(arrays) != len(names) or not all(hasattr(a, "__array__") for a in arrays):
            kinds = ", ".join(sorted({type(a).__name__ for a in arrays}))
            raise ConversionError(
                f"{len(arrays)} example input(s) given ({kinds}) for a model of "
                f"{len(names)} input(s): {', '.join(names)}",
                hint="give arrays in the model's input order, or {input name: array} "
                "(a factory: return (model, (array, ...)))",
            )
        named = {name: np.asarray(a) for name, a in zip(names, arrays, strict=True)}
    floats = {s.name: s.dtype.numpy for s in signature.inputs if s.dtype.numpy.kind == "f"}
    return {
        name: array.astype(floats[name]) if array.dtype.kind == "f" and name in floats else array
        for name, array in named.items()
    }


def options_for(
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: Given | None = None,
    dynamic: Mapping[str, Mapping[int, str]] | None = None,
    opset: int | None = None,
    trust_pickle: bool = False,
    custom_export: str | Path | None = None,
    *,
    graph_outputs: Sequence[str] = (),
    bindings: Mapping[str, bool | int | float] | None = None,
) -> ConvertOptions:
    """ConvertOptions from the user's arguments (UsageError for an opset ORT cannot load)."""
    max_opset = runtime_limits()[1]
    if opset is not None and not 7 <= opset <= max_opset:
        raise UsageError(
            f"opset {opset} cannot be loaded by the installed onnxruntime (opsets 7..{max_opset})",
            hint=f"pick --opset {max_opset} or lower",
        )
    if isinstance(inputs, (str, Path)):
        inputs = load_feeds(inputs)  # checked against the source's signature once it loads
    samples = [dict(inputs)] if isinstance(inputs, Mapping) else [dict(s) for s in inputs or ()]
    shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    export = Path(custom_export) if custom_export is not None else None
    return ConvertOptions(
        shapes,
        samples,
        dynamic,
        opset,
        trust_pickle,
        export,
        tuple(graph_outputs),
        dict(bindings or {}),
    )


def _verification_feeds(
    source: Source, options: ConvertOptions, result: Conversion
) -> list[dict[str, np.ndarray]]:
    if options.sample_inputs or source.samples:
        result.inputs_from = "user samples + generated"
    model = getattr(source.reference, "model", None)
    if source.framework == "onnx" and isinstance(model, Model):
        # An ONNX source has a graph to size its open dims by (feeds.verification_feeds).
        probe = isinstance(source.reference, OrtRunner)
        samples = [*options.sample_inputs, *source.samples]
        feeds = verification_feeds(model, samples, input_shapes=options.input_shapes, probe=probe)
    else:
        feeds = source.verification_feeds(options.sample_inputs, options.input_shapes)
    result.shapes = [{k: list(v.shape) for k, v in f.items()} for f in feeds]
    return feeds


def _export(candidate: Candidate, path: Path, attempt: Attempt) -> Model | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        candidate.export(path)
        model = Model.load(path)
    except FerryError as e:
        attempt.error, attempt.hint = e.message, e.hint
        return None
    except Exception as e:  # an exporter's own failure; reported, and the next one tried
        attempt.error = one_line(f"{type(e).__name__}: {e}", 400)
        return None
    finally:
        attempt.export_s = time.perf_counter() - start
        attempt.caveats = list(candidate.caveats)
    return model


def _verify(model: Model, judge: SourceJudge, attempt: Attempt) -> UnknownOperatorError | None:
    """Parity of one exported model against the source, into ``attempt``; the error when
    the model uses an operator no runtime here implements (parity cannot run)."""
    try:
        runner = OrtRunner(model)
        outputs = [runner.run(f) for f in judge.feeds]
    except FerryError as e:
        attempt.status, attempt.error = "failed", str(e)
        return e if isinstance(e, UnknownOperatorError) else None
    except Exception as e:  # ONNX Runtime failing on a shape the export did not expect
        attempt.status = "failed"
        attempt.error = f"onnxruntime failed: {one_line(e, 400)}"
        return None
    attempt.parity = judge(outputs, attempt.exporter, model)
    attempt.status = "passed" if attempt.parity.ok else "failed"
    if attempt.parity.ok:  # a count of what the data holds may equal a size by chance
        counts = set(sized_by_data(model.proto))
        found = model.signature.dims_following_inputs(judge.feeds, outputs)
        attempt.dims = {name: axes for name, axes in found.items() if name not in counts}
    return None


def _choose(
    result: Conversion, models: Mapping[str, Model], feeds: list[dict[str, np.ndarray]]
) -> None:
    passed = [a for a in result.attempts if a.status == "passed"]
    if not passed:
        return
    if len(passed) == 1:
        passed[0].status = "chosen"
        result.chosen = passed[0].exporter
        others = [
            a.exporter for a in result.attempts if a is not passed[0] and a.status != NOT_TRIED
        ]
        spared = [a.exporter for a in result.attempts if a.status == NOT_TRIED]
        if others:
            result.reason = f"the only exporter that passed ({', '.join(others)} did not)"
        elif spared:
            result.reason = (
                f"the first exporter, which passed ({', '.join(spared)}: a fallback, tried "
                "only when the exporters before it fail)"
            )
        else:
            result.reason = "the only exporter for this source"
        if not result.verified:
            result.reason = "the first exporter that produced a model (not verified)"
        return
    from ..measure import measure, within
    from ..runtime import create_session

    for attempt in passed:
        try:
            session = create_session(models[attempt.exporter])
        except UnknownOperatorError:  # unverified, with an operator for another runtime
            passed[0].status = "chosen"
            result.chosen = passed[0].exporter
            result.reason = "the first exporter that produced a model (not verified; it uses "
            result.reason += "an operator no runtime here implements, so none was timed)"
            return
        timing = within(session, feeds[-1], CHOOSING_S, warmup=10, iterations=200)
        latencies = measure(session, feeds[-1], warmup=timing.warmup, iterations=timing.iterations)
        attempt.latency_ms = float(np.median(latencies) * 1e3)
    order = {a.exporter: i for i, a in enumerate(result.attempts)}
    fastest = min(passed, key=lambda a: a.latency_ms or 0.0)
    first = min(passed, key=lambda a: order[a.exporter])
    times = ", ".join(f"{a.exporter} {a.latency_ms:.3f} ms" for a in passed)
    if (first.latency_ms or 0.0) <= (fastest.latency_ms or 0.0) * (1 + SAME_SPEED):
        best = first
        result.reason = (
            f"all passed parity and run equally fast under ONNX Runtime (p50 {times}: within "
            f"{SAME_SPEED:.0%}); kept the first in preference order, {first.exporter}"
        )
    else:
        best = fastest
        speedup = (first.latency_ms or 0.0) / max(fastest.latency_ms or 0.0, 1e-9)
        result.reason = (
            f"all passed parity; {fastest.exporter} runs {speedup:.2f}x as fast as "
            f"{first.exporter} under ONNX Runtime (p50 {times})"
        )
    best.status = "chosen"
    result.chosen = best.exporter


def _fail(
    result: Conversion,
    report: Report[Conversion],
    source: Source,
    models: Mapping[str, Model],
    feeds: list[dict[str, np.ndarray]],
    tolerance: Tolerance,
    unknown: Sequence[UnknownOperatorError] = (),
) -> None:
    if not models:  # each exporter's error once, named once, and what it advises
        said = [(a.exporter, a.error or "no error given") for a in result.attempts]
        errors = "; ".join(e if e.startswith(name) else f"{name}: {e}" for name, e in said)
        hints = dict.fromkeys(a.hint for a in result.attempts if a.hint)
        raise ConversionError(
            f"no exporter could convert {result.source}: {errors}",
            hint="; ".join(hints)
            or "try another --opset, or --framework if the file was misdetected",
        )
    if unknown and len(unknown) == len(models):  # no exported model could run: exit 2
        first = unknown[0]
        runs = f"runs in {first.types}" if first.types else "implements"
        raise UnknownOperatorError(
            f"{' and '.join(models)} exported operator {first.qualified}, which no runtime "
            f"here {runs}, so parity with {result.source} cannot be checked",
            hint=first.hint,
            operator=first.operator,
            domain=first.domain,
            opset=first.opset,
            types=first.types,
        )
    failed = [a for a in result.attempts if a.parity is not None]
    if failed and source.find_divergence is not None:
        worst = min(failed, key=lambda a: a.parity.max_abs if a.parity else np.inf)
        with contextlib.suppress(FerryError):
            result.divergence = source.find_divergence(models[worst.exporter], feeds[0], tolerance)
    summaries = "; ".join(
        (a.parity.summary() if a.parity else f"{a.exporter}: {a.error}")
        + (f" (its trace fixed values computed from tensors: {a.fixed()})" if a.caveats else "")
        for a in result.attempts
    )
    hint = "see the report; loosen --atol/--rtol only if the difference is acceptable"
    if any(a.caveats for a in failed):
        hint = (
            "the model's code turns tensors into Python values (a branch, a loop count), which "
            "a trace keeps as the example had them: compute them with tensor ops (torch.where, "
            "torch.cond) or convert with inputs like those you will serve; " + hint
        )
    raise ParityFailure(
        f"no exported model matches {result.source}: {summaries}", hint=hint, report=report
    )


def _stamp(model: Model, result: Conversion, source: Source) -> None:
    """Record the provenance in the model's metadata_props."""
    props = {
        "onnxferry.source_framework": source.framework,
        "onnxferry.exporter": result.chosen or "",
        "onnxferry.verified": "true" if result.verified else "false",
    }
    set_metadata(model.proto, props)


def _describe(source: Any) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, Source):
        return source.description
    if isinstance(source, Model):
        return source.name
    return type(source).__name__
