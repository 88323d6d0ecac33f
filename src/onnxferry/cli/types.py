"""Click value types for the verbs' options: they fail through Click, as one line and exit 2.

    @click.command()
    @click.option("--batch", type=INT_LIST, default="1")          # "1,8,32" -> [1, 8, 32]
    @click.option("--dim", "dims", type=DIM, multiple=True, callback=as_dict)
    def verb(batch: list[int], dims: dict[str, int]) -> None: ...   # dims: {"seq": 128}

A value that does not parse raises ``BadValue`` (a ``click.BadParameter``) while Click parses
the command line, before the verb runs; ``main`` prints it as ``ferry: error: WHAT; HINT``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    _ParamType = click.ParamType[Any]  # generic from click 8.2; plain before
else:
    _ParamType = click.ParamType


class BadValue(click.BadParameter):
    """An option value that does not parse: one line (what is wrong; what to do), exit 2."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        ctx: click.Context | None = None,
        param: click.Parameter | None = None,
    ) -> None:
        super().__init__(message, ctx=ctx, param=param)
        self.hint = hint

    def line(self) -> str:
        """The message and the hint on one line."""
        return f"{self.message}; {self.hint}" if self.hint else self.message


def _option(param: click.Parameter | None, default: str) -> str:
    """The option's long name as the user typed it (``--batch``)."""
    if isinstance(param, click.Option) and param.opts:
        return max(param.opts, key=len)
    return default


class _Type(_ParamType):
    """A value type whose metavar is its ``name`` as written (Click upper-cases it)."""

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self.name


class IntList(_Type):
    """Comma-separated integers: ``1,8,32`` -> ``[1, 8, 32]``."""

    name = "N[,N...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        option = _option(param, "the option")
        hint = f"e.g. {option} 1,8"
        try:
            items = [int(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            raise BadValue(
                f"{option} takes comma-separated integers, got {value!r}",
                hint=hint,
                ctx=ctx,
                param=param,
            ) from None
        if not items:
            raise BadValue(f"{option} is empty", hint=hint, ctx=ctx, param=param)
        return items


class _Bounded(_Type):
    """An integer from ``bounds()``: else one line naming the option, what it takes (``what``)
    and an example (``example``, with ``{option}`` for the option's name)."""

    what = "an integer"
    default_option = "the option"
    example = "{option} 1"

    def bounds(self) -> tuple[int, int]:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        low, high = self.bounds()
        option = _option(param, self.default_option)
        try:
            number = value if isinstance(value, int) else int(str(value))
        except ValueError:
            number = None
        if number is None or isinstance(number, bool) or not low <= number <= high:
            raise BadValue(
                f"{option} takes {self.what} from {low} to {high}, got {value!r}",
                hint="e.g. " + self.example.format(option=option),
                ctx=ctx,
                param=param,
            )
        return number


class Seed(_Bounded):
    """A seed: an integer from 0 to ``runtime.MAX_SEED``."""

    name = "INTEGER"
    default_option = "--seed"
    example = "{option} 0"

    def bounds(self) -> tuple[int, int]:
        from ..runtime import MAX_SEED

        return 0, MAX_SEED


class Port(_Bounded):
    """A TCP port, 0 (a free one) to 65535."""

    name = "PORT"
    what = "a port"
    default_option = "--port"
    example = "{option} 8000, or {option} 0 for a free one"

    def bounds(self) -> tuple[int, int]:
        return 0, 65535


class NameList(_Type):
    """Comma-separated names: ``cpu,cuda`` -> ``["cpu", "cuda"]`` (blanks dropped)."""

    name = "NAME[,NAME...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        return [v.strip() for v in str(value).split(",") if v.strip()]


class _Named(_Type):
    """``NAME=VALUE`` -> ``(NAME, parse(VALUE))``; one line naming ``option``, what it
    ``takes`` and an ``example`` when the name is empty or ``parse`` returns None."""

    option = "the option"
    takes = "NAME=VALUE"
    example = ""

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        name, sep, text = str(value).partition("=")
        parsed = self.parse(text) if sep and name.strip() else None
        if parsed is None:
            raise BadValue(
                f"{self.option} takes {self.takes}, got {value!r}",
                hint=f"e.g. {self.example}",
                ctx=ctx,
                param=param,
            )
        return name.strip(), parsed


class Dim(_Named):
    """The size of an open dim: ``batch=8`` or ``input:1=8`` -> ``("batch", 8)``."""

    name = takes = "NAME=SIZE"
    option = "--dim"
    example = "--dim batch=8"

    def parse(self, text: str) -> int | None:
        return int(text) if text.strip().isdigit() else None


class Shape(_Named):
    """An input's whole shape: ``image=1x3x224x224`` -> ``("image", (1, 3, 224, 224))``."""

    name = "NAME=DxD..."
    option = "--input-shape"
    takes = "NAME=DxDx..."
    example = "--input-shape image=1x3x224x224"

    def parse(self, text: str) -> tuple[int, ...] | None:
        try:
            dims = tuple(int(d) for d in text.lower().split("x"))
        except ValueError:
            return None
        return dims if dims and min(dims) >= 1 else None


class Binding(_Named):
    """A placeholder fixed to a value: ``is_training=false`` -> ``("is_training", False)``,
    ``keep_prob=1.0`` -> ``("keep_prob", 1.0)``, ``beam=4`` -> ``("beam", 4)``."""

    name = "NAME=VALUE"
    option = "--bind"
    takes = "NAME=VALUE (true, false or a number)"
    example = "--bind is_training=false or --bind keep_prob=1.0"

    def parse(self, text: str) -> bool | int | float | None:
        words = {"true": True, "false": False}
        parsed: bool | int | float | None = words.get(text.strip().lower())
        for number in (int, float):
            if parsed is None:
                with contextlib.suppress(ValueError):
                    parsed = number(text)
        return None if parsed != parsed else parsed  # NaN is no value


class DynamicAxes(_Type):
    """An input's dynamic axes: ``ids:0=batch,1=seq`` -> ``("ids", {0: "batch", 1: "seq"})``;
    ``static`` (or ``none``) -> ``None``, for no dynamic axis at all."""

    name = "NAME:AXIS=DIM[,...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, tuple):
            return value
        item = str(value)
        if item.strip() in ("none", "static"):
            return None
        name, sep, spec = item.partition(":")
        try:
            pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
            parsed = {int(axis): dim.strip() for axis, dim in pairs}
        except ValueError:
            parsed = {}
        if not sep or not name or not parsed or not all(parsed.values()):
            raise BadValue(
                f"--dynamic takes NAME:AXIS=DIM[,AXIS=DIM], got {item!r}",
                hint="e.g. --dynamic input_ids:0=batch,1=seq (or --dynamic static)",
                ctx=ctx,
                param=param,
            )
        return name.strip(), parsed


INT_LIST = IntList()
NAME_LIST = NameList()
DIM = Dim()
SEED = Seed()
PORT = Port()
SHAPE = Shape()
DYNAMIC_AXES = DynamicAxes()
BINDING = Binding()


def as_dict(ctx: click.Context, param: click.Parameter, value: Iterable[Any]) -> dict[Any, Any]:
    """Callback for a repeated ``NAME=...`` option: its pairs as one dict (the last wins)."""
    return dict(value)


def as_dynamic(
    ctx: click.Context, param: click.Parameter, value: Iterable[Any]
) -> dict[str, dict[int, str]] | None:
    """Callback for ``--dynamic``: None when not given (the verb's default), ``{}`` for
    ``static``, else each input's axes."""
    items = list(value)
    if not items:
        return None
    return dict(item for item in items if item is not None)
