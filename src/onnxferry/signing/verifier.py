"""Verify a model (or files held in memory) against its signature, never raising for a failure.

    result = verify("model.onnx", "keys/public_key.pem")   # model.onnx.sig by default
    assert result.ok and result.files == ("model.onnx",), result.reason
    contents = {"model.onnx": Path("model.onnx").read_bytes()}
    signature = default_signature("model.onnx")
    assert verify_contents("model.onnx", contents, "keys/public_key.pem", signature).ok

A key signature is verified with a public key and a certificate signature with a chain, never
across (a failure saying which to use). Every exception inside verification (a corrupt
signature, a wrong key, a certificate from another CA, an unreadable file) is a failed
``VerifyResult`` with a one-line reason; missing paths, and keys or certificates it cannot
use, are InputError before any verification starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, one_line
from ..report import Table
from .certificates import _paths, _verified_with_chain, load_certificates
from .files import (
    PathLike,
    _digests,
    _existing,
    _hashing_config,
    _ignored,
    _relative,
    default_signature,
)
from .keys import check_key

if TYPE_CHECKING:
    from model_signing import manifest as ms_manifest
    from model_signing._signing import sign_sigstore_pb

    from ..model import Model

_TRUST_HINT = (
    "verify with the public key (--public-key) for a key signature, or with the certificate "
    "chain up to its self-signed root (--certificate-chain) for a certificate signature"
)

Trust = Path | tuple[Path, ...]
"""What a signature is verified with: a public key, or the trusted certificates of a chain."""


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify`` found: ``ok``, the files the signature covers (relative to ``root``)
    and, on failure, the one-line ``reason`` and the ``file`` at fault (when one is)."""

    ok: bool
    path: Path
    signature: Path
    files: tuple[str, ...] = ()
    reason: str | None = None
    file: str | None = None
    signer: str | None = None
    """The subject of the signing certificate (certificate mode, once its chain verified)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": str(self.path),
            "signature": str(self.signature),
            "files": list(self.files),
            "reason": self.reason,
            "file": self.file,
            "signer": self.signer,
        }

    def tables(self) -> list[Table]:
        rows: list[tuple[str, str]] = [("path", str(self.path)), ("signature", str(self.signature))]
        if self.signer:
            rows.append(("signer", self.signer))
        rows += [("covers", name) for name in self.files]
        if self.reason:
            rows.append(("reason", self.reason))
        return [Table("signature", ("what", "value"), rows)]


def _trust(public_key: PathLike | None, certificate_chain: PathLike | Sequence[PathLike]) -> Trust:
    """The public key or the certificate chain given: exactly one (UsageError otherwise)."""
    chain = _paths(certificate_chain)
    if (public_key is None) == (not chain):
        given = "both a public key and" if chain else "neither a public key nor"
        raise UsageError(f"{given} a certificate chain to verify with", hint=_TRUST_HINT)
    return Path(public_key) if public_key is not None else chain


def verify(
    path: PathLike,
    public_key: PathLike | None = None,
    signature: PathLike | None = None,
    *,
    certificate_chain: PathLike | Sequence[PathLike] = (),
) -> VerifyResult:
    """Check ``path`` (a model file with its external data, or a directory) against its
    signature (default ``<path>.sig``) and either an ECDSA public key or, for a signature made
    with a certificate, the trusted certificates of its chain (PEM files; they must include
    the self-signed root).

    The result is ok only when the signature verifies (with the key, or with the certificate
    it carries once that chains to a trusted root) and every file it covers is present and
    unchanged (for a directory: and no file was added). Any exception inside verification is
    a failed result with a one-line reason, never a pass. UsageError unless exactly one of
    ``public_key`` and ``certificate_chain`` is given; InputError for a missing path,
    signature, key or certificate file, or a key model-signing cannot use.
    """
    trust = _trust(public_key, certificate_chain)
    path = _existing(path, "model file or directory")
    sig = _existing(signature if signature is not None else default_signature(path), "signature")
    expected = _signed_manifest(path, sig, trust)
    if isinstance(expected, VerifyResult):
        return expected
    manifest, signer = expected
    try:
        result = _compare(path, sig, manifest)
    except Exception as e:
        return VerifyResult(
            False,
            path,
            sig,
            reason=f"{path}: verification failed ({one_line(e, 200, named=True)})",
            signer=signer,
        )
    return replace(result, signer=signer)


def verify_contents(
    path: PathLike,
    contents: Mapping[str, bytes],
    public_key: PathLike | None,
    signature: Path,
    *,
    certificate_chain: PathLike | Sequence[PathLike] = (),
) -> VerifyResult:
    """``verify`` for files held in memory (``{name relative to the model's directory:
    bytes}``, e.g. decrypted ones): the signature must verify with the key (or the
    certificate chain) and cover exactly these files with these contents. ``path`` names
    the model in the result."""
    trust = _trust(public_key, certificate_chain)
    path = Path(path)
    sig = _existing(signature, "signature")
    signed_manifest = _signed_manifest(path, sig, trust)
    if isinstance(signed_manifest, VerifyResult):
        return signed_manifest
    expected, signer = signed_manifest
    result = _contents_result(path, sig, expected, contents)
    return replace(result, signer=signer)


def _contents_result(
    path: Path, sig: Path, expected: ms_manifest.Manifest, contents: Mapping[str, bytes]
) -> VerifyResult:
    import hashlib

    params = expected.serialization_type
    signed = _digests(expected)
    covered = tuple(sorted(signed))
    if params.get("method") != "files" or params.get("hash_type") != "sha256":
        why = "the signature was not made file by file with sha256"
        return VerifyResult(False, path, sig, covered, why)
    for name in sorted(set(signed) | set(contents)):
        if name not in contents:
            return VerifyResult(False, path, sig, covered, f"{name}: missing", name)
        if name not in signed:
            why = f"{name}: not covered by the signature"
            return VerifyResult(False, path, sig, covered, why, name)
        if hashlib.sha256(contents[name]).hexdigest() != signed[name]:
            why = f"{name}: changed since it was signed"
            return VerifyResult(False, path, sig, covered, why, name)
    return VerifyResult(True, path, sig, covered)


Signed = tuple["ms_manifest.Manifest", str | None]
"""The manifest a signature signs and, in certificate mode, the signing certificate's subject."""


def _signed_manifest(path: Path, sig: Path, trust: Trust) -> Signed | VerifyResult:
    """The manifest ``sig`` signs, verified with the key or the certificate chain in
    ``trust``; a failed VerifyResult otherwise."""
    if isinstance(trust, Path):
        check_key(trust, private=False)
    else:
        for file in trust:
            load_certificates(file)
    from model_signing._signing import sign_sigstore_pb

    def failed(why: str) -> VerifyResult:
        return VerifyResult(False, path, sig, reason=f"{sig}: {why}", file=str(sig))

    try:
        bundle = sign_sigstore_pb.Signature.read(sig)
        material = bundle.bundle.verification_material
        chain = material.x509_certificate_chain
        certificates = chain.certificates if chain is not None else []
        keyless = material.certificate is not None
    except Exception as e:
        why = one_line(e, 200, line="first", period=False, named=True)
        return failed(f"not a model-signing signature bundle ({why})")
    if keyless and not certificates:
        return failed(
            "a Sigstore (keyless) signature; onnxferry verifies signatures made with a key or "
            "with a certificate and its chain"
        )
    if isinstance(trust, Path):
        if certificates:
            return failed(
                "made with a certificate, not a bare key: verify it with its certificate "
                "chain, not a public key"
            )
        return _verified_with_key(bundle, trust, failed)
    if not certificates:
        return failed(
            "made with a bare key, not a certificate: verify it with its public key, not a "
            "certificate chain"
        )
    return _verified_with_chain(bundle, certificates[0].raw_bytes, trust, failed)


def _verified_with_key(
    bundle: sign_sigstore_pb.Signature, key: Path, failed: Callable[[str], VerifyResult]
) -> Signed | VerifyResult:
    from model_signing._signing import sign_ec_key

    try:
        manifest: ms_manifest.Manifest = sign_ec_key.Verifier(key).verify(bundle)
    except Exception as e:
        why = one_line(e, 200, line="first", period=False, named=True)
        return failed(f"the signature does not verify with {key} ({why})")
    return manifest, None


def _compare(path: Path, sig: Path, expected: ms_manifest.Manifest) -> VerifyResult:

    params = expected.serialization_type
    if params.get("method") != "files":
        raise ValueError(
            f"the signature hashes the model by {params.get('method')!r}; onnxferry verifies "
            "signatures made file by file"
        )
    config = _hashing_config().use_file_serialization(
        hashing_algorithm=params["hash_type"], allow_symlinks=params["allow_symlinks"]
    )
    signed = _digests(expected)
    root = path if path.is_dir() else path.parent
    covered = tuple(sorted(signed))

    def failed(file: str, why: str) -> VerifyResult:
        return VerifyResult(False, path, sig, covered, f"{file}: {why}", file)

    if path.is_dir():
        ignored = [*_ignored(root, sig), *(Path(p) for p in params.get("ignore_paths", ()))]
        actual = _digests(config.set_ignored_paths(paths=ignored).hash(root))
        for name in sorted(set(actual) - set(signed)):
            return failed(name, f"added to {path} after it was signed (not in the signature)")
    else:
        if path.name not in signed:
            return failed(
                path.name, f"not covered by {sig} (it covers {', '.join(covered) or 'nothing'})"
            )
        for name in covered:
            if not (root / name).is_file():
                return failed(name, "missing (the signature covers it with the model)")
        files = _relative([root / name for name in covered], root)
        actual = _digests(config.hash(root.resolve(), files_to_hash=files))
    for name in covered:
        if name not in actual:
            return failed(name, "missing (the signature covers it)")
        if actual[name] != signed[name]:
            return failed(name, "changed since it was signed")
    return VerifyResult(True, path, sig, covered)


def load_verified(
    path: PathLike,
    public_key: PathLike | None = None,
    signature: PathLike | None = None,
    *,
    certificate_chain: PathLike | Sequence[PathLike] = (),
) -> tuple[VerifyResult, Model | None]:
    """Read a model file and its external data once, verify those bytes against the signature
    (default ``<path>.sig``), and build the Model from the same bytes: a file changed after
    it was verified can never be what loads. The Model is None when verification fails.
    Past the 2 GiB a model can hold in memory (``graphs.PROTO_LIMIT``) the verified files are
    loaded again from disk (``Model.load``), which a swap between the two reads would defeat.

        result, model = load_verified("model.onnx", "keys/public_key.pem")
    """
    import onnx

    from ..errors import ModelLoadError
    from ..graphs import PROTO_LIMIT, model_from_contents
    from ..model import Model, resolve_model_path
    from ..safety import check_external_data, external_files

    file = resolve_model_path(Path(path))
    sig = Path(signature) if signature is not None else default_signature(file)
    try:
        contents = {file.name: file.read_bytes()}
    except OSError as e:
        raise ModelLoadError(
            f"{file}: cannot read ({e.strerror or e})", hint="check the path"
        ) from None
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(contents[file.name])
    except Exception:  # google.protobuf's DecodeError (untyped)
        raise ModelLoadError(
            f"{file}: not an ONNX model (the protobuf data is malformed or truncated)",
            hint="re-export or re-copy the model",
        ) from None
    root = file.parent.resolve()
    for data_file in external_files(check_external_data(proto, file.parent)):
        contents[data_file.relative_to(root).as_posix()] = data_file.read_bytes()
    result = verify_contents(file, contents, public_key, sig, certificate_chain=certificate_chain)
    if not result.ok:
        return result, None
    if sum(len(b) for b in contents.values()) >= PROTO_LIMIT:
        return result, Model.load(file, max_size=1 << 62)
    return result, model_from_contents(contents, file.name, where=str(file))
