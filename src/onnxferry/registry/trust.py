"""The registry's trusted keys: the public keys the promotion gates' signature check accepts.

    fingerprint = trust(reg, "keys/public_key.pem")    # kept once; its sha256 fingerprint
    [k.fingerprint for k in trusted_keys(reg)] == [fingerprint]
    distrust(reg, fingerprint[:12])                     # a unique prefix of 8 digits or more

A key is kept by its fingerprint (sha256 of its DER public key) with its PEM, in the catalog's
``trusted_keys`` table; ``gates.signature_gate`` tries each in turn when no key is given.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..report import Table
from .core import Registry
from .records import iso_time


@dataclass(frozen=True)
class TrustedKey:
    """A public key the signature gate accepts: its fingerprint (sha256 of the DER public
    key), its PEM and when it was trusted."""

    fingerprint: str
    pem: str
    added_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "added_at": iso_time(self.added_at),
            "pem": self.pem,
        }


@dataclass
class TrustList:
    """The registry's trusted keys (ReportBody)."""

    keys: list[TrustedKey] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"trusted_keys": [k.to_dict() for k in self.keys]}

    def tables(self) -> list[Table]:
        rows = [(k.fingerprint, iso_time(k.added_at)) for k in self.keys]
        return [Table("trusted keys", ("fingerprint", "trusted since"), rows)]


def key_fingerprint(public_key: str | Path) -> tuple[str, str]:
    """(fingerprint, PEM) of a public key file; InputError for a key model-signing cannot use."""
    from cryptography.hazmat.primitives import serialization

    from ..signing import check_key

    path = Path(public_key)
    check_key(path, private=False)
    key = serialization.load_pem_public_key(path.read_bytes())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest(), pem.decode("ascii")


def trust(registry: Registry, public_key: str | Path) -> str:
    """Add a public key to the registry's trusted keys (kept once); returns its fingerprint."""
    fingerprint, pem = key_fingerprint(public_key)
    with registry.catalog.write() as tx:
        tx.execute(
            "INSERT INTO trusted_keys VALUES (?, ?, ?) ON CONFLICT (fingerprint) DO NOTHING",
            (fingerprint, pem, time.time()),
        )
    return fingerprint


def distrust(registry: Registry, fingerprint: str) -> TrustedKey:
    """Remove a trusted key by its fingerprint (or a unique prefix of it, 8 digits or more)."""
    key = _one_key(registry, fingerprint)
    with registry.catalog.write() as tx:
        tx.execute("DELETE FROM trusted_keys WHERE fingerprint = ?", (key.fingerprint,))
    return key


def trusted_keys(registry: Registry) -> list[TrustedKey]:
    """The registry's trusted keys, oldest first."""
    rows = registry.catalog.read("SELECT * FROM trusted_keys ORDER BY added_at, fingerprint")
    return [TrustedKey(str(r["fingerprint"]), str(r["pem"]), float(r["added_at"])) for r in rows]


def _one_key(registry: Registry, fingerprint: str) -> TrustedKey:
    prefix = fingerprint.strip().lower()
    found = [k for k in trusted_keys(registry) if k.fingerprint.startswith(prefix)]
    if len(prefix) < 8 or len(found) != 1:
        known = ", ".join(k.fingerprint[:16] for k in trusted_keys(registry)) or "none"
        why = "is not" if not found else "does not name exactly one of"
        raise InputError(
            f"{fingerprint!r} {why} the registry's trusted keys",
            hint=f"give a fingerprint (8 digits or more) of one of: {known}",
        )
    return found[0]
