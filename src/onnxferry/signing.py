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

``verify`` never raises for a model that fails: every exception inside verification (a
corrupt signature, a wrong key, an unreadable file) is a failed ``VerifyResult`` with a
one-line reason. Missing paths and keys it cannot use are InputError (exit 2), before any
verification starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .atomic import AtomicFiles, write_text_atomic
from .errors import InputError, UsageError, one_line
from .report import Table

if TYPE_CHECKING:
    from model_signing import hashing as ms_hashing
    from model_signing import manifest as ms_manifest

Curve = Literal["P-256", "P-384"]
CURVES: tuple[Curve, ...] = ("P-256", "P-384")
PRIVATE_KEY = "private_key.pem"
PUBLIC_KEY = "public_key.pem"
SUPPORTED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
"""The curves model-signing signs and verifies with, by their names in cryptography."""

_KEYGEN_HINT = "make a key pair with `ferry keygen -o KEYDIR`"


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": str(self.path),
            "signature": str(self.signature),
            "files": list(self.files),
            "reason": self.reason,
            "file": self.file,
        }

    def tables(self) -> list[Table]:
        rows: list[tuple[str, str]] = [("path", str(self.path)), ("signature", str(self.signature))]
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


def sign(path: str | Path, private_key: str | Path, signature: str | Path | None = None) -> Path:
    """Sign a model file with its external data (or a directory, whole) with an ECDSA private
    key; returns the signature's path (default ``<path>.sig``), written atomically.

    InputError for a missing path or key, a file that is not an ONNX model (or whose external
    data is unsafe), and a key model-signing cannot use (Ed25519, RSA, encrypted).
    """
    from model_signing._signing import sign_ec_key, sign_sigstore_pb
    from model_signing._signing import signing as ms_signing

    path = _existing(path, "model file or directory")
    key = Path(private_key)
    check_key(key, private=True)
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
    signed = sign_ec_key.Signer(key).sign(ms_signing.Payload(manifest))
    assert isinstance(signed, sign_sigstore_pb.Signature)
    return write_text_atomic(out, signed.bundle.to_json())


# --- verify ----------------------------------------------------------------------------------


def verify(
    path: str | Path, public_key: str | Path, signature: str | Path | None = None
) -> VerifyResult:
    """Check ``path`` (a model file with its external data, or a directory) against its
    signature (default ``<path>.sig``) and an ECDSA public key.

    The result is ok only when the signature verifies with the key and every file it covers
    is present and unchanged (for a directory: and no file was added). Any exception inside
    verification is a failed result with a one-line reason, never a pass. InputError for a
    missing path, signature or key, or a key model-signing cannot use.
    """
    path = _existing(path, "model file or directory")
    sig = _existing(signature if signature is not None else default_signature(path), "signature")
    expected = _signed_manifest(path, sig, Path(public_key))
    if isinstance(expected, VerifyResult):
        return expected
    try:
        return _compare(path, sig, expected)
    except Exception as e:
        return VerifyResult(
            False,
            path,
            sig,
            reason=f"{path}: verification failed ({one_line(e, 200, named=True)})",
        )


def verify_contents(
    path: str | Path, contents: Mapping[str, bytes], public_key: str | Path, signature: Path
) -> VerifyResult:
    """``verify`` for files held in memory (``{name relative to the model's directory:
    bytes}``, e.g. decrypted ones): the signature must verify with the key and cover exactly
    these files with these contents. ``path`` names the model in the result."""
    import hashlib

    path = Path(path)
    sig = _existing(signature, "signature")
    expected = _signed_manifest(path, sig, Path(public_key))
    if isinstance(expected, VerifyResult):
        return expected
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


def _signed_manifest(path: Path, sig: Path, key: Path) -> ms_manifest.Manifest | VerifyResult:
    """The manifest ``sig`` signs, verified with ``key``; a failed VerifyResult otherwise."""
    check_key(key, private=False)
    from model_signing._signing import sign_ec_key, sign_sigstore_pb

    try:
        bundle = sign_sigstore_pb.Signature.read(sig)
    except Exception as e:
        why = one_line(e, 200, line="first", period=False, named=True)
        reason = f"{sig}: not a model-signing signature bundle ({why})"
        return VerifyResult(False, path, sig, reason=reason, file=str(sig))
    try:
        manifest: ms_manifest.Manifest = sign_ec_key.Verifier(key).verify(bundle)
    except Exception as e:
        why = one_line(e, 200, line="first", period=False, named=True)
        reason = f"{sig}: the signature does not verify with {key} ({why})"
        return VerifyResult(False, path, sig, reason=reason, file=str(sig))
    return manifest


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
