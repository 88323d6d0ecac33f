"""`ferry serve registry:PATH`: each model's production alias serves; a promotion is picked up
live (verified, loaded, warmed up, checked on its golden data, then swapped in) and a new
version whose first answers go wrong (NaN outputs) is rolled back by the server itself, into
the registry's history and the metrics. Real registries, a real `ferry serve` process (and the
server in a thread for the signed and encrypted cases), tritonclient clients hammering infer
throughout: no request fails.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxferry.cli import main
from onnxferry.data import save_test_case
from onnxferry.errors import UsageError
from onnxferry.registry import Registry
from onnxferry.serve.app import ServeSettings
from onnxferry.serve.registry_source import RegistryOptions, RegistryRepository, RollbackPolicy
from onnxferry.serve.server import ServerOptions, running
from onnxferry.signing import generate_keys
from tests.helpers import free_port, wait_ready
from tests.test_serve_cli import FERRY
from tests.test_serve_repository import SMALL, add_model

httpclient = pytest.importorskip("tritonclient.http")

X = np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32)
"""What the clients send: the negative entry turns Sqrt's answer into NaN."""
POSITIVE = {"x": np.array([[1.0, 4.0, 9.0, 16.0]], np.float32)}
"""Golden inputs: every version's outputs on them are finite."""


def sqrt_model() -> onnx.ModelProto:
    """y = sqrt(x): passes golden data of positive inputs, NaN on negative ones."""
    graph = helper.make_graph(
        [helper.make_node("Sqrt", ["x"], ["y"])],
        "sqrt",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def register(
    reg: Registry,
    tmp: Path,
    proto: onnx.ModelProto,
    expected: np.ndarray | None = None,
    **options: Any,
) -> int:
    """Add ``proto`` as the next version of "m" with golden data (``expected``: the outputs
    it claims, default its own); its number."""
    folder = tmp / f"src-{secrets.token_hex(4)}"
    folder.mkdir()
    onnx.save(proto, folder / "model.onnx")
    if expected is None:
        from onnxferry.model import Model
        from onnxferry.runtime import OrtRunner

        expected = OrtRunner(Model.from_proto(proto)).run(POSITIVE)["y"]
    save_test_case(folder / "golden" / "test_data_set_0", POSITIVE, {"y": expected})
    return reg.add(folder / "model.onnx", "m", golden=folder / "golden", **options).version


@dataclass
class Traffic:
    """Clients sending X to model "m" in threads until stopped: what came back."""

    url: str
    answers: list[tuple[str, float]] = field(default_factory=list)  # (version, first output)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = httpclient.InferenceServerClient(self.url.removeprefix("http://"))
        request = httpclient.InferInput("x", list(X.shape), "FP32")
        request.set_data_from_numpy(X)
        while not self.stop.is_set():
            try:
                result = client.infer("m", [request])
                version = str(result.get_response()["model_version"])
                self.answers.append((version, float(result.as_numpy("y")[0, 0])))
            except Exception as e:  # a failed request: what the test counts
                self.failures.append(f"{type(e).__name__}: {e}")
        client.close()


@contextmanager
def traffic(url: str, clients: int = 3) -> Iterator[Traffic]:
    load = Traffic(url)
    threads = [threading.Thread(target=load.run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield load
    finally:
        load.stop.set()
        for t in threads:
            t.join(30)


def until(what: str, check: Callable[[], bool], limit: float = 60.0) -> None:
    end = time.monotonic() + limit
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def get(url: str, data: bytes | None = None) -> Any:
    with urllib.request.urlopen(url, data, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def index_row(url: str, version: int) -> dict[str, Any]:
    rows = get(f"{url}/v2/repository/index", b"{}")
    return next((r for r in rows if r["version"] == str(version)), {})


def serving(url: str) -> list[str]:
    versions: list[str] = get(f"{url}/v2/models/m")["versions"]
    return versions


def test_promotion_and_automatic_rollback_with_no_failed_request(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path / "reg", create=True)
    v1 = register(reg, tmp_path, add_model(1))
    v2 = register(reg, tmp_path, add_model(2))
    v3 = register(reg, tmp_path, add_model(4), expected=POSITIVE["x"] + 2)  # fails its golden
    v4 = register(reg, tmp_path, sqrt_model())  # passes its golden, NaN for the clients
    reg.set_alias("m", "production", v1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(FERRY), "serve", f"registry:{tmp_path / 'reg'}", "--port", str(port)]
    command += ["--poll", "0.2", "--instances", "1", "--threads", "1", "--repository-api"]
    command += ["--rollback-after-requests", "20", "--rollback-error-rate", "0.2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_ready(port, process)
        assert serving(url) == [str(v1)]
        with traffic(url) as load:
            until("answers from version 1", lambda: len(load.answers) > 20)
            assert set(load.answers) == {(str(v1), 0.0)}  # -1 + 1

            # (a) a promotion: loaded, checked and swapped in while the clients keep going
            reg.set_alias("m", "production", v2, reason="better")
            until("version 2 to serve", lambda: serving(url) == [str(v2)])
            mark = len(load.answers)
            until("answers from version 2", lambda: len(load.answers) > mark + 30)
            assert set(load.answers[-20:]) == {(str(v2), 1.0)}  # old requests drained before

            # (c) a version that fails its golden data is refused; version 2 keeps serving
            reg.set_alias("m", "production", v3)
            until("version 3 refused", lambda: "golden" in index_row(url, v3).get("reason", ""))
            assert index_row(url, v3)["state"] == "UNAVAILABLE"
            assert index_row(url, v2)["state"] == "READY"
            assert serving(url) == [str(v2)]

            # (b) a version that answers NaN: served, then rolled back by the server itself
            reg.set_alias("m", "production", v4)
            until("version 4 to serve", lambda: any(a[0] == str(v4) for a in load.answers))
            until("the rollback", lambda: serving(url) == [str(v2)])
            time.sleep(1.0)  # several polls: the version rolled back from stays out
            assert serving(url) == [str(v2)]
            late = load.answers[-20:]
        assert load.failures == [], load.failures[:3]
        assert set(late) == {(str(v2), 1.0)}
        bad = [a for a in load.answers if a[0] == str(v4)]
        assert bad and all(np.isnan(value) for _, value in bad)

        change = reg.history("m", "production")[-1]
        assert (change.action, change.version, change.previous) == ("auto-rollback", v2, v4)
        assert "5 of its first 5 answers" in change.reason
        assert "5 with NaN or Inf outputs" in change.reason and "error rate 0.2" in change.reason
        assert reg.aliases("m")["production"] == v2
        assert "auto-rollback" in index_row(url, v2)["reason"]
        assert 'ferry_auto_rollbacks_total{model="m"} 1.0' in get(f"{url}/metrics")
    finally:
        process.terminate()
        process.communicate(timeout=60)


def test_a_window_that_passes_keeps_the_new_version(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path / "reg", create=True)
    v1 = register(reg, tmp_path, add_model(1))
    v2 = register(reg, tmp_path, sqrt_model())
    reg.set_alias("m", "production", v1)
    options = RegistryOptions(rollback=RollbackPolicy(after_requests=10, window_s=0.3))
    server = ServerOptions(port=0, poll_interval_s=0.1)
    with running(f"registry:{tmp_path / 'reg'}", server, config=SMALL, registry=options) as url:
        reg.set_alias("m", "production", v2)
        until("version 2 to serve", lambda: serving(url) == [str(v2)])
        time.sleep(1.5)  # the window ends with no answer: nothing to judge, it stays
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        request = httpclient.InferInput("x", [1, 4], "FP32")
        request.set_data_from_numpy(X)
        for _ in range(3):
            assert np.isnan(client.infer("m", [request]).as_numpy("y")[0, 0])
        time.sleep(0.3)
        assert serving(url) == [str(v2)]
        assert reg.history("m")[-1].action == "set"
        assert 'ferry_auto_rollbacks_total{model="m"}' not in get(f"{url}/metrics")


def test_signed_only_refuses_an_unsigned_promotion_and_serves_an_encrypted_one(
    tmp_path: Path,
) -> None:
    private, public = generate_keys(tmp_path / "keys")
    key_file = tmp_path / "secret.key"
    key_file.write_text(secrets.token_hex(32))
    key = bytes.fromhex(key_file.read_text())
    reg = Registry.open(tmp_path / "reg", create=True)
    v1 = register(reg, tmp_path, add_model(1), sign_key=private)
    v2 = register(reg, tmp_path, add_model(2))  # not signed
    v3 = register(reg, tmp_path, add_model(3), sign_key=private, encrypt_key=key)
    reg.set_alias("m", "production", v1)
    settings = ServeSettings(repository_api=True, require_signature=public)
    server = ServerOptions(port=0, poll_interval_s=0.1)
    options = RegistryOptions(key_file=key_file)
    source = f"registry:{tmp_path / 'reg'}"
    with running(source, server, settings, SMALL, registry=options) as url:
        with traffic(url, clients=2) as load:
            reg.set_alias("m", "production", v2)
            until("version 2 refused", lambda: "signature" in index_row(url, v2).get("reason", ""))
            assert "unsigned" in index_row(url, v2)["reason"]
            assert serving(url) == [str(v1)]
            reg.set_alias("m", "production", v3)  # signed and encrypted: decrypted in memory
            until("version 3 to serve", lambda: serving(url) == [str(v3)])
            mark = len(load.answers)
            until("answers from version 3", lambda: len(load.answers) > mark + 30)
        assert load.failures == []
        assert set(load.answers[-20:]) == {(str(v3), 2.0)}


def test_500s_count_and_a_window_that_ends_past_the_rate_rolls_back(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path / "reg", create=True)
    v1 = register(reg, tmp_path, add_model(1))
    v2 = register(reg, tmp_path, add_model(2))
    reg.set_alias("m", "production", v1)
    policy = RollbackPolicy(after_requests=100, window_s=0.3, error_rate=0.2)

    async def scenario() -> list[str]:
        repo = RegistryRepository.open(tmp_path / "reg", config=SMALL, rollback=policy)
        await repo.start()
        try:
            reg.set_alias("m", "production", v2)
            assert await repo.poll_once() == ["m/2 loaded", "m/1 unloaded"]
            new = repo.get("m")
            repo.observe(new, {"y": np.zeros((1, 4), np.float32)})
            repo.observe(new, None, "bad_request")  # the client's fault: not counted
            repo.observe(new, None, "queue_full")  # busy, not broken: not counted
            repo.observe(new, None, "internal")  # 1 error in 2 answers, past 0.2 at the end
            assert repo.get("m") is new
            await asyncio.sleep(0.5)
            while repo.get("m") is new or reg.history("m")[-1].action != "auto-rollback":
                await asyncio.sleep(0.05)
            return [repo.get("m").version, reg.history("m")[-1].reason, *await repo.poll_once()]
        finally:
            await repo.stop()

    version, reason, *changes = asyncio.run(scenario())
    assert version == str(v1) and changes == []
    assert "1 of its first 2 answers" in reason and "1 answered 500 or 504" in reason


def test_a_remote_store_version_is_fetched_and_checked_on_its_golden_data(
    tmp_path: Path,
) -> None:
    store = f"memory://ferry-serve-{secrets.token_hex(4)}"  # fsspec's in-process store
    reg = Registry.open(tmp_path / "reg", create=True, store=store)
    v1 = register(reg, tmp_path, add_model(1))
    v2 = register(reg, tmp_path, add_model(2), expected=POSITIVE["x"])  # claims y = x
    v3 = register(reg, tmp_path, add_model(3))
    reg.set_alias("m", "production", v1)

    async def scenario() -> tuple[list[str], list[str], list[dict[str, Any]]]:
        repo = RegistryRepository.open(tmp_path / "reg", config=SMALL)
        await repo.start()
        try:
            reg.set_alias("m", "production", v2)
            refused = await repo.poll_once()
            index = repo.index()
            reg.set_alias("m", "production", v3)
            return refused, await repo.poll_once(), index
        finally:
            await repo.stop()

    refused, promoted, index = asyncio.run(scenario())
    assert refused == ["m/2 failed"] and promoted == ["m/3 loaded", "m/1 unloaded"]
    assert [(row["version"], row["state"]) for row in index] == [
        ("1", "READY"),
        ("2", "UNAVAILABLE"),
    ]
    assert index[1]["reason"].startswith("golden data: 1 of 1 sets fail; test_data_set_0: worst")


def test_rollback_policy_and_registry_options_are_checked() -> None:
    with pytest.raises(UsageError, match="--rollback-error-rate"):
        RollbackPolicy(error_rate=1.5)
    with pytest.raises(UsageError, match="--rollback-after-requests"):
        RollbackPolicy(after_requests=0)
    with pytest.raises(UsageError, match="--rollback-window-s"):
        RollbackPolicy(window_s=float("nan"))


def test_serve_registry_mistakes_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(add_model(1), model)
    assert main(["serve", str(model), "--alias", "staging"]) == 2
    assert main(["serve", f"registry:{tmp_path / 'none'}"]) == 2
    assert main(["serve", f"registry:{tmp_path}", "--rollback-error-rate", "2"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3, lines
    assert "registry:PATH only" in lines[0]
    assert "no registry here" in lines[1]
    assert "between 0 and 1" in lines[2]
