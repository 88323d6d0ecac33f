"""Model: a safely loaded ONNX model with its signature, digest and metadata.

    model = Model.load("model.onnx")          # or a directory holding one model
    model.signature.inputs                    # TensorSpecs
    model.digest                              # sha256 of the file and its external data
    model.save("out/model.onnx")              # atomic; external data past 2 GiB
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError
from .signature import Signature

if TYPE_CHECKING:
    import onnx

DEFAULT_MAX_SIZE = 64 * 1024**3
"""Default limit on a model's size on disk, external data included (bytes)."""


@dataclass
class Model:
    """An ONNX model that passed the safe loader.

    ``proto`` holds the graph; external tensor data stays on disk (``path``'s directory).
    """

    proto: onnx.ModelProto
    path: Path | None = None
    external_files: tuple[Path, ...] = field(default=())

    @classmethod
    def load(cls, path: str | Path, *, max_size: int = DEFAULT_MAX_SIZE) -> Model:
        """Load a file or a directory holding one model, after the safety checks."""
        import onnx

        path = Path(path)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise ModelLoadError(f"{path}: not a readable ONNX model ({e})") from e
        return cls(proto, path)

    @classmethod
    def from_proto(cls, proto: onnx.ModelProto) -> Model:
        """Wrap an in-memory model (no path; tensors must be inline)."""
        return cls(proto, None)

    def save(self, path: str | Path, *, external_data: bool | None = None) -> Model:
        """Write atomically to ``path``; returns the saved Model."""
        import onnx

        path = Path(path)
        onnx.save(self.proto, str(path))
        return Model.load(path)

    # --- identity and metadata ---------------------------------------------------------

    @cached_property
    def signature(self) -> Signature:
        return Signature.from_onnx(self.proto)

    @property
    def name(self) -> str:
        return self.path.stem if self.path else (self.proto.graph.name or "model")

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
            key = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else (
                node.op_type
            )
            counts[key] += 1
        return dict(counts.most_common())

    @cached_property
    def parameter_count(self) -> int:
        """Elements in all initializers (external ones counted from their dims)."""
        import math

        return sum(math.prod(t.dims) for t in self.proto.graph.initializer)

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


def iter_graphs(model: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    """The main graph and every subgraph (If/Loop/Scan bodies), recursively."""
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        yield graph
        for node in graph.node:
            stack.extend(_subgraphs(node))
    for fn in model.functions:
        for node in fn.node:
            stack.extend(_subgraphs(node))
        while stack:
            graph = stack.pop()
            yield graph
            for node in graph.node:
                stack.extend(_subgraphs(node))


def iter_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node of the model: main graph, subgraphs and model-local functions."""
    for graph in iter_graphs(model):
        yield from graph.node
    for fn in model.functions:
        yield from fn.node


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs
