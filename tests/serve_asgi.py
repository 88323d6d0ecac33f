"""The in-process tier of the serve tests: the ASGI app driven by httpx's ASGITransport, with
its lifespan run as a server runs it, on an event loop thread of its own. No port, no sleeps.

    with in_process(tmp_path / "m.onnx", settings=ServeSettings(api_keys=(KEY,))) as app:
        status, headers, body = app.exchange("POST", "/v2/models/m/infer", body)
        status, body = app.request("GET", "/v2/health/ready")
        status, error = app.error_of("GET", "/v2/models/nope")
        response = app.run(app.client.post("/v2/models/m/infer", content=pieces()))

It takes what ``server.running`` takes, and its calls answer as those of ``serve_probes`` do;
``client`` (an httpx.AsyncClient) is there for the rest, run on the app's loop with ``run``.
What needs a real socket (connections, header limits, slow clients on the wire, draining on
shutdown, tritonclient) stays with the live-server tier.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx

from onnxferry.serve.app import ServeApp, ServeSettings
from onnxferry.serve.config import ModelConfig
from onnxferry.serve.keys import check_settings
from onnxferry.serve.server import build_app

T = TypeVar("T")
CLIENT = "127.0.0.1"
"""The client address the app sees (the access log shows it)."""


class InProcess:
    """A started app and a client for it; calls block until the app has answered."""

    def __init__(self, app: ServeApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self._loop = loop
        transport = httpx.ASGITransport(app=cast(Any, app), client=(CLIENT, 50000))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://in-process")

    def exchange(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, response headers with lower-case names, body); ``headers`` as pairs may
        repeat a name."""
        given = headers if isinstance(headers, list) else dict(headers or {})
        call = self.client.request(method, path, content=body, headers=given)
        response = self.run(call)
        return response.status_code, dict(response.headers), response.content

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """``exchange`` without the response headers: (status, body)."""
        status, _, data = self.exchange(method, path, body, headers)
        return status, data

    def error_of(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """(status, the error message of the body, or "" when it has none)."""
        status, _, data = self.exchange(method, path, body, headers)
        return status, json.loads(data).get("error", "") if data else ""

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        """Run ``coroutine`` on the app's event loop; its result (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def aclose(self) -> None:
        await self.client.aclose()


@contextmanager
def in_process(
    path: str | Path | ServeApp,
    settings: ServeSettings | None = None,
    config: ModelConfig | None = None,
    poll_interval_s: float | None = None,
) -> Iterator[InProcess]:
    """The app over ``path`` (or ``path`` itself, an app), started; stopped on exit. With
    ``poll_interval_s`` its repository polls the disk (the app's lifespan starts it)."""
    if isinstance(path, ServeApp):
        check_settings(path.settings)
        app = path
    else:
        app = build_app(path, settings, config, poll_interval_s)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="in-process app", daemon=True)
    thread.start()
    try:
        lifespan = asyncio.run_coroutine_threadsafe(_Lifespan.start(app), loop).result(120)
        client = InProcess(app, loop)
        try:
            yield client
        finally:
            client.run(client.aclose())
            client.run(lifespan.stop())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


class _Lifespan:
    """The ASGI lifespan protocol, as a server speaks it to the app."""

    def __init__(self, app: ServeApp) -> None:
        self.inbox: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        self.task = asyncio.create_task(app(scope, self.inbox.get, self.outbox.put))

    @classmethod
    async def start(cls, app: ServeApp) -> _Lifespan:
        lifespan = cls(app)
        await lifespan.inbox.put({"type": "lifespan.startup"})
        message = await lifespan.outbox.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the app did not start: {message.get('message', message)}")
        return lifespan

    async def stop(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        await self.task
