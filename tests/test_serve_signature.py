"""`ferry serve --require-signature --public-key PUB`: only versions whose model verifies
against its ``model.onnx.sig`` serve, at load and at every reload; the others are refused with
"signature: <reason>" in the index while the version serving keeps serving.

Real keys and signatures (onnxferry.signing), real onnxruntime; the repository driven directly
for hot reload, the app in process (tests/serve_asgi.py) for the client view.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxferry.cli import main
from onnxferry.errors import InputError
from onnxferry.serve.app import ServeSettings
from onnxferry.serve.repository import Repository
from onnxferry.signing import generate_keys, sign
from tests.serve_asgi import InProcess, in_process
from tests.test_serve_repository import SMALL, add_model, answer, row, serving, settle, version

Keys = tuple[Path, Path]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return generate_keys(tmp_path_factory.mktemp("other-keys"))


def infer(app: InProcess, name: str) -> tuple[int, float | None]:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]}
    ).encode()
    status, data = app.request("POST", f"/v2/models/{name}/infer", body)
    if status != 200:
        return status, None
    return status, float(json.loads(data)["outputs"][0]["data"][0])


def test_signed_models_serve_and_unsigned_or_foreign_ones_are_refused_with_the_reason(
    tmp_path: Path, keys: Keys, other_keys: Keys
) -> None:
    private, public = keys
    repo = tmp_path / "models"
    sign(version(repo, "good", 1, add_model(1)), private)
    version(repo, "bare", 1, add_model(2))  # no signature
    sign(version(repo, "foreign", 1, add_model(3)), other_keys[0])  # another key
    sign(version(repo, "tampered", 1, add_model(4)), private)
    version(repo, "tampered", 1, add_model(5))  # the same size, other bytes, after signing
    settings = ServeSettings(repository_api=True, require_signature=public)
    with in_process(repo, settings, SMALL) as app:
        assert infer(app, "good") == (200, 1.0)
        assert infer(app, "bare")[0] == 503
        status, body = app.request("POST", "/v2/repository/index")
    assert status == 200
    index = {r["name"]: r for r in json.loads(body)}
    assert index["good"]["state"] == "READY"
    reasons = {name: index[name]["reason"] for name in ("bare", "foreign", "tampered")}
    assert all(index[name]["state"] == "UNAVAILABLE" for name in reasons)
    assert reasons["bare"] == "signature: bare/1/model.onnx.sig: no such signature"
    assert reasons["foreign"].startswith("signature: foreign/1/model.onnx.sig: the signature")
    assert "does not verify with public_key.pem" in reasons["foreign"]
    assert reasons["tampered"] == "signature: model.onnx: changed since it was signed"
    assert str(tmp_path) not in body.decode()  # neither the repository's nor the key's path


def test_a_single_model_file_must_be_signed_too(tmp_path: Path, keys: Keys) -> None:
    model = version(tmp_path, "m", 1, add_model(1))
    repo = Repository.open(model, config=SMALL, public_key=keys[1])

    async def main_() -> None:
        assert row(repo, "model", "1")["reason"].startswith("signature: ")
        sign(model, keys[0])
        assert await settle(repo) == ["model/1 loaded"]  # the new signature is watched
        assert await answer(repo, "model") == 1

    serving(repo, main_)


def test_an_unsigned_or_tampered_new_version_leaves_the_old_one_serving_until_signed(
    tmp_path: Path, keys: Keys
) -> None:
    private, public = keys
    sign(version(tmp_path, "a", 1, add_model(1)), private)
    repo = Repository.open(tmp_path, config=SMALL, public_key=public)

    async def main_() -> None:
        assert await answer(repo, "a") == 1
        two = version(tmp_path, "a", 2, add_model(2))  # unsigned
        assert await settle(repo) == ["a/2 failed"]
        assert await answer(repo, "a") == 1
        assert row(repo, "a", "1")["state"] == "READY"
        failed = row(repo, "a", "2")
        assert failed["state"] == "UNAVAILABLE"
        assert failed["reason"] == "signature: a/2/model.onnx.sig: no such signature"
        assert await settle(repo) == []  # not retried until the files change

        sign(two, private)  # signing it is a change: it takes over on the next polls
        assert await settle(repo) == ["a/2 loaded", "a/1 unloaded"]
        assert await answer(repo, "a") == 2

        sign(version(tmp_path, "a", 3, add_model(3)), private)
        version(tmp_path, "a", 3, add_model(4))  # tampered after signing
        assert await settle(repo) == ["a/3 failed"]
        assert await answer(repo, "a") == 2
        assert row(repo, "a", "3")["reason"] == (
            "signature: model.onnx: changed since it was signed"
        )

        version(tmp_path, "a", 2, add_model(5))  # the served version's file is tampered with
        assert await settle(repo) == ["a/2 failed"]
        assert await answer(repo, "a") == 2  # the verified files keep serving
        kept = row(repo, "a", "2")
        assert kept["state"] == "READY"
        assert kept["reason"] == (
            "serving the previous files; reload failed: signature: model.onnx: changed since "
            "it was signed"
        )

    serving(repo, main_)


def test_an_unusable_public_key_is_refused_at_start_up(tmp_path: Path) -> None:
    version(tmp_path, "a", 1, add_model(1))
    with pytest.raises(InputError, match="no such public key file"):
        Repository.open(tmp_path, public_key=tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    with pytest.raises(InputError, match="not a PEM public key"):
        Repository.open(tmp_path, public_key=bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--require-signature"], "--require-signature needs --public-key PUB"),
        (["--public-key", "{key}"], "--public-key is only used with --require-signature"),
        (["--require-signature", "--public-key", "{missing}"], "no such public key file"),
    ],
)
def test_serve_signature_options_are_one_line_exit_2(
    tmp_path: Path,
    keys: Keys,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    model = version(tmp_path, "m", 1, add_model(1))
    sign(model, keys[0])
    filled = [a.format(key=keys[1], missing=tmp_path / "missing.pem") for a in args]
    assert main(["serve", str(model), "--port", "0", *filled]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_bytes_that_verify_are_the_bytes_that_load(tmp_path: Path, keys: Keys) -> None:
    import numpy as np

    from onnxferry.model import Model
    from onnxferry.runtime import OrtRunner
    from onnxferry.signing import load_verified
    from tests.helpers import mlp, mlp_feeds, save_external

    file = save_external(mlp(), tmp_path / "m" / "model.onnx")
    sign(file, keys[0])
    result, model = load_verified(file, keys[1])
    assert result.ok and result.files == ("model.onnx", "weights.bin")
    assert model is not None and model.path is None  # built in memory from the verified bytes
    feeds = mlp_feeds(1)[0]
    expected = OrtRunner(Model.load(file)).run(feeds)
    for name, value in OrtRunner(model).run(feeds).items():
        np.testing.assert_array_equal(value, expected[name])

    weights = tmp_path / "m" / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\1\2\3\4")
    result, model = load_verified(file, keys[1])
    assert not result.ok and model is None and result.file == "weights.bin"


def test_a_served_signed_version_is_built_from_its_verified_bytes(
    tmp_path: Path, keys: Keys
) -> None:
    model = version(tmp_path, "m", 1, add_model(1))
    sign(model, keys[0])
    repo = Repository.open(model, config=SMALL, public_key=keys[1])

    async def main_() -> None:
        assert await answer(repo, "model") == 1
        assert repo.get("model").model.path is None  # not read again from disk after verifying

    serving(repo, main_)
