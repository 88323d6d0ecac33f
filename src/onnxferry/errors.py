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


def one_line(error: BaseException | str, limit: int | None = 300) -> str:
    """An exception's message (or a text) on one line, shortened past ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
