"""What the registry reports: versions, alias changes, listings, histories, and references.

    ref = Ref.parse("resnet@production")           # Ref("resnet", None, "production")
    record = reg.get(ref)                          # a VersionRecord: resnet:2
    record.to_dict()["aliases"]                    # ["production"]
    History(reg.history("resnet")).tables()        # the body of `ferry registry history`
    iso_time(record.created_at)                    # "2026-05-01T12:00:00.000000Z"

``NAME``, ``ALIAS`` and ``REF`` are the spellings of a model name, an alias and a reference
(``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``). The records are plain frozen dataclasses;
``Listing`` and ``History`` are report bodies (``to_dict``, ``tables``, ``ok``). The catalog
rows they are read from and written to are ``core.Registry``'s business.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..report import Table
from .store import FileFact

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ALIAS = NAME
REF = re.compile(rf"(?P<name>{NAME.pattern})(?::(?P<version>[0-9]+)|@(?P<alias>{ALIAS.pattern}))?")


@dataclass(frozen=True)
class VersionFacts:
    """What a version is, wherever it is kept: the catalog's VersionRecord and a bundle's
    Manifest (bundle.py) both hold these."""

    name: str
    version: int
    model_file: str
    files: dict[str, FileFact]
    digest: str
    size: int
    signature: str | None
    golden: str | None
    encrypted: bool
    lineage: dict[str, Any]
    created_at: float
    created_by: str


@dataclass(frozen=True)
class VersionRecord(VersionFacts):
    """One registered version, as the catalog holds it: its facts, where its files are in the
    store, and the aliases on it."""

    location: str
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def ok(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "size": self.size,
            "model_file": self.model_file,
            "signed": self.signature is not None,
            "golden": self.golden is not None,
            "encrypted": self.encrypted,
            "aliases": list(self.aliases),
            "created_at": iso_time(self.created_at),
            "created_by": self.created_by,
            "location": self.location,
            "files": {k: v.to_dict() for k, v in self.files.items()},
            "lineage": self.lineage,
        }

    def tables(self) -> list[Table]:
        rows: list[tuple[str, str]] = [
            ("version", self.ref),
            ("aliases", ", ".join(self.aliases) or "-"),
            ("digest", self.digest),
            ("size", str(self.size)),
            ("signed", "yes" if self.signature else "no"),
            ("golden data", "yes" if self.golden else "no"),
            ("encrypted", "yes" if self.encrypted else "no"),
            ("added", f"{iso_time(self.created_at)} by {self.created_by}"),
        ]
        rows += [(f"lineage {k}", _short(v)) for k, v in sorted(self.lineage.items())]
        return [Table(f"registry {self.ref}", ("what", "value"), rows)]


@dataclass(frozen=True)
class AliasChange:
    """One row of an alias's history: ``version`` (None: the alias was removed) replaced
    ``previous``."""

    name: str
    alias: str
    version: int | None
    previous: int | None
    action: str
    at: float
    actor: str
    reason: str
    gates: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "previous": self.previous,
            "action": self.action,
            "at": iso_time(self.at),
            "actor": self.actor,
            "reason": self.reason,
            "gates": self.gates,
        }


@dataclass
class Listing:
    """Versions (and the aliases on them) for ``ferry registry list`` (ReportBody)."""

    versions: list[VersionRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"versions": [v.to_dict() for v in self.versions]}

    def tables(self) -> list[Table]:
        rows = [
            (
                v.ref,
                ", ".join(v.aliases) or "-",
                v.digest[:12],
                v.size,
                "yes" if v.signature else "no",
                iso_time(v.created_at),
            )
            for v in self.versions
        ]
        columns = ("version", "aliases", "digest", "size", "signed", "added")
        return [Table("registry", columns, rows)]


@dataclass
class History:
    """Alias changes, oldest first (ReportBody)."""

    changes: list[AliasChange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"history": [c.to_dict() for c in self.changes]}

    def tables(self) -> list[Table]:
        rows = [
            (
                iso_time(c.at),
                f"{c.name}@{c.alias}",
                "-" if c.version is None else c.version,
                "-" if c.previous is None else c.previous,
                c.action,
                c.actor,
                c.reason,
            )
            for c in self.changes
        ]
        columns = ("at", "alias", "version", "previous", "action", "actor", "reason")
        return [Table("history", columns, rows)]


@dataclass(frozen=True)
class Ref:
    """``name``, ``name:version`` or ``name@alias``."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> Ref:
        m = REF.fullmatch(text.strip())
        if m is None:
            raise UsageError(
                f"{text!r} is not a registry reference",
                hint="write NAME, NAME:VERSION or NAME@ALIAS (letters, digits, . _ -)",
            )
        version = m.group("version")
        return cls(m.group("name"), int(version) if version else None, m.group("alias"))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def iso_time(t: float) -> str:
    """``t`` (seconds since the epoch) as UTC ISO 8601 with microseconds and a Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
