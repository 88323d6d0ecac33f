"""One error tree for onnxferry; every error carries its exit code and a hint.

    try:
        model = onnxferry.Model.load("model.onnx")
    except onnxferry.FerryError as e:
        print(e)            # one line: what is wrong; what to do
        raise SystemExit(e.exit_code)

Exit codes: 0 ok, 1 verification failed, 2 usage or input error,
3 internal error (a bug in onnxferry).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import re

EXIT_OK = 0
EXIT_VERIFICATION_FAILED = 1
EXIT_INPUT_ERROR = 2
EXIT_INTERNAL_ERROR = 3


class FerryError(Exception):
    """Base of every error onnxferry raises on purpose."""

    exit_code: int = EXIT_INPUT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class InputError(FerryError):
    """The user gave something onnxferry cannot use (exit 2)."""


class UsageError(InputError):
    """Options that contradict each other or cannot be parsed."""


class ModelLoadError(InputError):
    """The path does not hold a readable, valid ONNX model."""


class InvalidModelError(ModelLoadError):
    """The file parses as ONNX but the onnx checker rejects it."""


class UnknownOperatorError(ModelLoadError):
    """The model uses an operator that no runtime here implements (``customops`` names it,
    its domain and opset, and the ways to provide it)."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        operator: str = "",
        domain: str = "ai.onnx",
        opset: int | None = None,
        types: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.operator = operator
        self.domain = domain
        self.opset = opset
        self.types = types
        """The model's uncommon element types ("bfloat16") when the operator exists but has
        no kernel for them; empty when the operator itself is unknown."""

    @property
    def qualified(self) -> str:
        """``domain::Op (opset N)``, as the messages name it."""
        at = f" (opset {self.opset})" if self.opset is not None else ""
        return f"{self.domain}::{self.operator}{at}"


class UnsafeModelError(ModelLoadError):
    """The model reaches outside its directory or exceeds a configured limit."""


class FeedError(InputError):
    """Input tensors do not match the model's signature."""


class RunError(InputError):
    """ONNX Runtime refused to run the model on the inputs it was given (a shape the model
    cannot take, a bad state input): the model or the inputs are at fault."""


class DataError(InputError):
    """A data file (.npz, .npy, .pb test data) cannot be read or does not fit."""


class ProviderError(InputError):
    """An execution provider cannot be used as asked."""


class VerificationError(FerryError):
    """A check ran and the model failed it (exit 1)."""

    exit_code = EXIT_VERIFICATION_FAILED


def missing_module_hint(error: BaseException, otherwise: str) -> str:
    """The hint for user code that raised: which module to install when it was a missing
    one (a factory's import, or a pickle naming a class of ``omegaconf``), else ``otherwise``.

        missing_module_hint(ModuleNotFoundError("x", name="omegaconf"), "fix the factory")
    """
    found = error if isinstance(error, ModuleNotFoundError) else error.__context__
    if isinstance(found, ModuleNotFoundError) and found.name:
        top = found.name.partition(".")[0]
        return (
            f"install the package that provides {top!r} where ferry runs "
            f"({Path(sys.executable).parent}), then run again"
        )
    return otherwise


def read_user_text(
    path: str | Path, what: str, error: type[FerryError] = InputError, hint: str | None = None
) -> str:
    """The UTF-8 text of a file the user named; else ``error`` in one line, "cannot read WHAT
    PATH: why" (missing, a folder, unreadable, not UTF-8 text; ``what`` may be "").

        text = read_user_text("fast.recipe.toml", "recipe", UsageError)
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror or str(e)
        subject = f"{what} {path}" if what else str(path)
        raise error(f"cannot read {subject}: {reason}", hint=hint) from None


def one_line(
    error: BaseException | str,
    limit: int | None = 300,
    *,
    line: Literal["all", "first", "last"] = "all",
    drop: re.Pattern[str] | None = None,
    period: bool = True,
    named: bool = False,
) -> str:
    """An exception's message (or a text) on one line, shortened past ``limit`` characters.

        one_line(e)                                  # every line, white space folded
        one_line(e, line="first")                    # a library's message without its trace
        one_line(stderr, line="last")                # a child process's last word
        one_line(e, 200, drop=ADVICE, period=False)  # boilerplate out, no final period
        one_line(e, line="first", named=True)        # "RuntimeError: what went wrong"

    This is the only summarizer of error text in onnxferry (tests/test_plumbing.py keeps it
    so). ``line`` keeps the first or last line that is not blank; ``drop`` removes what a
    pattern matches first; ``period=False`` drops a final period (a hint or ")" follows);
    ``named`` puts the exception's type name in front. An exception without text gives its
    type name; an empty string stays empty.
    """
    text = str(error)
    if drop is not None:
        text = drop.sub("", text)
    if line != "all":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        text = (lines[0] if line == "first" else lines[-1]) if lines else ""
    text = " ".join(text.split())
    if not period:
        text = text.rstrip(".")
    if named and text and not isinstance(error, str):
        text = f"{type(error).__name__}: {text}"
    if not text and not isinstance(error, str):
        text = type(error).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
