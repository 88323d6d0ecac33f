"""Encryption at rest for registry files: AES-256-GCM (the ``cryptography`` library).

    key = load_key("secret.key")                 # 32 bytes: raw, hex or base64 in the file
    blob = encrypt(key, data, "model.onnx")      # the name is bound in: a swapped file fails
    decrypt(key, blob, "model.onnx") == data

A stored file is ``MAGIC`` + a 12-byte random nonce + ciphertext with its 16-byte tag; the
file's name inside the version is the associated data. A wrong key, a changed byte or a file
moved to another name fails with one line (InputError), never with garbage.
``FERRY_REGISTRY_KEY`` holds the key (hex or base64) when no key file is given.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from ..errors import InputError

MAGIC = b"FERRYENC1"
NONCE = 12
KEY_ENV = "FERRY_REGISTRY_KEY"
_HINT = f"give the 32-byte key the model was added with (--encrypt-key-file or ${KEY_ENV})"


def generate_key(path: str | Path) -> Path:
    """Write a new random key (hex) to ``path``, mode 0600 from its first byte, atomically;
    InputError if it exists."""
    from ..atomic import atomic_write

    path = Path(path)
    if path.exists() or path.is_symlink():
        raise InputError(f"{path} already exists", hint="keep it, or choose another file")
    with atomic_write(path) as f:
        os.fchmod(f.fileno(), 0o600)  # before the key is written
        f.write((secrets.token_hex(32) + "\n").encode())
    return path


def load_key(path: str | Path | None = None) -> bytes:
    """The key in file ``path`` (or ``$FERRY_REGISTRY_KEY`` when None): 32 raw bytes, or 64
    hex digits, or base64 of 32 bytes. InputError when missing or of the wrong length."""
    if path is None:
        text = os.environ.get(KEY_ENV)
        if not text:
            raise InputError(
                f"no encryption key: --encrypt-key-file not given and ${KEY_ENV} unset", hint=_HINT
            )
        return _parse(text.encode(), f"${KEY_ENV}")
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read key file {path}: {e.strerror or e}", hint=_HINT) from None
    return _parse(raw, str(path))


def _parse(raw: bytes, where: str) -> bytes:
    if len(raw) == 32:
        return raw
    text = raw.strip()
    for decode in (binascii.unhexlify, _b64decode):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == 32:
            return key
    raise InputError(f"{where} does not hold a 32-byte AES-256 key", hint=_HINT)


def _b64decode(text: bytes) -> bytes:
    return base64.b64decode(text, validate=True)  # not: skip what is not base64


def is_encrypted(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def encrypt(key: bytes, data: bytes, name: str) -> bytes:
    """``data`` sealed with ``key``; ``name`` is bound in as associated data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(NONCE)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, data, name.encode())


def decrypt(key: bytes, blob: bytes, name: str) -> bytes:
    """The clear bytes of a sealed file; InputError for a wrong key, a tampered or truncated
    file, or a file stored under another name."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not is_encrypted(blob) or len(blob) < len(MAGIC) + NONCE + 16:
        raise InputError(f"{name} is not an encrypted registry file", hint="the store was changed")
    nonce = blob[len(MAGIC) : len(MAGIC) + NONCE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + NONCE :], name.encode())
    except InvalidTag:
        raise InputError(
            f"cannot decrypt {name}: wrong key, or the stored file was changed", hint=_HINT
        ) from None
