"""What an optimization pass is: a declared unit ``Model -> Model`` with typed parameters.

    @dataclass(frozen=True)
    class DynamicInt8(Pass):
        '''Quantize MatMul/Gemm weights to int8 (ONNX Runtime quantize_dynamic).'''

        name: ClassVar[str] = "int8_dynamic"
        family: ClassVar[str] = "int8"
        per_channel: bool = param(False, "one scale per output channel, not per tensor")

        def apply(self, model: Model, ctx: PassContext) -> PassResult: ...

    step = DynamicInt8.from_params({"per_channel": True})   # from a recipe; UsageError
    result = step.apply(model, ctx)                           # result.model, .changed
    DynamicInt8.info()                                        # PassInfo: name, parameters, ...

Every parameter is a dataclass field declared with ``param`` (default and description in one
place); ``from_params`` checks names and types, so a recipe with an unknown pass or a wrong
parameter fails with one clear line before anything runs. Which passes exist, by name, is the
catalog's business (``catalog``): this module knows no pass.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar, get_args, get_origin

import numpy as np

from ..errors import FerryError, UsageError
from ..model import Model


class PassError(FerryError):
    """A pass cannot handle this model (the chain goes on without it); names the pass."""


def param(default: Any, doc: str) -> Any:
    """A pass parameter: its default and a one-line description (shown by `ferry passes`)."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class PassContext:
    """What a pass may use besides the model.

    ``workdir``: a private temp directory for files the pass writes. ``feeds``: validation
    feed sets (realistic or the user's). ``calibration``: feed sets for static quantization
    (None when the user gave none: then ``feeds`` serve). ``provider``: where it will run.
    """

    workdir: Path
    feeds: Sequence[Mapping[str, np.ndarray]] = ()
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None
    provider: str = "cpu"

    def scratch(self, name: str) -> Path:
        """A fresh path inside ``workdir`` for a pass's output model."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        directory = self.workdir / f"{len(list(self.workdir.iterdir())):03d}-{name}"
        directory.mkdir(parents=True)
        return directory / "model.onnx"

    def sample_feeds(self, model: Model, count: int) -> list[Mapping[str, np.ndarray]]:
        """Up to ``count`` feed sets for a pass that learns from running ``model``: the
        calibration feeds, else the validation ones, else one generated set."""
        from ..feeds import plan_feeds

        return list(self.calibration or self.feeds)[:count] or [plan_feeds(model).feeds(seed=0)]


@dataclass
class PassResult:
    """The model a pass produced, whether it changed anything, and what it has to say."""

    model: Model
    changed: bool = True
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


PassT = TypeVar("PassT", bound="Pass")


@dataclass(frozen=True)
class Pass:
    """Base of every pass: subclasses are frozen dataclasses whose fields are parameters."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""  # "graph", "fp16", "int8", "prune", "runtime"
    size_only: ClassVar[bool] = False  # shrinks the file without aiming at speed (pruning)

    def apply(self, model: Model, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The parameters as plain values, for recipes and reports."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def label(self) -> str:
        """E.g. "int8_dynamic(per_channel=True)": the name and the non-default parameters."""
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != _default(f)
        ]
        return f"{self.name}({', '.join(changed)})" if changed else self.name

    @classmethod
    def describe(cls) -> list[ParamInfo]:
        """Every parameter: its name, type, default and description."""
        hints = typing.get_type_hints(cls)
        return [
            ParamInfo(f.name, _type_name(hints[f.name]), _default(f), f.metadata.get("doc", ""))
            for f in dataclasses.fields(cls)
        ]

    @classmethod
    def info(cls) -> PassInfo:
        """What ``ferry passes`` lists: name, family, the docstring's first paragraph, and the
        parameters."""
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        return PassInfo(cls.name, cls.family, summary, cls.size_only, tuple(cls.describe()))

    @classmethod
    def from_params(cls: type[PassT], params: Mapping[str, Any] | None = None) -> PassT:
        """This pass with ``params`` (from a recipe) checked against its declared parameters."""
        hints = typing.get_type_hints(cls)
        declared = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in (params or {}).items():
            if key not in declared:
                raise UsageError(
                    f"pass {cls.name!r} has no parameter {key!r}",
                    hint=f"its parameters: {', '.join(sorted(declared)) or 'none'}",
                )
            values[key] = _coerce(cls.name, key, value, hints[key])
        return cls(**values)


class ParamInfo(NamedTuple):
    """One declared parameter of a pass."""

    name: str
    type: str
    default: Any
    description: str


@dataclass(frozen=True)
class PassInfo:
    """A pass as listed (``list_passes``): what recipes call it and what it takes."""

    name: str
    family: str
    description: str
    size_only: bool
    parameters: tuple[ParamInfo, ...]


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(hint))
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in get_args(hint))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(hint))}]"
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _coerce(pass_name: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits ``hint``: lists become tuples, ints become floats for floats."""
    if not _fits(value, hint):
        raise UsageError(
            f"pass {pass_name!r} parameter {key!r} must be {_type_name(hint)}, got {value!r}",
            hint="fix the recipe or the command line",
        )
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, int) and not isinstance(value, bool) and not _accepts(hint, int):
        return float(value)
    return value


def _accepts(hint: Any, kind: type) -> bool:
    if get_origin(hint) in (types.UnionType, typing.Union):
        return any(_accepts(a, kind) for a in get_args(hint))
    return bool(hint is kind)


def _fits(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, a) for a in get_args(hint))
    if origin in (tuple, list, Sequence):
        args = get_args(hint)
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(
            item is Any or _fits(v, item) for v in value
        )
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Any:
        return True
    return isinstance(value, hint)
