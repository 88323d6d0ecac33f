"""What the app enforces: API keys, the repository API, and the size and time limits.

    settings = ServeSettings(api_keys=("0123456789abcdef",), body_limit=16 * MIB)
    settings.response_bytes, settings.inflight_bytes, settings.parse_memory_bytes  # defaults

The CLI's options map one to one; a limit left None takes a default derived from
``body_limit``, which its ``*_bytes`` property applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import UsageError

MIB = 1 << 20


@dataclass(frozen=True)
class ServeSettings:
    """What the app enforces; the CLI's options map one to one."""

    api_keys: tuple[str, ...] = ()
    """Bearer keys for every route but health (empty: no auth)."""
    repository_keys: tuple[str, ...] = ()
    """Keys for the repository API (empty: the api_keys)."""
    repository_api: bool = False
    sagemaker: bool = False
    shared_memory: Literal["off", "system"] = "off"
    """Triton's system shared memory extension (shm.py): "system" lets clients on this host
    register /dev/shm regions that the server maps, reads inputs from and writes outputs into.
    Off by default: a client that can register makes the server map a file of its choosing."""
    """Also answer SageMaker's hosting contract: GET /ping and POST /invocations (sagemaker.py)."""
    require_signature: Path | None = None
    """A public key (PEM): every version must verify against its ``model.onnx.sig`` with it,
    at load and at every reload (else it is refused, the reason in the index)."""
    body_limit: int = 64 * MIB
    body_timeout_s: float = 30.0
    """The whole request body must arrive within this time."""
    default_timeout_ms: float | None = None
    """Deadline for a request that sets none (the model's ferry.toml timeout_ms wins)."""
    server_name: str = "onnxferry"
    server_version: str = ""
    response_limit: int | None = None
    """Bytes a response body may have (None: 64 MiB or body_limit, the larger); past it the
    request is answered 400."""
    inflight_limit: int | None = None
    """Bytes of request bodies the server holds at once (None: 4 x body_limit, at least
    256 MiB); a request that
    would pass it is answered 503 with Retry-After. At least body_limit."""
    explain_max_evals: int = 20_000
    """Model rows one explanation may evaluate (a request's ``max_evals`` is capped at it)."""
    explain_timeout_s: float = 60.0
    """Seconds one explanation may take (a request's deadline is capped at it)."""
    explain_concurrency: int = 1
    """Explanations computed at once; one more is answered 503 with Retry-After."""

    parse_memory: int | None = None
    """Bytes the worker process that parses large JSON bodies may take for one body (None:
    16 x body_limit, at least 256 MiB); a body that needs more is answered 413."""

    def __post_init__(self) -> None:
        for name in ("body_timeout_s", "default_timeout_ms", "explain_timeout_s"):
            if getattr(self, name) is not None:
                check_positive(f"ServeSettings.{name}", getattr(self, name))

    @property
    def parse_memory_bytes(self) -> int:
        """``parse_memory`` with its default applied."""
        if self.parse_memory is None:
            return max(16 * self.body_limit, 256 * MIB)
        return self.parse_memory

    @property
    def response_bytes(self) -> int:
        """``response_limit`` with its default applied."""
        if self.response_limit is None:
            return max(self.body_limit, 64 * MIB)
        return self.response_limit

    @property
    def inflight_bytes(self) -> int:
        """``inflight_limit`` with its default applied."""
        if self.inflight_limit is None:
            return max(4 * self.body_limit, 256 * MIB)
        return self.inflight_limit


def check_positive(name: str, value: float) -> float:
    """``value`` when it is a positive finite number (seconds, a size), else one line naming
    ``name``: an infinite timeout is no timeout, and asyncio and threading refuse one.

    >>> check_positive("poll interval", 2.0)
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UsageError(f"{name} must be positive, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    return value
