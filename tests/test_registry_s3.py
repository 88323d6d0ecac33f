"""The registry with its artifacts on S3 (``s3://bucket/prefix`` through s3fs), against a real
S3 protocol server on loopback: moto's server mode, started here. The catalog stays local."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onnxferry.errors import InputError
from onnxferry.model import Model
from onnxferry.registry import Registry
from onnxferry.registry.access import opened
from tests.helpers import free_port, mlp, save, save_external

s3fs = pytest.importorskip("s3fs", reason="the S3 store needs s3fs (onnxferry[registry])")
pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the dev extra)")

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, for this module's tests."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **CREDENTIALS},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                _, err = server.communicate()
                pytest.fail(f"moto's server did not start: {err.decode()[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.communicate(timeout=30)


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; fsspec configured to reach the server, as FSSPEC_S3_ENDPOINT_URL does
    for a new process (fsspec reads its environment once, at import)."""
    import fsspec.config

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    name = f"ferry-{secrets.token_hex(4)}"
    s3().mkdir(name)
    return name


def s3() -> Any:
    """A fresh s3fs client (no cached listings) configured like the registry's."""
    return s3fs.S3FileSystem(skip_instance_cache=True)


def keys(prefix: str) -> set[str]:
    """Every object under ``prefix``, relative to it."""
    return {str(k).removeprefix(prefix + "/") for k in s3().find(prefix)}


def test_versions_live_in_the_bucket_and_are_fetched_checked(bucket: str, tmp_path: Path) -> None:
    model = save_external(mlp(0), tmp_path / "out" / "model.onnx")
    reg = Registry.open(tmp_path / "registry", store=f"s3://{bucket}/models", create=True)
    record = reg.add(model, "mlp")
    assert (record.ref, record.digest) == ("mlp:1", Model.load(model).digest)
    assert keys(f"{bucket}/models") == {
        f"{record.location}/model.onnx",
        f"{record.location}/weights.bin",
    }
    assert sorted(p.name for p in (tmp_path / "registry").iterdir()) == ["catalog.db"]
    weights = (model.parent / "weights.bin").read_bytes()
    assert s3().cat_file(f"{bucket}/models/{record.location}/weights.bin") == weights

    again = Registry.open(tmp_path / "registry")  # the store URL is in the catalog
    assert again.store.url == f"s3://{bucket}/models" and not again.store.local
    fetched = again.local_files(again.get("mlp:1"), tmp_path / "f")
    assert fetched.read_bytes() == model.read_bytes()
    assert (fetched.parent / "weights.bin").read_bytes() == weights
    with opened(again, record) as v:
        assert v.model.digest == record.digest
    assert again.add(model, "mlp").version == 2
    assert again.fsck().result.findings == []


def test_a_changed_object_is_refused_and_reported(bucket: str, tmp_path: Path) -> None:
    model = save(mlp(0), tmp_path / "model.onnx")
    reg = Registry.open(tmp_path / "registry", store=f"s3://{bucket}/p", create=True)
    record = reg.add(model, "m")
    s3().pipe_file(f"{bucket}/p/{record.location}/model.onnx", b"not the model")
    with pytest.raises(InputError, match="does not match its recorded digest"):
        reg.local_files(record, tmp_path / "fetched")
    report = reg.fsck()
    assert not report.ok
    assert [(f.kind, f.where) for f in report.result.findings] == [("changed", "m:1 model.onnx")]


def test_orphans_on_s3_are_swept(bucket: str, tmp_path: Path) -> None:
    model = save(mlp(0), tmp_path / "model.onnx")
    reg = Registry.open(tmp_path / "registry", store=f"s3://{bucket}/p", create=True)
    first = reg.add(model, "m")
    fs = s3()
    orphan = f"{bucket}/p/m/0123456789abcdef"  # published by an add killed before its row
    fs.pipe_file(f"{orphan}/model.onnx", b"half a model")
    partial = f"{bucket}/p/m/.partial-1-feedfacefeedface"  # another machine's add, under way
    fs.pipe_file(f"{partial}/model.onnx", b"being written")
    fs.pipe_file(f"{bucket}/p/gone/0123/model.onnx", b"first add of a model, never recorded")

    result = reg.fsck().result
    assert {(f.kind, f.where) for f in result.findings} == {
        ("orphan", "m/0123456789abcdef"),
        ("orphan", "gone/0123"),
    }
    assert result.in_progress == 1  # a fresh staging folder on S3 is left alone
    second = reg.add(model, "m")  # sweeps the orphan of its model
    assert keys(f"{bucket}/p/m") == {
        f"{first.location.removeprefix('m/')}/model.onnx",
        f"{second.location.removeprefix('m/')}/model.onnx",
        ".partial-1-feedfacefeedface/model.onnx",
    }
    assert sorted(reg.fsck(repair=True).result.removed) == ["gone/0123"]
    assert not s3().exists(f"{bucket}/p/gone/0123/model.onnx")
    assert reg.fsck().ok and reg.fsck().result.leftovers == []


def test_cli_with_an_s3_store(bucket: str, endpoint: str, tmp_path: Path) -> None:
    """A new process finds the endpoint in FSSPEC_S3_ENDPOINT_URL, as a user would set it."""
    model = save(mlp(0), tmp_path / "model.onnx")
    registry = tmp_path / "registry"
    env = {**os.environ, **CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": endpoint}
    store = f"s3://{bucket}/cli"

    def ferry(*args: object) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "onnxferry", "registry", *map(str, args)]
        return subprocess.run(
            [*argv, "--registry", str(registry)], capture_output=True, text=True, env=env,
            timeout=120,
        )  # fmt: skip

    added = ferry("add", model, "--name", "m", "--store", store, "--json")
    assert added.returncode == 0, added.stderr
    location = json.loads(added.stdout)["result"]["location"]
    assert keys(f"{bucket}/cli") == {f"{location}/model.onnx"}
    checked = ferry("fsck", "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["result"]["files"] == 1


def test_an_abandoned_staging_folder_on_s3_is_swept_when_stale(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an object store a staging folder's process cannot be asked: it is abandoned once
    its newest file is older than STALE_PARTIAL_S (a day; here, at once)."""
    from onnxferry.registry import store

    model = save(mlp(0), tmp_path / "model.onnx")
    reg = Registry.open(tmp_path / "registry", store=f"s3://{bucket}/p", create=True)
    partial = f"{bucket}/p/m/.partial-1-feedfacefeedface"
    s3().pipe_file(f"{partial}/model.onnx", b"written by a machine that died")
    monkeypatch.setattr(store, "STALE_PARTIAL_S", -1.0)
    assert [(f.kind, f.where) for f in reg.fsck().result.findings] == [
        ("partial", "m/.partial-1-feedfacefeedface")
    ]
    record = reg.add(model, "m")
    assert keys(f"{bucket}/p") == {f"{record.location}/model.onnx"}


def test_a_missing_bucket_is_one_clear_error(endpoint: str, bucket: str, tmp_path: Path) -> None:
    model = save(mlp(0), tmp_path / "model.onnx")
    reg = Registry.open(tmp_path / "registry", store="s3://no-such-bucket/p", create=True)
    with pytest.raises(InputError, match=r"cannot store m: .*bucket") as raised:
        reg.add(model, "m")
    assert "\n" not in str(raised.value)
    assert reg.versions() == []


def test_an_unreachable_store_is_one_clear_error(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fsspec.config

    monkeypatch.setitem(
        fsspec.config.conf, "s3", {"endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no retries with backoff: fail at once
    model = save(mlp(0), tmp_path / "model.onnx")
    reg = Registry.open(tmp_path / "registry", store=f"s3://{bucket}/p", create=True)
    with pytest.raises(InputError, match="cannot store m: Could not connect") as raised:
        reg.add(model, "m")
    assert "\n" not in str(raised.value)
    assert reg.versions() == []
