"""Signing in model-signing's certificate mode: a real CA (root, intermediate, leaves) made with
cryptography, real bundles, a model with external data."""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from onnxferry.errors import InputError, UsageError
from onnxferry.signing import (
    default_signature,
    generate_keys,
    sign,
    verify,
    verify_contents,
)
from tests.helpers import Run
from tests.test_signing import _external_model, _failed, _flip

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
Key = ec.EllipticCurvePrivateKey


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(
    name: str,
    key: Key,
    issuer: tuple[x509.Certificate, Key] | None = None,
    *,
    ca: bool = False,
    extensions: tuple[x509.ExtensionType, ...] | None = None,
    not_after: datetime.datetime = NOW + 30 * DAY,
) -> x509.Certificate:
    """A certificate for ``key``, self-signed without ``issuer``. A CA holds keyCertSign; a
    leaf holds KeyUsage digitalSignature and ExtendedKeyUsage codeSigning unless
    ``extensions`` says otherwise. CAs start before leaves: model-signing checks the chain
    at the leaf's notBefore."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    if extensions is None:
        extensions = (
            (_key_usage(cert_sign=True),)
            if ca
            else (
                _key_usage(digital_signature=True),
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
            )
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - (3 if ca else 2) * DAY)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=isinstance(extension, x509.KeyUsage))
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificates: list[x509.Certificate], path: Path) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


@dataclass(frozen=True)
class Pki:
    """root -> intermediate -> leaf (for ``key``), as PEM files, and the leaf's CA pair."""

    key: Path
    leaf: Path
    intermediate: Path
    root: Path
    ca: tuple[x509.Certificate, Key]
    leaf_key: Key
    directory: Path

    def leaf_with(
        self,
        name: str,
        *,
        extensions: tuple[x509.ExtensionType, ...] | None = None,
        not_after: datetime.datetime = NOW + 30 * DAY,
        key: Key | None = None,
    ) -> Path:
        """Another leaf from the same intermediate (for the same key unless ``key``)."""
        cert = _certificate(
            name,
            key or self.leaf_key,
            self.ca,
            extensions=extensions,
            not_after=not_after,
        )
        return _pem([cert], self.directory / f"{name}.pem")


def _pki(directory: Path, name: str = "onnxferry test") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    root_key, intermediate_key = ec.generate_private_key(ec.SECP384R1()), _new_key()
    root = _certificate(f"{name} root", root_key, ca=True)
    intermediate = _certificate(f"{name} intermediate", intermediate_key, (root, root_key), ca=True)
    private, _ = generate_keys(directory / "keys")
    leaf_key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(leaf_key, ec.EllipticCurvePrivateKey)
    leaf = _certificate("model signer", leaf_key, (intermediate, intermediate_key))
    return Pki(
        key=private,
        leaf=_pem([leaf], directory / "leaf.pem"),
        intermediate=_pem([intermediate], directory / "intermediate.pem"),
        root=_pem([root], directory / "root.pem"),
        ca=(intermediate, intermediate_key),
        leaf_key=leaf_key,
        directory=directory,
    )


def _new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def signed(tmp_path: Path, pki: Pki) -> Path:
    model = _external_model(tmp_path / "m")
    sign(model, pki.key, certificate=pki.leaf, certificate_chain=[pki.intermediate])
    return model


def _bundle_certificates(signature: Path) -> list[str]:
    chain = json.loads(signature.read_text())["verificationMaterial"]["x509CertificateChain"]
    return [c["rawBytes"] for c in chain["certificates"]]


# --- round trip ------------------------------------------------------------------------------


def test_a_certificate_signature_verifies_against_the_root(signed: Path, pki: Pki) -> None:
    result = verify(signed, certificate_chain=[pki.root])
    assert result.ok and result.reason is None, result.reason
    assert result.files == ("model.data", "model.onnx")
    assert result.signer == "CN=model signer"
    assert result.to_dict()["signer"] == "CN=model signer"
    assert len(_bundle_certificates(default_signature(signed))) == 2  # leaf, intermediate
    assert verify(signed, certificate_chain=pki.root).ok  # one path needs no list


def test_without_a_chain_the_bundle_carries_the_certificate_once(tmp_path: Path, pki: Pki) -> None:
    model = _external_model(tmp_path / "m")
    sign(model, pki.key, certificate=pki.leaf)
    assert len(_bundle_certificates(default_signature(model))) == 1
    assert verify(model, certificate_chain=[pki.intermediate, pki.root]).ok  # given here
    reason = _failed(verify(model, certificate_chain=[pki.root]), "model.onnx.sig")
    assert "does not chain to" in reason and "CN=model signer" in reason


def test_an_intermediate_alone_is_no_trust_anchor(signed: Path, pki: Pki) -> None:
    reason = _failed(verify(signed, certificate_chain=[pki.intermediate]), "model.onnx.sig")
    assert "does not chain to" in reason


def test_a_certificate_from_another_ca_fails_with_one_line(
    signed: Path, tmp_path: Path, pki: Pki
) -> None:
    other = _pki(tmp_path / "other", "other CA")
    reason = _failed(verify(signed, certificate_chain=[other.root]), "model.onnx.sig")
    assert f"does not chain to a self-signed root in {other.root}" in reason
    model = _external_model(tmp_path / "m2")
    sign(model, other.key, certificate=other.leaf, certificate_chain=[other.intermediate])
    assert verify(model, certificate_chain=[other.root]).ok
    _failed(verify(model, certificate_chain=[pki.root]), "model.onnx.sig")


def test_a_changed_file_fails_naming_it(signed: Path, pki: Pki) -> None:
    _flip(signed.parent / "model.data")
    result = verify(signed, certificate_chain=[pki.root])
    assert "changed" in _failed(result, "model.data")
    assert result.signer == "CN=model signer"  # the certificate did verify
    _flip(signed, at=len(signed.read_bytes()) // 2)
    _flip(signed.parent / "model.data")
    assert "changed" in _failed(verify(signed, certificate_chain=[pki.root]), "model.onnx")


def test_a_swapped_certificate_does_not_carry_the_signature(signed: Path, pki: Pki) -> None:
    """Another valid leaf of the same CA, for another key, in place of the signer's."""
    sig = default_signature(signed)
    impostor = x509.load_pem_x509_certificate(
        pki.leaf_with("impostor", key=_new_key()).read_bytes()
    )
    bundle = json.loads(sig.read_text())
    certificates = bundle["verificationMaterial"]["x509CertificateChain"]["certificates"]
    der = impostor.public_bytes(serialization.Encoding.DER)
    certificates[0]["rawBytes"] = base64.b64encode(der).decode()
    sig.write_text(json.dumps(bundle))
    reason = _failed(verify(signed, certificate_chain=[pki.root]), sig.name)
    assert "does not verify with its certificate (CN=impostor)" in reason


def test_an_expired_certificate_still_verifies(tmp_path: Path, pki: Pki) -> None:
    """model-signing checks the chain at the leaf's notBefore (it keeps no timestamp)."""
    model = _external_model(tmp_path / "m")
    expired = pki.leaf_with("expired", not_after=NOW - DAY)
    sign(model, pki.key, certificate=expired, certificate_chain=[pki.intermediate])
    assert verify(model, certificate_chain=[pki.root]).ok


def test_code_signing_alone_is_enough_and_quiet(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    model = _external_model(tmp_path / "m")
    eku = pki.leaf_with(
        "eku", extensions=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),)
    )
    sign(model, pki.key, certificate=eku, certificate_chain=[pki.intermediate])
    assert verify(model, certificate_chain=[pki.root]).ok  # filterwarnings=error: no warning
    assert capsys.readouterr() == ("", "") and not caplog.records


def test_a_directory_signature_is_model_signings_own(tmp_path: Path, pki: Pki) -> None:
    from model_signing import verifying

    model = _external_model(tmp_path / "m")
    sig = sign(model.parent, pki.key, certificate=pki.leaf, certificate_chain=[pki.intermediate])
    assert verify(model.parent, certificate_chain=[pki.root]).ok
    config = verifying.Config()  # type: ignore[no-untyped-call]
    config = config.use_certificate_verifier(certificate_chain=[pki.root])
    config.verify(model.parent, sig)  # raises unless it verifies


def test_verify_contents_with_a_certificate_chain(signed: Path, pki: Pki) -> None:
    contents = {name: (signed.parent / name).read_bytes() for name in ("model.onnx", "model.data")}
    sig = default_signature(signed)
    result = verify_contents(signed, contents, None, sig, certificate_chain=[pki.root])
    assert result.ok and result.signer == "CN=model signer"
    contents["model.data"] += b"\x00"
    result = verify_contents(signed, contents, None, sig, certificate_chain=[pki.root])
    assert "changed" in _failed(result, "model.data")


# --- what model-signing needs of the certificate ---------------------------------------------

NOT_FOR_SIGNING = {
    "no-extension": (),
    "key-usage-without-digital-signature": (_key_usage(cert_sign=True),),
    "other-extended-key-usage": (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),),
}


@pytest.mark.parametrize("kind", NOT_FOR_SIGNING)
def test_a_certificate_not_for_signing_is_refused_before_signing(
    tmp_path: Path, pki: Pki, kind: str
) -> None:
    model = _external_model(tmp_path / "m")
    cert = pki.leaf_with(kind, extensions=NOT_FOR_SIGNING[kind])
    with pytest.raises(InputError, match=r"digitalSignature or ExtendedKeyUsage codeSigning") as e:
        sign(model, pki.key, certificate=cert, certificate_chain=[pki.intermediate])
    assert "\n" not in str(e.value) and f"CN={kind}" in str(e.value)
    assert not default_signature(model).exists()


def test_a_signature_made_with_a_certificate_not_for_signing_fails(
    tmp_path: Path, pki: Pki
) -> None:
    """Made with model-signing's own API, which signs with such a certificate."""
    from model_signing import signing

    model = _external_model(tmp_path / "m")
    cert = pki.leaf_with("plain", extensions=())
    sig = tmp_path / "m.sig"
    config = signing.Config()  # type: ignore[no-untyped-call]
    config.use_certificate_signer(
        private_key=pki.key, signing_certificate=cert, certificate_chain=[pki.intermediate]
    ).sign(model.parent, sig)
    reason = _failed(verify(model.parent, certificate_chain=[pki.root]), "m.sig")
    assert "CN=plain" in reason and "digitalSignature or ExtendedKeyUsage codeSigning" in reason


# --- input errors and the wrong mode ---------------------------------------------------------


def test_a_certificate_for_another_key_or_not_pem_is_an_input_error(
    tmp_path: Path, pki: Pki
) -> None:
    model = _external_model(tmp_path / "m")
    other_key, _ = generate_keys(tmp_path / "k")
    with pytest.raises(InputError, match="is not for the private key"):
        sign(model, other_key, certificate=pki.leaf)
    with pytest.raises(InputError, match="not a PEM certificate"):
        sign(model, pki.key, certificate=pki.key)
    with pytest.raises(InputError, match="holds 2 certificates"):
        sign(model, pki.key, certificate=_pem([_leaf(pki)] * 2, tmp_path / "two.pem"))
    with pytest.raises(InputError, match="no such certificate chain"):
        sign(model, pki.key, certificate=pki.leaf, certificate_chain=[tmp_path / "nope.pem"])
    with pytest.raises(UsageError, match="without a signing certificate"):
        sign(model, pki.key, certificate_chain=[pki.intermediate])
    assert not default_signature(model).exists()


def _leaf(pki: Pki) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.leaf.read_bytes())


def test_exactly_one_of_a_public_key_and_a_chain(signed: Path, pki: Pki, tmp_path: Path) -> None:
    _, public = generate_keys(tmp_path / "k")
    with pytest.raises(UsageError, match="both a public key and"):
        verify(signed, public, certificate_chain=[pki.root])
    with pytest.raises(UsageError, match="neither a public key nor"):
        verify(signed)
    with pytest.raises(UsageError, match="neither"):
        verify(signed, certificate_chain=[])
    with pytest.raises(InputError, match="not a PEM certificate chain"):
        verify(signed, certificate_chain=[public])


def test_a_signature_is_verified_in_the_mode_it_was_made(
    signed: Path, pki: Pki, tmp_path: Path
) -> None:
    private, public = generate_keys(tmp_path / "k")
    reason = _failed(verify(signed, public), "model.onnx.sig")
    assert "made with a certificate" in reason
    model = _external_model(tmp_path / "keyed")
    sign(model, private)
    reason = _failed(verify(model, certificate_chain=[pki.root]), "model.onnx.sig")
    assert "made with a bare key" in reason


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_certificate_mode(ferry: Run, tmp_path: Path, pki: Pki) -> None:
    model = _external_model(tmp_path / "m")
    code, out, err = ferry(
        "sign", model, "--key", pki.key, "--certificate", pki.leaf,
        "--certificate-chain", pki.intermediate,
    )  # fmt: skip
    assert code == 0 and "model.onnx.sig" in out, err
    code, out, err = ferry("verify", model, "--certificate-chain", pki.root)
    assert code == 0 and "signed by CN=model signer" in out, err
    code, out, _ = ferry("verify", model, "--certificate-chain", pki.root, "--json")
    assert code == 0 and json.loads(out)["result"]["signer"] == "CN=model signer"

    _flip(model.parent / "model.data")
    code, _, err = ferry("verify", model, "--certificate-chain", pki.root)
    assert code == 1 and err.strip().count("\n") == 0 and "model.data: changed" in err


def test_cli_usage_and_certificate_errors_exit_2(ferry: Run, tmp_path: Path, pki: Pki) -> None:
    model = _external_model(tmp_path / "m")
    plain = pki.leaf_with("cli-plain", extensions=())
    code, _, err = ferry("sign", model, "--key", pki.key, "--certificate", plain)
    assert code == 2 and err.strip().count("\n") == 0 and "codeSigning" in err
    sign(model, pki.key, certificate=pki.leaf, certificate_chain=[pki.intermediate])
    _, public = generate_keys(tmp_path / "k")
    for args in ((), ("--public-key", public, "--certificate-chain", pki.root)):
        code, _, err = ferry("verify", model, *args)
        assert code == 2 and err.startswith("ferry: error: ") and err.strip().count("\n") == 0
        assert "--certificate-chain" in err
    code, _, err = ferry("verify", model, "--certificate-chain", tmp_path / "nope.pem")
    assert code == 2 and "no such certificate chain file" in err
