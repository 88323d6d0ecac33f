"""Encryption at rest in the registry (onnxferry.registry.crypto, access.opened): a model with
external data stored AES-GCM encrypted, never in clear, run from memory; wrong, missing and
tampered keys and files refused in one line; `ferry registry new-key` and `add --encrypt*`."""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from onnxferry.errors import InputError
from onnxferry.model import Model
from onnxferry.registry import Registry, VersionRecord
from onnxferry.registry.access import opened, verify_version
from onnxferry.registry.crypto import KEY_ENV, MAGIC, generate_key, load_key
from onnxferry.runtime import OrtRunner
from onnxferry.signing import generate_keys
from tests.helpers import Run, mlp, mlp_feeds, save_external

WINDOW = 16


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture(scope="module")
def clear_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx with every tensor in weights.bin beside it."""
    return save_external(mlp(seed=3, hidden=32), tmp_path_factory.mktemp("clear") / "model.onnx")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return load_key(generate_key(tmp_path / "secret.key"))


def _add(tmp_path: Path, model: Path, key: bytes, sign_key: Path | None = None) -> Registry:
    reg = Registry.open(tmp_path / "reg", create=True)
    reg.add(model, "mlp", encrypt_key=key, sign_key=sign_key)
    return reg


def _stored(reg: Registry, record: VersionRecord, rel: str) -> Path:
    path = reg.store.local_path(record.location, rel)
    assert path is not None
    return path


def _windows(data: bytes) -> set[bytes]:
    found = {data[i : i + WINDOW] for i in range(len(data) - WINDOW + 1)}
    return {w for w in found if w.strip(b"\0")}  # zero padding is in anything


def test_stored_encrypted_never_in_clear_and_runs_from_memory(
    tmp_path: Path, clear_model: Path, key: bytes, keys: tuple[Path, Path]
) -> None:
    reg = _add(tmp_path, clear_model, key, sign_key=keys[0])
    record = reg.get("mlp:1")
    assert record.encrypted
    assert set(record.files) == {"model.onnx", "weights.bin", "model.onnx.sig"}
    clear = _windows(clear_model.read_bytes()) | _windows(
        (clear_model.parent / "weights.bin").read_bytes()
    )
    store_root = Path(reg.store.root)
    stored_files = [p for p in store_root.rglob("*") if p.is_file()]
    assert len(stored_files) == 3
    for path in stored_files:
        data = path.read_bytes()
        assert not (_windows(data) & clear), f"{path.name} holds clear model bytes"
        if path.name != "model.onnx.sig":
            assert data.startswith(MAGIC)
    # No clear copy next to the catalog either.
    for path in reg.path.rglob("*"):
        if path.is_file() and path.parent == reg.path:
            assert not (_windows(path.read_bytes()) & clear), path

    feeds = mlp_feeds(2, seed=5)
    expected = [OrtRunner(Model.load(clear_model)).run(f)["probs"] for f in feeds]
    with opened(reg, record, key=key) as version:
        assert version.model.path is None  # in memory
        assert version.golden is None
        runner = OrtRunner(version.model)
        for f, want in zip(feeds, expected, strict=True):
            np.testing.assert_array_equal(runner.run(f)["probs"], want)
    assert verify_version(reg, record, keys[1], key=key).ok
    with pytest.raises(InputError, match="decrypted in memory only"):
        reg.local_files(record, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wrong_or_missing_key_is_one_line(
    tmp_path: Path, clear_model: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = _add(tmp_path, clear_model, key)
    record = reg.get("mlp:1")
    wrong = load_key(generate_key(tmp_path / "wrong.key"))
    with pytest.raises(InputError) as caught, opened(reg, record, key=wrong):
        pass
    assert "cannot decrypt" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(InputError) as caught, opened(reg, record):
        pass
    assert "no encryption key" in str(caught.value) and "\n" not in str(caught.value)
    monkeypatch.setenv(KEY_ENV, key.hex())  # the environment's key is taken when none is given
    with opened(reg, record) as version:
        assert OrtRunner(version.model).run(mlp_feeds(1)[0])["probs"].shape == (4, 3)


@pytest.mark.parametrize("rel", ["model.onnx", "weights.bin"])
def test_tampered_ciphertext_is_refused(
    tmp_path: Path, clear_model: Path, key: bytes, rel: str
) -> None:
    reg = _add(tmp_path, clear_model, key)
    record = reg.get("mlp:1")
    path = _stored(reg, record, rel)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(blob))
    with (
        pytest.raises(InputError, match=f"cannot decrypt {re.escape(rel)}") as caught,
        opened(reg, record, key=key),
    ):
        pass
    assert "\n" not in str(caught.value)
    path.write_bytes(bytes(blob[:20]))  # truncated past the header
    with (
        pytest.raises(InputError, match="not an encrypted registry file"),
        opened(reg, record, key=key),
    ):
        pass


def test_ciphertext_moved_to_another_name_is_refused(
    tmp_path: Path, clear_model: Path, key: bytes
) -> None:
    reg = _add(tmp_path, clear_model, key)
    record = reg.get("mlp:1")
    weights, model = _stored(reg, record, "weights.bin"), _stored(reg, record, "model.onnx")
    model.chmod(0o644)
    model.write_bytes(weights.read_bytes())  # sealed under "weights.bin": not the model
    with (
        pytest.raises(InputError, match=r"cannot decrypt model\.onnx"),
        opened(reg, record, key=key),
    ):
        pass


def test_key_formats(tmp_path: Path) -> None:
    raw = bytes(range(32))
    for name, content in (
        ("raw.key", raw),
        ("hex.key", raw.hex().encode() + b"\n"),
        ("b64.key", base64.b64encode(raw) + b"\n"),
    ):
        (tmp_path / name).write_bytes(content)
        assert load_key(tmp_path / name) == raw, name
    for name, content in (
        ("short.key", b"abcd"),
        ("junk.key", b"not*a*key*" * 5),
        ("b64-16.key", base64.b64encode(raw[:16])),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match="does not hold a 32-byte AES-256 key"):
            load_key(tmp_path / name)
    with pytest.raises(InputError, match="cannot read key file"):
        load_key(tmp_path / "missing.key")


def test_new_key_cli(ferry: Run, tmp_path: Path) -> None:
    out = tmp_path / "keys" / "registry.key"
    code, stdout, err = ferry("registry", "new-key", "-o", out, "--json")
    assert code == 0, err
    assert json.loads(stdout) == {"key": str(out)}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert len(load_key(out)) == 32
    assert [p.name for p in out.parent.iterdir()] == ["registry.key"]  # no temporary left
    first = out.read_bytes()
    code, _, err = ferry("registry", "new-key", "-o", out)
    assert code == 2 and err.count("\n") == 1 and "already exists" in err
    assert out.read_bytes() == first
    other = tmp_path / "other.key"
    assert ferry("registry", "new-key", "-o", other)[0] == 0
    assert other.read_bytes() != first


def test_cli_add_encrypted_end_to_end(
    ferry: Run, tmp_path: Path, clear_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "secret.key"
    assert ferry("registry", "new-key", "-o", key_file)[0] == 0
    reg_path = tmp_path / "reg"
    add = ("registry", "add", clear_model, "--name", "mlp", "--registry", reg_path)

    code, out, err = ferry(*add, "--encrypt-key-file", key_file, "--json")
    assert code == 0, err
    shown = json.loads(out)["result"]
    assert shown["encrypted"] is True and shown["version"] == 1
    code, out, err = ferry("registry", "show", "mlp:1", "--registry", reg_path, "--json")
    assert code == 0 and json.loads(out)["result"]["encrypted"] is True

    # --encrypt takes the key from the environment; one line when it is unset.
    code, _, err = ferry(*add, "--encrypt")
    assert code == 2 and err.count("\n") == 1 and "no encryption key" in err, err
    monkeypatch.setenv(KEY_ENV, key_file.read_text().strip())
    code, out, err = ferry(*add, "--encrypt", "--json")
    assert code == 0, err
    bad = tmp_path / "bad.key"
    bad.write_text("0123")
    code, _, err = ferry(*add, "--encrypt-key-file", bad)
    assert code == 2 and err.count("\n") == 1 and "32-byte" in err, err

    reg = Registry.open(reg_path)
    assert [v.ref for v in reg.versions()] == ["mlp:1", "mlp:2"]
    clear = _windows((clear_model.parent / "weights.bin").read_bytes())
    for path in Path(reg.store.root).rglob("*"):
        if path.is_file():
            assert not (_windows(path.read_bytes()) & clear), path
    key = load_key(key_file)
    want = OrtRunner(Model.load(clear_model)).run(mlp_feeds(1)[0])["probs"]
    for record in reg.versions():
        with opened(reg, record, key=key) as version:
            got = OrtRunner(version.model).run(mlp_feeds(1)[0])["probs"]
            np.testing.assert_array_equal(got, want)
