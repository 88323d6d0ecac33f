"""What every endpoint of the app gets and gives: the request, the reply, the model lookup.

    await repo.start()                                       # repo: a Repository (a Catalog)
    call = Call(scope, receive, send, {"model": "resnet"})   # the route's path parameters
    served = lookup(repo, call.model, call.version)          # HttpError 404, or 400 not ready
    reply: Reply = (200, call.model, served.version)         # for the access log and metrics
    await repo.stop()

``lookup`` turns the repository's ModelNotFound into 404 and ModelNotReady into the status the
route gives (400 where "4xx means false", 503 for infer). Client values (paths, model names)
are cut to ``LOG_VALUE_LIMIT`` characters in log lines and messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import one_line
from .asgi import HttpError, Receive, Scope, Send
from .catalog import Catalog, ModelNotFound, ModelNotReady
from .versions import ModelVersion

Reply = tuple[int, str, str]
"""What an endpoint answered: (status, model, version) for the access log and metrics."""

LOG_VALUE_LIMIT = 200
"""Characters of a client's value (path, model name) that a log line keeps."""
MAX_VERSION_DIGITS = 18
"""A version segment of more digits names no version (int() refuses past 4300)."""


@dataclass(frozen=True)
class Call:
    """One request as an endpoint sees it: the ASGI triple and the route's path parameters."""

    scope: Scope
    receive: Receive
    send: Send
    params: Mapping[str, str]

    @property
    def model(self) -> str:
        return self.params.get("model", "")

    @property
    def version(self) -> str | None:
        """The version the path names; None for the highest ready one."""
        return self.params.get("version")


def lookup(
    repository: Catalog, name: str, version: str | None, not_ready: int = 400
) -> ModelVersion:
    """The served version; 404 when unknown; ``not_ready`` (400 for the metadata and ready
    routes, as the protocol's "4xx means false"; 503 for infer) when it cannot serve."""
    if version is not None and len(version) > MAX_VERSION_DIGITS:
        text = f"model {cut(name)!r} has no version {cut(version, 40)!r}"
        raise HttpError(404, text, "not_found")
    try:
        return repository.get(name, version)
    except ModelNotFound as e:
        raise HttpError(404, error_text(e), "not_found") from None
    except ModelNotReady as e:
        raise HttpError(not_ready, error_text(e), "unavailable") from None


def error_text(error: BaseException) -> str:
    """An error's whole message, on one line, for a client."""
    return one_line(error, limit=None)


def cut(value: str, limit: int = LOG_VALUE_LIMIT) -> str:
    """``value`` cut to ``limit`` characters, for a log line or a message."""
    return value if len(value) <= limit else value[:limit] + f"...({len(value)} chars)"
