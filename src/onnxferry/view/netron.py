"""Netron on this machine: the interactive graph of a model in a browser.

    with start_viewer("model.onnx", port=0, browse=False) as viewer:   # served in a thread
        print(viewer.url)                                               # http://127.0.0.1:PORT
    view("model.onnx", port=8081, browse=False)      # serves until Ctrl-C or SIGTERM

The model is loaded through ``Model.load`` first (its checks), then Netron (the ``netron``
package) serves it: its page at ``/``, the model file at ``/data/<file name>``. Netron serves
the other files of the model's directory too (external data), so it listens on loopback
unless told otherwise. A port already in use is one line (exit 2).
"""

from __future__ import annotations

import errno
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import InputError, UsageError, one_line
from ..model import Model

DEFAULT_HOST = "127.0.0.1"


@dataclass
class Viewer:
    """A Netron server running in this process; ``stop`` (or the ``with`` block) ends it."""

    model: Model
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def alive(self) -> bool:
        return bool(_netron().status((self.host, self.port)))

    def stop(self) -> None:
        _netron().stop((self.host, self.port))

    def __enter__(self) -> Viewer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def start_viewer(
    model: str | Path | Model,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    browse: bool = True,
) -> Viewer:
    """Start Netron on ``model`` in a background thread. ``port`` None takes 8080, 8081 or
    another free port (Netron's choice), 0 any free port; ``browse`` opens the browser."""
    netron = _netron()
    loaded = model if isinstance(model, Model) else Model.load(model)
    if loaded.path is None:
        raise UsageError(
            "Netron serves a model from its file, and this model has none",
            hint="save it first (model.save('model.onnx')) and view that file",
        )
    logging.getLogger("netron").setLevel(logging.WARNING)  # we print the address ourselves
    address: tuple[str, int | None] = (host, port)
    try:
        bound = netron.start(str(loaded.path), address=address, browse=browse)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InputError(
                f"port {port} on {host} is in use",
                hint="choose another with --port, or leave --port out to take a free one",
            ) from None
        raise InputError(
            f"Netron cannot listen on {host}:{port}: {one_line(e)}",
            hint="check --host and --port",
        ) from None
    return Viewer(loaded, bound[0], int(bound[1]))


def view(
    model: str | Path | Model,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    browse: bool = True,
    ready: Callable[[Viewer], None] | None = None,
) -> None:
    """Serve ``model`` in Netron until Ctrl-C or SIGTERM (then stop and return); ``ready`` is
    called with the running Viewer (to print its address)."""
    stopping = threading.Event()
    with (
        start_viewer(model, host=host, port=port, browse=browse) as viewer,
        _until_signal(stopping),
    ):
        if ready is not None:
            ready(viewer)
        while viewer.alive and not stopping.wait(0.2):
            pass


@contextmanager
def _until_signal(event: threading.Event) -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM set ``event`` (in the main thread; elsewhere the
    handlers stay as they are)."""
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: event.set())
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _netron() -> Any:
    try:
        import netron
    except ImportError:
        raise UsageError(
            "viewing a model needs netron, which is not installed",
            hint="pip install 'onnxferry[view]'",
        ) from None
    return netron
