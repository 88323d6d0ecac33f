"""Busy polling (``--busy-poll-us``): after the last response the event loop polls without
sleeping for the window, never while a request is in flight, and then sleeps again. Its
latency effect is measured in benchmarks/serve_floors.py, not here."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from onnxferry.errors import UsageError
from onnxferry.serve.busypoll import BusyPoll
from onnxferry.serve.server import ServerOptions, running
from tests.helpers import RELU, Run, onnx_text, save


async def _request(app: BusyPoll) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app({"type": "http"}, receive, send)


def test_the_loop_polls_for_the_window_after_a_response_then_sleeps() -> None:
    release = asyncio.Event()
    held: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()

    async def scenario() -> BusyPoll:
        poll = BusyPoll(app, window_us=30_000)
        task = asyncio.create_task(_request(poll))
        await asyncio.sleep(0.01)  # a request in flight: no polling meanwhile
        held.append(poll.spinning)
        release.set()
        await task
        assert poll.spinning
        start = time.monotonic()
        while poll.spinning:
            await asyncio.sleep(0.005)
        held.append(0.02 < time.monotonic() - start < 1.0)
        spins = poll.spins
        await asyncio.sleep(0.05)
        held.append(poll.spins == spins)  # asleep again: no more iterations
        return poll

    poll = asyncio.run(scenario())
    assert held == [False, True, True]
    assert poll.spins > 100  # iterations of a loop that never slept for 30 ms


def test_other_scopes_pass_through_without_polling() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def scenario() -> BusyPoll:
        poll = BusyPoll(app, window_us=10_000)
        await poll({"type": "lifespan"}, None, None)
        return poll

    poll = asyncio.run(scenario())
    assert seen == ["lifespan"] and not poll.spinning and poll.spins == 0


def test_a_server_with_busy_polling_answers_requests(tmp_path: Path) -> None:
    model = save(onnx_text(RELU), tmp_path / "m.onnx")
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], dtype=np.float32)
    with running(model, ServerOptions(port=0, busy_poll_us=2000)) as url:
        client = triton.InferenceServerClient(url.removeprefix("http://"))
        for _ in range(3):
            item = triton.InferInput("x", [1, 4], "FP32").set_data_from_numpy(x)
            y = client.infer("m", [item]).as_numpy("y")
            assert y.tolist() == [[0.0, 2.0, 0.0, 4.0]]
        # after the window the server's threads sleep: little CPU over 0.3 s
        time.sleep(0.1)
        before = os.times()
        time.sleep(0.3)
        after = os.times()
        assert (after.user + after.system) - (before.user + before.system) < 0.15


@pytest.mark.parametrize("value", [-1.0, True, "1", float("inf")])  # inf: OverflowError
def test_a_negative_or_non_numeric_window_is_refused(value: Any) -> None:
    with pytest.raises(UsageError, match="busy_poll_us"):
        ServerOptions(busy_poll_us=value)


def test_the_cli_refuses_a_negative_window_in_one_line(ferry: Run, tmp_path: Path) -> None:
    model = save(onnx_text(RELU), tmp_path / "m.onnx")
    code, out, err = ferry("serve", model, "--busy-poll-us", "-5")
    assert code == 2
    assert "--busy-poll-us" in err and "Traceback" not in err
