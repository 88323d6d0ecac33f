"""Signing on OpenSSF model-signing: real keys, real bundles, a model with external data."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.errors import InputError, UsageError
from onnxferry.signing import (
    PRIVATE_KEY,
    PUBLIC_KEY,
    VerifyResult,
    default_signature,
    generate_keys,
    sign,
    verify,
)
from tests.helpers import Run, mlp, save

Keys = tuple[Path, Path]


def _external_model(directory: Path) -> Path:
    """x[1, 4] -> y = x @ w, with w in model.data beside model.onnx."""
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    onnx.save_model(
        proto, str(path), save_as_external_data=True, location="model.data", size_threshold=0
    )
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def signed(tmp_path: Path, keys: Keys) -> Path:
    model = _external_model(tmp_path / "m")
    assert sign(model, keys[0]) == default_signature(model)
    return model


def _flip(path: Path, at: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _failed(result: VerifyResult, file: str) -> str:
    assert not result.ok
    assert result.reason is not None and "\n" not in result.reason
    assert result.file is not None and result.file.endswith(file), result
    assert file in result.reason
    return result.reason


# --- keys ------------------------------------------------------------------------------------


def test_keygen_writes_pem_keys_with_a_private_key_only_the_owner_reads(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path / "k")
    assert (private.name, public.name) == (PRIVATE_KEY, PUBLIC_KEY)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert not [p for p in private.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_keygen_keeps_existing_keys_unless_forced(tmp_path: Path) -> None:
    private, _ = generate_keys(tmp_path)
    before = private.read_bytes()
    with pytest.raises(InputError, match=r"already exists.*--force"):
        generate_keys(tmp_path)
    assert private.read_bytes() == before
    generate_keys(tmp_path, force=True)
    assert private.read_bytes() != before
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_keygen_refuses_an_unknown_curve(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="P-256, P-384"):
        generate_keys(tmp_path, "Ed25519")  # type: ignore[arg-type]


def test_p384_keys_sign_and_verify(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path / "k", "P-384")
    model = _external_model(tmp_path / "m")
    sign(model, private)
    assert verify(model, public).ok


def test_an_ed25519_key_is_refused_with_one_line(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = tmp_path / "ed.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = tmp_path / "ed.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    model = _external_model(tmp_path / "m")
    with pytest.raises(InputError, match=r"Ed25519 key.*ECDSA") as raised:
        sign(model, private)
    assert "\n" not in str(raised.value)
    assert not default_signature(model).exists()
    with pytest.raises(InputError, match="Ed25519 key"):
        verify(model, public, signature=model)  # any file: the key is refused before reading


# --- round trip and tampering ----------------------------------------------------------------


def test_a_model_is_signed_with_its_external_data(signed: Path, keys: Keys) -> None:
    result = verify(signed, keys[1])
    assert result.ok and result.reason is None
    assert result.files == ("model.data", "model.onnx")
    bundle = json.loads(default_signature(signed).read_text())
    assert "dsseEnvelope" in bundle  # model-signing's Sigstore bundle


def test_a_changed_byte_in_the_model_fails_naming_it(signed: Path, keys: Keys) -> None:
    _flip(signed, at=len(signed.read_bytes()) // 2)
    assert "changed" in _failed(verify(signed, keys[1]), "model.onnx")


def test_a_changed_byte_in_the_external_data_fails_naming_it(signed: Path, keys: Keys) -> None:
    _flip(signed.parent / "model.data")
    assert "changed" in _failed(verify(signed, keys[1]), "model.data")


def test_removed_external_data_fails_naming_it(signed: Path, keys: Keys) -> None:
    (signed.parent / "model.data").unlink()
    assert "missing" in _failed(verify(signed, keys[1]), "model.data")


def test_renamed_external_data_fails_naming_it(signed: Path, keys: Keys) -> None:
    (signed.parent / "model.data").rename(signed.parent / "weights.data")
    assert "missing" in _failed(verify(signed, keys[1]), "model.data")


def test_a_wrong_public_key_fails(signed: Path, tmp_path: Path) -> None:
    _, other = generate_keys(tmp_path / "other")
    reason = _failed(verify(signed, other), "model.onnx.sig")
    assert "does not verify" in reason


def _edit_envelope(text: str, key: str, edit: Callable[[str], str]) -> str:
    bundle = json.loads(text)
    envelope = bundle["dsseEnvelope"]
    if key == "sig":
        envelope["signatures"][0]["sig"] = edit(envelope["signatures"][0]["sig"])
    else:
        envelope[key] = edit(envelope[key])
    return json.dumps(bundle)


def _other_digest(payload: str) -> str:
    """The payload with the first digest it lists changed (what a forger would write)."""
    statement = json.loads(base64.b64decode(payload))
    resource = statement["predicate"]["resources"][0]
    resource["digest"] = "0" * len(resource["digest"])
    return base64.b64encode(json.dumps(statement).encode()).decode()


DAMAGE: dict[str, Callable[[str], str]] = {
    "truncated": lambda text: text[: len(text) // 2],
    "not-json": lambda text: "not json",
    "empty": lambda text: "",
    "signature-bytes": lambda text: _edit_envelope(text, "sig", lambda s: "AAAA" + s[4:]),
    "forged-manifest": lambda text: _edit_envelope(text, "payload", _other_digest),
    "no-envelope": lambda text: json.dumps({**json.loads(text), "dsseEnvelope": {}}),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_corrupted_signature_fails_and_never_passes(
    signed: Path, keys: Keys, damage: str
) -> None:
    sig = default_signature(signed)
    text = sig.read_text()
    assert DAMAGE[damage](text) != text
    sig.write_text(DAMAGE[damage](text))
    _failed(verify(signed, keys[1]), "model.onnx.sig")


def test_a_stray_file_beside_the_model_does_not_matter(signed: Path, keys: Keys) -> None:
    (signed.parent / "notes.txt").write_text("unrelated")
    save(mlp(), signed.parent / "other.onnx")
    assert verify(signed, keys[1]).ok


def test_a_directory_is_signed_whole_and_an_added_file_fails(tmp_path: Path, keys: Keys) -> None:
    model = _external_model(tmp_path / "m")
    signature = sign(model.parent, keys[0])
    assert signature == tmp_path / "m.sig"
    result = verify(model.parent, keys[1])
    assert result.ok and result.files == ("model.data", "model.onnx")
    (model.parent / "extra.bin").write_bytes(b"x")
    assert "added" in _failed(verify(model.parent, keys[1]), "extra.bin")


def test_a_directory_holding_a_symbolic_link_is_one_line(tmp_path: Path, keys: Keys) -> None:
    """model-signing refuses links (a ValueError: an internal error before)."""
    model = _external_model(tmp_path / "m")
    (model.parent / "elsewhere").symlink_to(tmp_path)
    with pytest.raises(InputError, match=r"'.*elsewhere' is a symbolic link, which a signature"):
        sign(model.parent, keys[0])
    assert not (tmp_path / "m.sig").exists()


def test_a_signature_inside_the_signed_directory_is_not_part_of_it(
    tmp_path: Path, keys: Keys
) -> None:
    model = _external_model(tmp_path / "m")
    inside = model.parent / "dir.sig"
    sign(model.parent, keys[0], inside)
    assert verify(model.parent, keys[1], inside).ok


def test_a_model_file_signature_does_not_vouch_for_another_model(signed: Path, keys: Keys) -> None:
    other = save(mlp(), signed.parent / "other.onnx")
    reason = _failed(verify(other, keys[1], default_signature(signed)), "other.onnx")
    assert "not covered" in reason


def test_missing_paths_are_input_errors_with_a_hint(signed: Path, keys: Keys) -> None:
    with pytest.raises(InputError, match="no such model"):
        sign(signed.parent / "nope.onnx", keys[0])
    with pytest.raises(InputError, match=r"no such private key.*ferry keygen"):
        sign(signed, signed.parent / "nope.pem")
    with pytest.raises(InputError, match="no such signature"):
        verify(signed, keys[1], signed.parent / "nope.sig")
    with pytest.raises(InputError, match="not a PEM public key"):
        verify(signed, signed)


def test_signing_a_file_that_is_not_onnx_is_an_input_error(tmp_path: Path, keys: Keys) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xff" * 100)
    with pytest.raises(InputError, match="not an ONNX model"):
        sign(junk, keys[0])


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_keygen_sign_verify_exit_codes(ferry: Run, tmp_path: Path) -> None:
    model = _external_model(tmp_path / "m")
    code, out, _ = ferry("keygen", "-o", tmp_path / "k", "--curve", "P-384")
    assert code == 0 and "private key" in out
    private, public = tmp_path / "k" / PRIVATE_KEY, tmp_path / "k" / PUBLIC_KEY
    code, out, _ = ferry("sign", model, "--key", private, "-o", tmp_path / "model.sig")
    assert code == 0 and "model.sig" in out
    code, out, _ = ferry(
        "verify", model, "--public-key", public, "--signature", tmp_path / "model.sig"
    )
    assert code == 0 and "verified" in out

    _flip(model.parent / "model.data")
    code, out, err = ferry(
        "verify", model, "--public-key", public, "--signature", tmp_path / "model.sig", "--json"
    )
    assert code == 1
    assert json.loads(out)["result"]["file"] == "model.data"
    assert err.strip().count("\n") == 0 and "model.data: changed" in err

    code, _, err = ferry("verify", model, "--public-key", public)  # no model.onnx.sig
    assert code == 2 and err.startswith("ferry: error: ") and err.strip().count("\n") == 0
    code, _, err = ferry("keygen", "-o", tmp_path / "k")
    assert code == 2 and "--force" in err and err.strip().count("\n") == 0


def test_cli_json_of_keygen_and_sign(ferry: Run, tmp_path: Path) -> None:
    model = _external_model(tmp_path / "m")
    code, out, _ = ferry("keygen", "-o", tmp_path / "k", "--json")
    assert code == 0
    private = Path(json.loads(out)["private_key"])
    code, out, _ = ferry("sign", model, "--key", private, "--json")
    assert code == 0 and json.loads(out)["signature"] == str(default_signature(model))
