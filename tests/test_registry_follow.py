"""`ferry registry serve` and `ferry follow`: a real server on a loopback port, a device folder,
and the things that go wrong on the way (a cut connection, a changed store file, a wrong key,
a missing API key, paths that reach outside a version)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from onnxferry import Model
from onnxferry.errors import InputError
from onnxferry.registry import Registry, VersionRecord
from onnxferry.registry.client import Target
from onnxferry.registry.follow import (
    CURRENT,
    PARTIAL,
    VERSIONS,
    FollowResult,
    follow,
    follow_once,
    state,
)
from onnxferry.serve.registry_http import running_registry
from onnxferry.signing import generate_keys
from tests.helpers import Run, free_port, mlp, save

KEY = "0123456789abcdef0123456789abcdef"


@dataclass
class Channel:
    """A registry with model m: versions 1 and 2 signed, production on 1."""

    root: Path
    reg: Registry
    private: Path
    public: Path
    v1: VersionRecord
    v2: VersionRecord

    @property
    def dest(self) -> Path:
        return self.root / "device"

    def add(self, seed: int, *, signed: bool = True, **options: object) -> VersionRecord:
        model = save(mlp(seed=seed, hidden=1024), self.root / f"m{seed}" / "model.onnx")
        key = self.private if signed else None
        return self.reg.add(model, "m", sign_key=key, **options)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def channel(tmp_path: Path, keys: tuple[Path, Path]) -> Channel:
    reg = Registry.open(tmp_path / "registry", create=True)
    c = Channel(tmp_path, reg, keys[0], keys[1], None, None)  # type: ignore[arg-type]
    c.v1, c.v2 = c.add(1), c.add(2)
    reg.set_alias("m", "production", 1)
    return c


@pytest.fixture
def url(channel: Channel) -> Iterator[str]:
    with running_registry(channel.reg.path) as base:
        yield base


def _current(dest: Path) -> int | None:
    now = state(dest).current
    return None if now is None else now.version


def _get(
    base: str, path: str, headers: dict[str, str] | list[tuple[str, str]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw request: the path goes out exactly as written (no dot-segment clean-up);
    ``headers`` as pairs may repeat a name."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        pairs = headers.items() if isinstance(headers, dict) else headers or []
        for name, value in pairs:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# --- installing, swapping, rolling back ------------------------------------------------------


def test_follow_once_installs_a_signed_version_that_loads(
    channel: Channel, url: str, ferry: Run
) -> None:
    args = ["follow", url, "--model", "m", "--to", channel.dest, "--public-key", channel.public]
    code, out, err = ferry(*args, "--once", "--json")
    assert code == 0, err
    result = json.loads(out)["result"]
    assert (result["action"], result["version"], result["previous"]) == ("installed", 1, None)
    assert result["downloaded"] == sum(f.size for f in channel.v1.files.values())
    model = Model.load(channel.dest / CURRENT / "model.onnx")
    assert model.digest == channel.v1.digest
    code, out, _ = ferry(*args, "--once", "--json")
    assert (code, json.loads(out)["result"]["action"]) == (0, "unchanged")


def test_a_promotion_is_swapped_in_the_previous_kept_and_rollback_holds(
    channel: Channel, url: str, ferry: Run
) -> None:
    dest = channel.dest
    assert follow_once(url, "m", "production", dest, public_key=channel.public).version == 1
    channel.reg.set_alias("m", "production", 2)
    result = follow_once(url, "m", "production", dest, public_key=channel.public)
    assert (result.action, result.version, result.previous) == ("installed", 2, 1)
    assert Model.load(dest / CURRENT / "model.onnx").digest == channel.v2.digest
    assert os.readlink(dest / "previous").startswith(f"{VERSIONS}/m-1-")

    v3 = channel.add(3)
    channel.reg.set_alias("m", "production", v3.version)
    assert follow_once(url, "m", "production", dest).previous == 2
    kept = sorted(p.name.split("-")[1] for p in (dest / VERSIONS).iterdir())
    assert kept == ["2", "3"]  # current and previous only

    code, out, err = ferry("follow", "--rollback", "--to", dest, "--json")
    assert code == 0, err
    assert json.loads(out)["result"]["version"] == 2
    assert _current(dest) == 2
    held = follow_once(url, "m", "production", dest)
    assert (held.action, _current(dest)) == ("held", 2)  # the channel still names 3

    channel.reg.set_alias("m", "production", 1)  # the channel moves on: followed again
    assert follow_once(url, "m", "production", dest).action == "installed"
    assert (_current(dest), state(dest).held) == (1, None)


def test_the_loop_polls_until_stopped(channel: Channel, url: str) -> None:
    stop = threading.Event()
    seen: list[object] = []

    def record(outcome: object) -> None:
        seen.append(outcome)
        if len(seen) == 2:
            stop.set()

    follow(url, "m", "production", channel.dest, interval=0.01, stop=stop, on_result=record)
    assert [r.action for r in seen if isinstance(r, FollowResult)] == ["installed", "unchanged"]


def test_an_encrypted_version_is_installed_as_stored_and_checked_with_its_key(
    channel: Channel, url: str
) -> None:
    key = bytes(range(32))
    v3 = channel.add(3, encrypt_key=key)
    channel.reg.set_alias("m", "production", v3.version)
    result = follow_once(url, "m", "production", channel.dest, public_key=channel.public, key=key)
    assert result.action == "installed"
    assert (channel.dest / CURRENT / "model.onnx").read_bytes().startswith(b"FERRYENC1")
    with pytest.raises(InputError, match="key"):
        follow_once(url, "m", "production", channel.root / "other", key=bytes(32),
                    public_key=channel.public)  # fmt: skip
    assert not (channel.root / "other" / CURRENT).exists()


# --- interrupted downloads -------------------------------------------------------------------


class CuttingProxy:
    """A loopback TCP proxy in front of the server that cuts the first response to a request
    for ``/files/model.onnx`` after ``limit`` bytes; it keeps each request's head."""

    def __init__(self, upstream: str, limit: int) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.limit = limit
        self.heads: list[str] = []
        self.cut = False
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.upstream) as server:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            self.heads.append(head.decode("latin-1"))
            server.sendall(head)
            cut = not self.cut and "/files/model.onnx " in head.decode("latin-1")
            self.cut = self.cut or cut
            sent = 0
            while chunk := server.recv(65536):
                if cut and sent + len(chunk) >= self.limit:
                    client.sendall(chunk[: self.limit - sent])
                    client.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(chunk)
                sent += len(chunk)

    def close(self) -> None:
        self.sock.close()


def test_an_interrupted_download_resumes_with_a_range_request(channel: Channel, url: str) -> None:
    size = channel.v1.files["model.onnx"].size
    proxy = CuttingProxy(url, limit=size // 2)
    try:
        with pytest.raises(InputError, match="interrupted after"):
            follow_once(proxy.url, "m", "production", channel.dest, public_key=channel.public)
        assert not (channel.dest / CURRENT).exists()  # nothing half installed
        parts = list((channel.dest / PARTIAL).rglob("model.onnx.part"))
        assert len(parts) == 1
        have = parts[0].stat().st_size
        assert 0 < have < size

        result = follow_once(proxy.url, "m", "production", channel.dest, public_key=channel.public)
    finally:
        proxy.close()
    assert (result.action, result.resumed) == ("installed", have)
    asked = [h for h in proxy.heads if "/files/model.onnx " in h][-1].lower()
    assert f"range: bytes={have}-" in asked
    assert f'if-range: "{channel.v1.files["model.onnx"].sha256}"' in asked
    assert Model.load(channel.dest / CURRENT / "model.onnx").digest == channel.v1.digest
    assert list((channel.dest / PARTIAL).iterdir()) == []


def test_a_damaged_part_is_discarded_and_fetched_whole(channel: Channel, url: str) -> None:
    record = Target.parse(json.loads(_get(url, "/v1/models/m/versions/1")[2]), "m", "test")
    part = channel.dest / PARTIAL / record.id / "model.onnx.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # not the file's first bytes
    result = follow_once(url, "m", "production", channel.dest, public_key=channel.public)
    assert (result.action, result.resumed) == ("installed", 0)
    assert Model.load(channel.dest / CURRENT / "model.onnx").digest == channel.v1.digest


def test_the_file_route_answers_byte_ranges_by_etag(channel: Channel, url: str) -> None:
    fact = channel.v1.files["model.onnx"]
    path = "/v1/models/m/versions/1/files/model.onnx"
    status, headers, whole = _get(url, path)
    assert (status, headers["etag"], int(headers["content-length"])) == (
        200, f'"{fact.sha256}"', fact.size
    )  # fmt: skip
    etag = headers["etag"]
    status, headers, tail = _get(url, path, {"Range": "bytes=100-", "If-Range": etag})
    assert (status, headers["content-range"], tail) == (
        206, f"bytes 100-{fact.size - 1}/{fact.size}", whole[100:]
    )  # fmt: skip
    assert _get(url, path, {"Range": "bytes=-10"})[2] == whole[-10:]
    assert _get(url, path, {"Range": "bytes=100-", "If-Range": '"other"'})[:1] == (200,)
    status, headers, _ = _get(url, path, {"Range": f"bytes={fact.size}-"})
    assert (status, headers["content-range"]) == (416, f"bytes */{fact.size}")


# --- refusals --------------------------------------------------------------------------------


def test_a_changed_store_file_is_refused_and_current_stays(
    channel: Channel, url: str, ferry: Run
) -> None:
    follow_once(url, "m", "production", channel.dest, public_key=channel.public)
    stored = channel.reg.store.local_path(channel.v2.location, "model.onnx")
    assert stored is not None
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the digest tells
    stored.write_bytes(bytes(data))
    channel.reg.set_alias("m", "production", 2)

    args = ["follow", url, "--model", "m", "--to", channel.dest, "--once", "--json"]
    code, out, _ = ferry(*args)
    result = json.loads(out)["result"]
    assert (code, result["action"]) == (1, "refused")
    assert "does not match its recorded sha256" in result["reason"]
    assert _current(channel.dest) == 1
    assert [p.name.split("-")[1] for p in (channel.dest / VERSIONS).iterdir()] == ["1"]
    assert list((channel.dest / PARTIAL).iterdir()) == []


def test_a_wrong_public_key_or_an_unsigned_version_is_refused(
    channel: Channel, url: str, tmp_path: Path
) -> None:
    _, other = generate_keys(tmp_path / "other")
    wrong = follow_once(url, "m", "production", channel.dest, public_key=other)
    assert (wrong.action, wrong.ok) == ("refused", False)
    assert "signature does not verify" in (wrong.reason or "")
    assert not (channel.dest / CURRENT).exists()
    assert list((channel.dest / VERSIONS).glob("*")) == []

    follow_once(url, "m", "production", channel.dest, public_key=channel.public)
    unsigned = channel.add(4, signed=False)
    channel.reg.set_alias("m", "production", unsigned.version)
    refused = follow_once(url, "m", "production", channel.dest, public_key=channel.public)
    assert "unsigned" in (refused.reason or "")
    assert _current(channel.dest) == 1


def test_the_agent_refuses_a_record_that_names_files_outside_its_folder() -> None:
    fact = {"sha256": "0" * 64, "size": 1}
    record = {"name": "m", "version": 1, "digest": "0" * 64, "model_file": "model.onnx"}
    Target.parse({**record, "files": {"model.onnx": fact}}, "m", "test")
    for rel in ("../evil", "/etc/passwd", "a//b", "a/./b", ".ferry-record.json", "x.part"):
        bad = {**record, "files": {"model.onnx": fact, rel: fact}}
        with pytest.raises(InputError, match="unsafe file name"):
            Target.parse(bad, "m", "test")


# --- the server: keys and paths --------------------------------------------------------------


def test_registry_serve_wants_its_api_key(channel: Channel) -> None:
    key_file = channel.root / "keys.txt"
    key_file.write_text(f"# the devices' key\n{KEY}\n")
    key_file.chmod(0o600)
    port = free_port()
    ferry = [sys.executable, "-m", "onnxferry", "registry", "serve", str(channel.reg.path)]
    server = subprocess.Popen(
        [*ferry, "--port", str(port), "--api-key-file", str(key_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(base, "/v2/health/ready")[0] == 200:  # no key needed
                    break
            except OSError:
                pass
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "ferry registry serve did not start"
            time.sleep(0.1)
        assert _get(base, "/v1/models")[0] == 401
        assert _get(base, "/v1/nothing")[0] == 401  # 401 before 404
        bearer = {"Authorization": f"Bearer {KEY}"}
        assert json.loads(_get(base, "/v1/models", bearer)[2]) == {"models": ["m"]}
        twice = [("Authorization", f"Bearer {KEY}"), ("Authorization", "Bearer wrong")]
        status, _, body = _get(base, "/v1/models", twice)
        assert status == 400 and b"2 Authorization headers; send one" in body, body
        with pytest.raises(InputError, match="wants an API key"):
            follow_once(base, "m", "production", channel.dest)
        assert follow_once(base, "m", "production", channel.dest, api_key=KEY).version == 1
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/m/versions/1/files/../../../catalog.db",
        "/v1/models/m/versions/1/files/%2e%2e/%2e%2e/%2e%2e/catalog.db",
        "/v1/models/m/versions/1/files/..%2F..%2F..%2Fcatalog.db",
        "/v1/models/m/versions/1/files//etc/passwd",
        "/v1/models/m/versions/1/files/%2Fetc%2Fpasswd",
        "/v1/models/m/versions/1/files/./model.onnx",
        "/v1/models/m/versions/1/files/",
        "/v1/models/..%2F..%2F/versions/1/files/model.onnx",
        "/v1/models/m/versions/1e3/files/model.onnx",
        "/v1/models/m/versions/-1/files/model.onnx",
        "/v1/models/m/versions/99/files/model.onnx",
        "/v1/models/nothing",
        "/v1/models/m/aliases/nothing",
    ],
)
def test_paths_outside_a_version_are_not_found(url: str, path: str) -> None:
    status, _, body = _get(url, path)
    assert status == 404, body
    assert set(json.loads(body)) == {"error"}


def test_the_registry_is_read_only(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("DELETE", "/v1/models/m")
    response = conn.getresponse()
    assert (response.status, response.getheader("allow")) == (405, "GET, HEAD")
    conn.close()
