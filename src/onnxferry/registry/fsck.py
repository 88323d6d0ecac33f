"""Check a registry: the catalog's integrity, every version's stored files, and leftovers.

    report = fsck(reg)                   # or reg.fsck(); nothing is changed
    report.ok, [f.kind for f in report.result.findings]
    fsck(reg, repair=True).result.removed   # also removes the leftovers

What is checked: SQLite's ``PRAGMA integrity_check`` and ``foreign_key_check`` on the catalog;
every file of every registered version read back from the store against its recorded sha256
and size, and no unrecorded file inside a version's folder; the store's folders that no
catalog row refers to (published by a process killed before its catalog change) and staging
folders whose process is gone. Damage (a bad catalog, a missing, changed or unrecorded file)
fails the check (exit 1) and is never repaired here: register the model again. Leftovers are
invisible to readers and harmless; they are reported, and ``repair`` removes them (as the next
``add`` of that model would), inside a catalog write transaction so no other process is
between publishing a version and recording it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..report import Report, Table
from .store import PARTIAL

if TYPE_CHECKING:
    from .core import Registry
    from .records import VersionRecord

DAMAGE = ("catalog", "missing", "changed", "unreadable", "unrecorded")
"""Finding kinds that fail the check."""
LEFTOVERS = ("orphan", "partial")
"""Finding kinds that are leftovers of killed processes: reported, removed by ``repair``."""


@dataclass(frozen=True)
class Finding:
    """One problem: its ``kind`` (DAMAGE or LEFTOVERS), where (a version or a store folder),
    what, and whether ``repair`` removed it."""

    kind: str
    where: str
    detail: str
    removed: bool = False

    @property
    def damage(self) -> bool:
        return self.kind in DAMAGE

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "where": self.where,
            "detail": self.detail,
            "damage": self.damage,
            "removed": self.removed,
        }


@dataclass
class FsckResult:
    """What ``fsck`` found (ReportBody): ok when the catalog is sound and every version's
    files match; leftovers alone do not fail it."""

    registry: str
    store: str
    integrity: str = "ok"
    versions: int = 0
    files: int = 0
    repair: bool = False
    in_progress: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and not self.damaged

    @property
    def damaged(self) -> list[Finding]:
        return [f for f in self.findings if f.damage]

    @property
    def leftovers(self) -> list[Finding]:
        """Leftovers still in the store (found, not removed)."""
        return [f for f in self.findings if not f.damage and not f.removed]

    @property
    def removed(self) -> list[str]:
        return [f.where for f in self.findings if f.removed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "store": self.store,
            "integrity": self.integrity,
            "versions": self.versions,
            "files": self.files,
            "repair": self.repair,
            "in_progress": self.in_progress,
            "damaged": len(self.damaged),
            "leftovers": len(self.leftovers),
            "removed": self.removed,
            "findings": [f.to_dict() for f in self.findings],
        }

    def tables(self) -> list[Table]:
        summary = [
            ("registry", self.registry),
            ("store", self.store),
            ("catalog integrity", self.integrity),
            ("versions checked", self.versions),
            ("files checked", self.files),
            ("damaged", len(self.damaged)),
            ("leftovers", len(self.leftovers)),
            ("removed", len(self.removed)),
            ("being added now", self.in_progress),
        ]
        tables = [Table("registry fsck", ("what", "value"), summary)]
        if self.findings:
            rows = [
                (f.kind, f.where, f.detail, "removed" if f.removed else "-") for f in self.findings
            ]
            tables.append(Table("findings", ("kind", "where", "detail", "action"), rows))
        return tables


def fsck(registry: Registry, repair: bool = False) -> Report[FsckResult]:
    """Check ``registry`` (see the module docstring); ``repair`` removes leftovers only."""
    store = registry.store
    result = FsckResult(str(registry.path), store.url, repair=repair)
    result.integrity = registry.catalog.integrity()
    if result.integrity != "ok":
        result.findings.append(Finding("catalog", "catalog.db", result.integrity))
    broken = registry.catalog.read("PRAGMA foreign_key_check")
    if broken:
        detail = f"{len(broken)} row(s) refer to missing rows (first: table {broken[0][0]})"
        result.findings.append(Finding("catalog", "catalog.db", detail))
    store.fs.invalidate_cache()
    records = registry.versions()
    for record in records:
        result.findings += _check_version(registry, record)
        result.versions += 1
        result.files += len(record.files)
    result.findings += _leftovers(registry, result, repair)
    notes = []
    if result.leftovers:
        notes.append(
            f"{len(result.leftovers)} leftover folder(s) of killed processes, invisible to "
            "readers; `ferry registry fsck --repair` removes them"
        )
    if result.damaged:
        notes.append("damaged versions are not repaired: register those models again")
    return Report("registry fsck", result, notes)


def _check_version(registry: Registry, record: VersionRecord) -> list[Finding]:
    """The version's recorded files read back against their digests, and files in its folder
    that the catalog does not list."""
    store = registry.store
    findings = []
    for rel, fact in sorted(record.files.items()):
        where = f"{record.ref} {rel}"
        try:
            got = store.digest(record.location, rel)
        except FileNotFoundError:
            findings.append(Finding("missing", where, f"not in the store ({record.location})"))
            continue
        except OSError as e:
            findings.append(Finding("unreadable", where, str(e.strerror or e)))
            continue
        if got.size != fact.size:
            detail = f"{got.size} bytes, recorded {fact.size}"
            findings.append(Finding("changed", where, detail))
        elif got.sha256 != fact.sha256:
            detail = f"sha256 {got.sha256[:12]}..., recorded {fact.sha256[:12]}..."
            findings.append(Finding("changed", where, detail))
    folder = store.path(record.location)
    try:
        stored = store.fs.find(folder)
    except FileNotFoundError:
        stored = []
    for path in sorted(str(p) for p in stored):
        rel = posixpath.relpath(path, folder)
        if rel not in record.files:
            findings.append(Finding("unrecorded", f"{record.ref} {rel}", "not in the catalog"))
    return findings


def _leftovers(registry: Registry, result: FsckResult, repair: bool) -> list[Finding]:
    """Orphan and abandoned staging folders of every model in the store, found (and removed
    when ``repair``) inside one catalog write transaction: no add is between publishing and
    recording meanwhile, so a folder no row refers to is truly a leftover."""
    store = registry.store
    findings = []
    with registry.catalog.write() as tx:
        rows = tx.execute("SELECT name, location FROM versions").fetchall()
        referenced: dict[str, set[str]] = {}
        for name, location in rows:
            referenced.setdefault(str(name), set()).add(str(location))
        for name in sorted(set(_model_folders(registry)) | set(referenced)):
            staging = _staging(registry, name)
            for location in store.leftovers(name, referenced.get(name, set())):
                partial = posixpath.basename(location).startswith(PARTIAL)
                if partial:
                    staging -= 1
                    kind, detail = "partial", "staging folder of a process that is gone"
                else:
                    kind, detail = "orphan", "published, but no catalog row refers to it"
                if repair:
                    store.remove(location)
                findings.append(Finding(kind, location, detail, removed=repair))
            result.in_progress += staging
    return findings


def _model_folders(registry: Registry) -> list[str]:
    """The names of the model folders at the top of the store."""
    store = registry.store
    try:
        entries = store.fs.ls(store.root, detail=True)
    except FileNotFoundError:
        return []
    return [
        posixpath.basename(str(e["name"]).rstrip("/"))
        for e in entries
        if e.get("type") == "directory"
    ]


def _staging(registry: Registry, name: str) -> int:
    """How many staging folders ``name`` has, live or not."""
    store = registry.store
    try:
        entries = store.fs.ls(store.path(name), detail=False)
    except FileNotFoundError:
        return 0
    return sum(1 for e in entries if posixpath.basename(str(e).rstrip("/")).startswith(PARTIAL))
