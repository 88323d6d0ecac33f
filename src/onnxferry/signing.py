"""Sign a model with its external data (OpenSSF model-signing), and verify it before use.

    private, public = generate_keys("keys")          # ECDSA P-256; the private key is 0600
    signature = sign("model.onnx", private)          # model.onnx.sig, beside the model
    result = verify("model.onnx", public)
    assert result.ok, result.reason                  # reason names the file at fault

A model file is signed as the set of itself and its external data files (what
``Model.load(path).external_files`` lists), hashed file by file into a model-signing manifest
whose names are relative to the model's directory; other files in that directory are not
covered, so a stray file next to the model does not break its verification. A new external
data file can only come with a changed model file, which fails. A directory is signed whole:
every file in it (git files and the signature itself aside), so there an added file fails too.

The signature is model-signing's Sigstore bundle (a DSSE envelope over an in-toto statement),
made in its elliptic-key mode: the same file `model_signing verify key --ignore_unsigned_files`
accepts for a model file's directory. model-signing's public API signs only whole directories,
so ``sign`` drives its signer with a list of files through three of its internal classes
(``Payload``, the EC-key ``Signer``/``Verifier`` and the bundle ``Signature``), pinned by the
lock and exercised by tests/test_signing.py. model-signing accepts ECDSA keys on P-256, P-384
and P-521 only (not Ed25519 or RSA).

Certificate mode (model-signing's too): ``sign(..., certificate=CERT, certificate_chain=[...])``
puts the signing certificate and the chain certificates given into the bundle, and
``verify(path, certificate_chain=[ROOT])`` checks that chain against the trusted certificates
given, which must include a self-signed root (an intermediate alone is no trust anchor), then
the signature with the certificate's key. The chain is checked at the signing certificate's
notBefore time (model-signing keeps no timestamp), so an expired certificate still verifies.
model-signing accepts only a signing certificate with KeyUsage digitalSignature or
ExtendedKeyUsage codeSigning: ``sign`` refuses another one (InputError), and a signature
made with one fails ``verify``. A key signature is verified with a public key and a
certificate signature with a chain, never across (a failure saying which to use).

``verify`` never raises for a model that fails: every exception inside verification (a
corrupt signature, a wrong key, a certificate from another CA, an unreadable file) is a
failed ``VerifyResult`` with a one-line reason. Missing paths, and keys or certificates it
cannot use, are InputError (exit 2), before any verification starts.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .atomic import AtomicFiles, write_text_atomic
from .errors import InputError, UsageError, one_line
from .report import Table

if TYPE_CHECKING:
    from cryptography import x509
    from model_signing import hashing as ms_hashing
    from model_signing import manifest as ms_manifest
    from model_signing._signing import sign_ec_key, sign_sigstore_pb

Curve = Literal["P-256", "P-384"]
CURVES: tuple[Curve, ...] = ("P-256", "P-384")
PRIVATE_KEY = "private_key.pem"
PUBLIC_KEY = "public_key.pem"
SUPPORTED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
"""The curves model-signing signs and verifies with, by their names in cryptography."""

_KEYGEN_HINT = "make a key pair with `ferry keygen -o KEYDIR`"
CERTIFICATE_USAGE = (
    "model-signing accepts only a signing certificate with KeyUsage digitalSignature or "
    "ExtendedKeyUsage codeSigning"
)
"""What model-signing requires of the signing certificate (it checks nothing else of it)."""
_CERTIFICATE_HINT = "give PEM X.509 certificates (-----BEGIN CERTIFICATE-----)"
_TRUST_HINT = (
    "verify with the public key (--public-key) for a key signature, or with the certificate "
    "chain up to its self-signed root (--certificate-chain) for a certificate signature"
)

PathLike = str | Path
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


# --- keys ------------------------------------------------------------------------------------


def generate_keys(
    keydir: str | Path, curve: Curve = "P-256", *, force: bool = False
) -> tuple[Path, Path]:
    """An ECDSA key pair as PEM files in ``keydir``: ``(private_key.pem, public_key.pem)``.

    The private key (PKCS#8, unencrypted) is mode 0600 from its first byte; both files are
    written atomically. Existing keys are kept (InputError) unless ``force``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    curves = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}
    if curve not in curves:
        raise UsageError(
            f"unknown curve {curve!r}", hint=f"choose one of {', '.join(CURVES)} (model-signing)"
        )
    keydir = Path(keydir)
    private, public = keydir / PRIVATE_KEY, keydir / PUBLIC_KEY
    existing = [p for p in (private, public) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise InputError(
            f"{existing[0]} already exists",
            hint="keep it, choose another directory, or pass --force to replace the key pair",
        )
    try:
        keydir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"cannot create {keydir}: {e.strerror or e}", hint="check that it is writable"
        ) from None
    key = ec.generate_private_key(curves[curve]())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with AtomicFiles() as files:
        with files.create(private) as f:
            os.fchmod(f.fileno(), 0o600)  # before the key is written
            f.write(private_pem)
        with files.create(public) as f:
            f.write(public_pem)
        files.commit()
    return private, public


def _key_problem(key: object, path: Path) -> InputError | None:
    """Why model-signing cannot use ``key`` (None when it can)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name in SUPPORTED_CURVES:
            return None
        kind = f"an ECDSA key on {key.curve.name}"
    else:
        kind = f"a {_key_kind(key)} key"
    return InputError(
        f"{path}: {kind}; model-signing signs only with ECDSA keys on "
        f"{', '.join(SUPPORTED_CURVES.values())}",
        hint=_KEYGEN_HINT,
    )


def _key_kind(key: object) -> str:
    name = type(key).__name__.lstrip("_")
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.removesuffix(suffix)
    return name or "unknown"


def check_key(path: Path, *, private: bool) -> None:
    """Check that ``path`` holds a PEM key model-signing can use; InputError otherwise."""
    from cryptography.hazmat.primitives import serialization

    what = "private key" if private else "public key"
    if not path.is_file():
        raise InputError(f"{path}: no such {what} file", hint=_KEYGEN_HINT)
    try:
        data = path.read_bytes()
        key: object = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except TypeError:  # a password-protected private key
        raise InputError(
            f"{path}: the private key is encrypted; onnxferry signs with unencrypted keys",
            hint=_KEYGEN_HINT,
        ) from None
    except (ValueError, OSError) as e:
        raise InputError(
            f"{path}: not a PEM {what} ({one_line(e, 120, line='first', period=False)})",
            hint=_KEYGEN_HINT,
        ) from None
    problem = _key_problem(key, path)
    if problem is not None:
        raise problem


# --- certificates ----------------------------------------------------------------------------


def _paths(paths: PathLike | Sequence[PathLike]) -> tuple[Path, ...]:
    """One path or several (a lone str is one path, not a sequence of characters)."""
    if isinstance(paths, str | Path):
        return (Path(paths),)
    return tuple(Path(p) for p in paths)


def load_certificates(path: Path, what: str = "certificate chain") -> list[x509.Certificate]:
    """The PEM certificates in ``path`` (at least one); InputError otherwise."""
    from cryptography import x509

    if not path.is_file():
        raise InputError(f"{path}: no such {what} file", hint="check the path")
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (ValueError, OSError) as e:
        why = one_line(e, 120, line="first", period=False)
        raise InputError(f"{path}: not a PEM {what} ({why})", hint=_CERTIFICATE_HINT) from None


def can_sign(certificate: x509.Certificate) -> bool:
    """Whether model-signing accepts ``certificate`` as a signing certificate: KeyUsage
    digitalSignature, or ExtendedKeyUsage codeSigning (its check, which `sign` makes first)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    extensions = certificate.extensions
    try:
        if extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CODE_SIGNING in usages


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "an empty subject"


def check_certificate(path: Path, private_key: Path) -> None:
    """Check that ``path`` holds one PEM certificate, for ``private_key`` and one model-signing
    signs with (see ``can_sign``); InputError otherwise."""
    from cryptography.hazmat.primitives import serialization

    certificates = load_certificates(path, "certificate")
    if len(certificates) > 1:
        raise InputError(
            f"{path}: holds {len(certificates)} certificates, not one signing certificate",
            hint="pass the signing certificate alone and the others with --certificate-chain",
        )
    [certificate] = certificates
    key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    if certificate.public_key() != key.public_key():
        raise InputError(
            f"{path}: the certificate ({_subject(certificate)}) is not for the private key "
            f"{private_key}",
            hint="pass the certificate issued for this key",
        )
    if not can_sign(certificate):
        raise InputError(
            f"{path}: the certificate ({_subject(certificate)}) is not for signing: "
            f"{CERTIFICATE_USAGE}",
            hint="issue the signing certificate with one of these extensions",
        )


def _trust(public_key: PathLike | None, certificate_chain: PathLike | Sequence[PathLike]) -> Trust:
    """The public key or the certificate chain given: exactly one (UsageError otherwise)."""
    chain = _paths(certificate_chain)
    if (public_key is None) == (not chain):
        given = "both a public key and" if chain else "neither a public key nor"
        raise UsageError(f"{given} a certificate chain to verify with", hint=_TRUST_HINT)
    return Path(public_key) if public_key is not None else chain


@contextmanager
def _quiet_certificate_checks() -> Iterator[None]:
    """model-signing logs (with the deprecated Logger.warn, a DeprecationWarning) when the
    signing certificate lacks KeyUsage or ExtendedKeyUsage; onnxferry gives its own reason."""
    logger = logging.getLogger("model_signing._signing.sign_certificate")
    disabled = logger.disabled
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The 'warn' method is deprecated", DeprecationWarning)
        logger.disabled = True
        try:
            yield
        finally:
            logger.disabled = disabled


# --- what a path covers ----------------------------------------------------------------------


def default_signature(path: str | Path) -> Path:
    """Where the signature of ``path`` goes by default: ``<name>.sig`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sig")


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such {what}", hint="check the path")
    return path


def _model_files(model: Path) -> list[Path]:
    """The model file and its external data files (checked by the safe loader)."""
    from .model import Model

    return [model, *Model.load(model).external_files]


def _hashing_config() -> ms_hashing.Config:
    """model-signing's default hashing: sha256, file by file, no symbolic links."""
    from model_signing import hashing

    return hashing.Config()  # type: ignore[no-untyped-call]  # an unannotated __init__


def _relative(files: Sequence[Path], root: Path) -> list[Path]:
    root = root.resolve()
    return [root / Path(f).resolve().relative_to(root) for f in files]


def _ignored(root: Path, signature: Path) -> list[Path]:
    """The signature file, when it lies inside a signed directory (relative to ``root``)."""
    try:
        return [signature.resolve().relative_to(root.resolve())]
    except ValueError:
        return []


# --- sign ------------------------------------------------------------------------------------


def sign(
    path: PathLike,
    private_key: PathLike,
    signature: PathLike | None = None,
    *,
    certificate: PathLike | None = None,
    certificate_chain: PathLike | Sequence[PathLike] = (),
) -> Path:
    """Sign a model file with its external data (or a directory, whole) with an ECDSA private
    key; returns the signature's path (default ``<path>.sig``), written atomically.

    With ``certificate`` (PEM, for that key), model-signing's certificate mode: the bundle
    carries the certificate and the ``certificate_chain`` files' certificates (intermediates,
    optionally the root) for ``verify(..., certificate_chain=...)``.

    InputError for a missing path, key or certificate, a file that is not an ONNX model (or
    whose external data is unsafe), a key model-signing cannot use (Ed25519, RSA, encrypted),
    and a certificate that is not for the key or not for signing (``CERTIFICATE_USAGE``).
    """
    from model_signing._signing import sign_sigstore_pb
    from model_signing._signing import signing as ms_signing

    path = _existing(path, "model file or directory")
    key = Path(private_key)
    chain = _paths(certificate_chain)
    if chain and certificate is None:
        raise UsageError(
            "a certificate chain without a signing certificate",
            hint="pass the signing certificate too (--certificate CERT)",
        )
    check_key(key, private=True)
    if certificate is not None:
        check_certificate(Path(certificate), key)
        for file in chain:
            load_certificates(file)
    out = Path(signature) if signature is not None else default_signature(path)
    if path.is_dir():
        manifest = (
            _hashing_config()
            .set_ignored_paths(paths=_ignored(path, out), ignore_git_paths=True)
            .hash(path)
        )
    else:
        files = _relative(_model_files(path), path.parent)
        manifest = _hashing_config().hash(path.parent.resolve(), files_to_hash=files)
    signer = _signer(key, None if certificate is None else Path(certificate), chain)
    signed = signer.sign(ms_signing.Payload(manifest))
    assert isinstance(signed, sign_sigstore_pb.Signature)
    return write_text_atomic(out, signed.bundle.to_json())


def _signer(key: Path, certificate: Path | None, chain: Sequence[Path]) -> sign_ec_key.Signer:
    """model-signing's signer for the key, or for the key and its certificate."""
    from model_signing._signing import sign_certificate, sign_ec_key

    if certificate is None:
        return sign_ec_key.Signer(key)
    # model-signing 1.1.1 cannot load an empty chain (cryptography refuses empty PEM input):
    # load the certificate as the chain, then drop it, so the bundle carries it once.
    signer = sign_certificate.Signer(key, certificate, chain or [certificate])
    if not chain:
        signer._trust_chain = []
    return signer


# --- verify ----------------------------------------------------------------------------------


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


def _verified_with_chain(
    bundle: sign_sigstore_pb.Signature,
    leaf: bytes,
    trusted: tuple[Path, ...],
    failed: Callable[[str], VerifyResult],
) -> Signed | VerifyResult:
    from cryptography import x509
    from model_signing._signing import sign_certificate
    from OpenSSL import crypto

    try:
        certificate = x509.load_der_x509_certificate(leaf)
    except Exception as e:
        why = one_line(e, 200, line="first", period=False, named=True)
        return failed(f"its signing certificate does not parse ({why})")
    subject = _subject(certificate)
    try:
        with _quiet_certificate_checks():
            manifest: ms_manifest.Manifest = sign_certificate.Verifier(trusted).verify(bundle)
    except crypto.X509StoreContextError as e:
        roots = ", ".join(str(p) for p in trusted)
        why = one_line(e, 200, line="first", period=False)
        return failed(
            f"the signing certificate ({subject}) does not chain to a self-signed root in {roots} "
            f"({why})"
        )
    except Exception as e:
        if not can_sign(certificate):
            return failed(
                f"the signing certificate ({subject}) is not for signing: {CERTIFICATE_USAGE}"
            )
        why = one_line(e, 200, line="first", period=False, named=True)
        return failed(f"the signature does not verify with its certificate ({subject}) ({why})")
    return manifest, subject


def _digests(manifest: ms_manifest.Manifest) -> dict[str, str]:
    return {rd.identifier: rd.digest.digest_hex for rd in manifest.resource_descriptors()}


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
