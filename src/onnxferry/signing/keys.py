"""ECDSA key pairs for model-signing: make one, and check a key before signing or verifying.

    private, public = generate_keys("keys", "P-384")   # keys/private_key.pem is 0600
    check_key(private, private=True)                   # InputError for a key it cannot use
    check_key(public, private=False)

model-signing accepts ECDSA keys on P-256, P-384 and P-521 only (``SUPPORTED_CURVES``), not
Ed25519 or RSA, and onnxferry signs with unencrypted private keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from ..atomic import AtomicFiles
from ..errors import InputError, UsageError, one_line

Curve = Literal["P-256", "P-384"]
CURVES: tuple[Curve, ...] = ("P-256", "P-384")
PRIVATE_KEY = "private_key.pem"
PUBLIC_KEY = "public_key.pem"
SUPPORTED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
"""The curves model-signing signs and verifies with, by their names in cryptography."""

_KEYGEN_HINT = "make a key pair with `ferry keygen -o KEYDIR`"


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
