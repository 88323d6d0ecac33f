"""Model: a safely loaded ONNX model with its signature, digest and metadata.

    model = Model.load("model.onnx")          # or a directory holding one model
    model.signature.inputs                    # TensorSpecs
    model.digest                              # sha256 of the file and its external data
    model.save("out/model.onnx")              # atomic; external data past 2 GiB

Loading is safe: the file is size-limited, parsed, and every external-data reference is checked
to stay inside the model's directory (see ``safety``). The onnx checker is not a gate (models
in the wild that ONNX Runtime runs, IR-3 files among them, fail it); ``strict=True`` makes it
one, and ``ferry check`` reports it. External tensor data is not read into memory; ONNX Runtime
reads it by path. ``saving`` writes a model to disk for ``Model.save``.
"""

from __future__ import annotations

import hashlib
import math
import re
import stat
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from .errors import InvalidModelError, ModelLoadError, UnsafeModelError, one_line
from .graphs import PROTOBUF_MAX, external_refs, inlined
from .graphs import iter_graphs as iter_graphs  # also re-exported: check.py and feeds.py
from .graphs import iter_nodes as iter_nodes  # import them from here (to move to graphs)
from .report import Report, ReportBody, human_size
from .safety import ExternalRef, check_external_data, external_files, iter_tensors
from .saving import write_model
from .signature import Signature

R = TypeVar("R", bound=ReportBody)
S = TypeVar("S", bound=ReportBody)
Found = TypeVar("Found")

if TYPE_CHECKING:
    import onnx

DEFAULT_MAX_SIZE = 64 * 1024**3
"""Default limit on a model's size on disk, external data included (bytes)."""


@dataclass
class Model:
    """An ONNX model that passed the safe loader.

    ``proto`` holds the graph; external tensor data stays on disk (``path``'s directory), and
    ``external_files`` lists its files, in order of first reference.
    """

    proto: onnx.ModelProto
    path: Path | None = None
    external_files: tuple[Path, ...] = field(default=())
    provenance: list[Report[Any]] = field(default_factory=list, compare=False, repr=False)
    """Reports of the stages that made this model (convert, optimize passes), oldest first."""

    @overload
    def last_report(self, kind: type[R], /) -> Report[R]: ...
    @overload
    def last_report(self, kind: type[R], other: type[S], /) -> Report[R | S]: ...
    def last_report(self, *kinds: type[Any]) -> Report[Any]:
        """The newest report in ``provenance`` whose result is one of ``kinds``, typed.

            conversion = model.last_report(Conversion)               # Report[Conversion]
            optimized = model.last_report(ChainResult, SearchResult)

        Raises LookupError when no stage of that kind made this model.
        """
        for report in reversed(self.provenance):
            if isinstance(report.result, kinds):
                return cast("Report[Any]", report)
        names = " or ".join(k.__name__ for k in kinds)
        raise LookupError(f"no {names} report in this model's provenance")

    @classmethod
    def load(
        cls, path: str | Path, *, max_size: int = DEFAULT_MAX_SIZE, strict: bool = False
    ) -> Model:
        """Load a file, or a directory holding one model, after the safety checks.

            model = Model.load("models/resnet")                 # models/resnet/model.onnx
            model = Model.load("big.onnx", max_size=200 * 1024**3)

        Raises ModelLoadError (one line: what is wrong; what to do) for a missing path, a
        directory without exactly one model, an empty, malformed or truncated file, or another
        model format (``other_format``: .ort, .tflite, HDF5, zip, pickle, named); with
        ``strict``, InvalidModelError when the onnx checker rejects the model (without it the
        model loads, and running it is ONNX Runtime's judgement); UnsafeModelError when
        external data leaves the model's directory or the model (with its external data)
        is larger than ``max_size`` bytes.
        """
        import onnx

        file = resolve_model_path(Path(path))
        size = _regular_file_size(file)
        if size > max_size:
            raise _too_large(file, size, max_size)
        if size > PROTOBUF_MAX:
            raise ModelLoadError(
                f"{file}: the file is {human_size(size)}, past the 2 GiB protobuf allows for a "
                "model file, so it is not an ONNX model",
                hint="a model this large keeps its weights in external data files",
            )
        if size == 0:
            raise ModelLoadError(
                f"{file}: the file is empty, not an ONNX model",
                hint="re-export or re-copy the model",
            )
        try:
            data = file.read_bytes()
        except OSError as e:
            raise ModelLoadError(
                f"{file}: cannot read the file ({e.strerror or e})",
                hint="check that the file is readable",
            ) from None
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception:  # google.protobuf's DecodeError (untyped)
            _refuse_other_format(file, data)
            raise ModelLoadError(
                f"{file}: not an ONNX model (the protobuf data is malformed or truncated)",
                hint="check that the file is a whole binary .onnx model; re-export or re-copy it",
            ) from None
        if not proto.HasField("graph"):
            _refuse_other_format(file, data)
            raise ModelLoadError(
                f"{file}: not an ONNX model (it holds no graph)",
                hint="check that the file is a binary .onnx model; re-export it",
            )
        refs = check_external_data(proto, file.parent)
        files = external_files(refs)
        total = size + sum(p.stat().st_size for p in files)
        if total > max_size:
            raise _too_large(file, total, max_size)
        if strict:
            problem = checker_problem(file, None if refs else data)
            if problem:
                raise InvalidModelError(
                    f"{file}: the onnx checker rejects the model: {problem}",
                    hint="re-export the model with a current exporter, or fix it with the onnx "
                    "tools",
                )
        return cls(proto, file, files)

    @classmethod
    def from_proto(cls, proto: onnx.ModelProto) -> Model:
        """Wrap an in-memory model (no path; tensors must be inline)."""
        return cls(proto, None)

    def save(self, path: str | Path, *, external_data: bool | None = None) -> Model:
        """Write the model atomically to ``path`` and return it loaded back from there.

            saved = model.save("out/model.onnx")                      # one file when it fits
            saved = model.save("out/model.onnx", external_data=True)  # weights in out/model.data

        With ``external_data=None`` the model keeps one file unless it already has external
        data or is past protobuf's 2 GiB limit; then initializers of 1 KiB or more go to
        ``<name>.data`` next to the model file, and data from the source's files is carried
        along. ``False`` forces one file (UsageError when it cannot fit). Files are written
        under temporary names in the target directory and renamed into place; on failure
        nothing is left behind and the files that were at the target stay as they were.
        The written model then goes through ``Model.load`` (its errors, with the files kept).
        """
        target = Path(path)
        refs = self._checked_refs()
        write_model(self.proto, refs, target, name=self.name, external_data=external_data)
        return Model.load(target, max_size=sys.maxsize)

    def _checked_refs(self) -> tuple[ExternalRef, ...]:
        """The external-data references, checked again (files may have changed since load)."""
        return external_refs(self.proto, None if self.path is None else self.path.parent)

    def detached(self) -> Model:
        """An in-memory copy with external data read in (no path; survives its files)."""
        return Model.from_proto(inlined(self))

    def rewritten(self, rewrite: Callable[[onnx.ModelProto], Found]) -> tuple[Model, Found]:
        """``rewrite`` run in place on a detached copy of the proto: the copy as a new Model
        when it found something to rewrite (returned a true count), else this model; and what
        it returned (``unfused.with_unfused``, ``stft.with_stft_as_conv``, ``qdq.with_qdq``)."""
        proto = inlined(self)
        found = rewrite(proto)
        return (Model.from_proto(proto), found) if found else (self, found)

    # --- identity and metadata ---------------------------------------------------------

    @cached_property
    def signature(self) -> Signature:
        return Signature.from_onnx(self.proto)

    @property
    def name(self) -> str:
        """The file's stem, or its directory's name for the usual ``<name>/model.onnx``."""
        if self.path is None:
            return self.proto.graph.name or "model"
        if self.path.stem == "model" and self.path.parent.name:
            return self.path.parent.name
        return self.path.stem

    @cached_property
    def digest(self) -> str:
        """sha256 over the model file and then each external data file, in reference order."""
        h = hashlib.sha256()
        if self.path is None:
            h.update(self.proto.SerializeToString())
            return h.hexdigest()
        for p in (self.path, *self.external_files):
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()

    @property
    def ir_version(self) -> int:
        return int(self.proto.ir_version)

    @property
    def opset_imports(self) -> dict[str, int]:
        return {(o.domain or "ai.onnx"): int(o.version) for o in self.proto.opset_import}

    @property
    def producer(self) -> str:
        p = self.proto
        return f"{p.producer_name} {p.producer_version}".strip()

    @property
    def metadata_props(self) -> dict[str, str]:
        return {p.key: p.value for p in self.proto.metadata_props}

    @cached_property
    def ops_histogram(self) -> dict[str, int]:
        """Node count per operator, subgraphs and model functions included ("domain::Op"
        for domains other than ai.onnx)."""
        counts: Counter[str] = Counter()
        for node in iter_nodes(self.proto):
            key = (
                f"{node.domain}::{node.op_type}"
                if node.domain not in ("", "ai.onnx")
                else (node.op_type)
            )
            counts[key] += 1
        return dict(counts.most_common())

    @cached_property
    def parameter_count(self) -> int:
        """Elements of every weight wherever the exporter put it: initializers and sparse
        initializers (their stored values) of every graph, subgraphs included, and the values
        of ``Constant`` nodes (``value``, ``sparse_value``, ``value_floats``, ``value_ints``,
        ``value_strings``; scalars ``value_float`` / ``value_int`` count 1) in graphs and
        model-local functions. Paddle and some torch exports keep all weights in Constants."""
        count = 0
        for graph in iter_graphs(self.proto):
            count += sum(math.prod(t.dims) for t in graph.initializer)
            count += sum(math.prod(s.values.dims) for s in graph.sparse_initializer)
        for node in iter_nodes(self.proto):
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                count += sum(_constant_elements(a) for a in node.attribute)
        return count

    @cached_property
    def weight_type(self) -> str | None:
        """The float type that holds most weight elements ("FLOAT", "FLOAT16", "BFLOAT16",
        "DOUBLE"), over every tensor in the model (``safety.iter_tensors``: initializers and
        Constant nodes alike); None for a model without float weights. A model converted to
        float16 whole says "FLOAT16" though its inputs and outputs may be float32."""
        counts: Counter[int] = Counter()
        for site in iter_tensors(self.proto):
            if site.tensor.data_type in _FLOAT_TYPES:
                counts[site.tensor.data_type] += math.prod(site.tensor.dims)
        if not counts:
            return None
        return _FLOAT_TYPES[counts.most_common(1)[0][0]]

    @cached_property
    def size_bytes(self) -> int:
        """Bytes on disk: the model file plus its external data files."""
        if self.path is None:
            return int(self.proto.ByteSize())
        return sum(p.stat().st_size for p in (self.path, *self.external_files))

    def summary(self) -> dict[str, Any]:
        """The facts `ferry inspect` prints, with stable keys."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "ir_version": self.ir_version,
            "opset_imports": self.opset_imports,
            "producer": self.producer,
            "parameter_count": self.parameter_count,
            "node_count": sum(self.ops_histogram.values()),
            "ops": self.ops_histogram,
            "external_data_files": [str(p) for p in self.external_files],
            "metadata_props": self.metadata_props,
            "signature": self.signature.to_dict(),
        }


def resolve_model_path(path: Path) -> Path:
    """The model file ``path`` names: the path itself, or for a directory its ``model.onnx``,
    else its only ``*.onnx`` file. ModelLoadError when there is none or no single one."""
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as e:
        raise ModelLoadError(
            f"{path}: cannot access ({e.strerror or e})", hint="check the path"
        ) from None
    if not exists:
        raise ModelLoadError(f"{path}: no such file or directory", hint="check the path")
    if not is_dir:
        return path
    preferred = path / "model.onnx"
    if preferred.is_file():
        return preferred
    candidates = sorted(p for p in path.glob("*.onnx") if p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ModelLoadError(
            f"{path}: the directory holds {len(candidates)} models "
            f"({_names(p.name for p in candidates)})",
            hint=f"pass the model file's path, e.g. {candidates[0]}, or name one model.onnx",
        )
    entries = sorted(p.name for p in path.iterdir())
    found = f"it holds {_names(entries)}" if entries else "it is empty"
    raise ModelLoadError(
        f"{path}: the directory holds no .onnx model ({found})",
        hint="pass the model file's path, or put the model in the directory as model.onnx",
    )


_FLOAT_TYPES = {1: "FLOAT", 10: "FLOAT16", 11: "DOUBLE", 16: "BFLOAT16"}
"""ONNX's float element types (TensorProto.DataType) by the name ``weight_type`` gives."""


def _constant_elements(attr: onnx.AttributeProto) -> int:
    """Elements held by one attribute of a Constant node."""
    if attr.name == "value":
        return math.prod(attr.t.dims)
    if attr.name == "sparse_value":
        return math.prod(attr.sparse_tensor.values.dims)
    if attr.name in ("value_floats", "value_ints", "value_strings"):
        return len(attr.floats) + len(attr.ints) + len(attr.strings)
    return 1 if attr.name in ("value_float", "value_int", "value_string") else 0


# --- loading ---------------------------------------------------------------------------------


def _regular_file_size(file: Path) -> int:
    try:
        st = file.stat()
    except OSError as e:
        raise ModelLoadError(
            f"{file}: cannot access ({e.strerror or e})", hint="check the path"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(
            f"{file}: not a regular file",
            hint="pass an .onnx file or a directory holding one",
        )
    return st.st_size


def checker_problem(file: Path, data: bytes | None = None) -> str | None:
    """What the onnx checker (not full_check) finds wrong, on one line, or None.

    It reads ``data`` when given, else the path (so external data resolves from the model's
    directory). Operators ONNX defines only at other opsets than the model's (ONNX Runtime
    keeps kernels for some: ``checker_findings``) are not a problem here."""
    return checker_findings(file, data)[0]


_UNREGISTERED = re.compile(r"No Op registered for (\S+) with domain_version of (\d+)")
RUNTIME_ONLY_DOMAIN = "onnxferry.unchecked"
"""Where ``checker_findings`` moves runtime-only operators in its copy, out of the checker's
sight (it checks the ONNX domains only)."""


def checker_findings(
    file: Path, data: bytes | None = None, *, full: bool = False
) -> tuple[str | None, list[str]]:
    """(what the onnx checker finds wrong on one line, or None; the operators ONNX defines
    at other opsets than the model's, as "LayerNormalization@14").

    ONNX Runtime's transformers optimizer writes ``LayerNormalization`` into the ONNX domain
    of opset-14 models (ONNX defines it from 17; ONNX Runtime keeps a kernel for the older
    opsets): the checker stops at the first such node. Those nodes are moved out of its
    sight in a copy and the rest is checked, so a problem behind them still shows."""
    import onnx

    def check(model: str | bytes | onnx.ModelProto) -> str | None:
        try:
            onnx.checker.check_model(model, full_check=full)
        except Exception as e:
            return one_line(e, period=False)
        return None

    problem = check(data if data is not None else str(file))
    unknown: list[str] = []
    proto: onnx.ModelProto | None = None
    while problem and (match := _UNREGISTERED.search(problem)) and len(unknown) < 16:
        if proto is None:
            proto = (
                onnx.load_from_string(data)
                if data is not None
                else onnx.load(str(file), load_external_data=False)
            )
            proto.opset_import.add(domain=RUNTIME_ONLY_DOMAIN, version=1)
        op, version = match.groups()
        if not onnx.defs.has(op):  # no ONNX opset defines it: a misspelt or foreign op
            break
        moved = 0
        for node in iter_nodes(proto):
            if node.op_type == op and node.domain in ("", "ai.onnx"):
                node.domain = RUNTIME_ONLY_DOMAIN
                moved += 1
        if not moved:
            break
        unknown.append(f"{op}@{version}")
        problem = check(proto)
    return problem, unknown


def _too_large(file: Path, size: int, max_size: int) -> UnsafeModelError:
    return UnsafeModelError(
        f"{file}: the model takes {human_size(size)} ({size} bytes) with its external data, "
        f"over the limit of {human_size(max_size)} ({max_size} bytes)",
        hint=f"pass a larger max_size if you trust it (e.g. max_size={size})",
    )


def _names(names: Iterable[str], limit: int = 5) -> str:
    shown = [repr(n) for n in names]
    more = len(shown) - limit
    return ", ".join(shown[:limit]) + (f" and {more} more" if more > 0 else "")


_CONVERT = "convert it first: ferry convert {file} -o model.onnx"
_FORMATS: tuple[tuple[int, bytes, str, str], ...] = (
    (
        4,
        b"ORTM",
        "an ONNX Runtime format (.ort) model",
        "give the .onnx it was made from (ferry package --target mobile checks an .ort against it)",
    ),
    (4, b"TFL3", "a TensorFlow Lite model", _CONVERT),
    (0, b"\x89HDF", "an HDF5 file (a Keras 2 model?)", _CONVERT),
    (0, b"PK\x03\x04", "a zip archive (a .keras, PyTorch or .npz file?)", _CONVERT),
    (0, b"\x80", "a Python pickle (a scikit-learn model?)", _CONVERT + " --trust-pickle"),
)
"""Other model formats by their magic bytes: (offset, bytes, what it is, what to do)."""


def _refuse_other_format(file: Path, data: bytes) -> None:
    """ModelLoadError naming the format, for a file that did not parse as ONNX."""
    if other := other_format(data, str(file)):
        what, hint = other
        raise ModelLoadError(f"{file}: {what}, not an ONNX model", hint=hint)


def other_format(data: bytes, file: str = "FILE") -> tuple[str, str] | None:
    """(what the bytes are, what to do) for another model format's file, else None.

    other_format(Path("model.ort").read_bytes())   # ("an ONNX Runtime format ...", ...)
    """
    for offset, magic, what, hint in _FORMATS:
        if data[offset : offset + len(magic)] == magic:
            return what, hint.format(file=file)
    return None
