"""The registry: numbered versions of named models, aliases that point at them, and a history
of every alias change.

    reg = Registry("registry/", create=True)                 # catalog.db + store/ inside
    v = reg.add("out/model.onnx", "resnet", golden="out/golden/")
    reg.set_alias("resnet", "staging", v.version, reason="first build")
    reg.get("resnet@staging").version == v.version
    reg.history("resnet")                                   # [AliasChange, ...] oldest first
    reg.holder_at("resnet", "staging", when=time.time())    # what it pointed at then

``Registry(path, store="s3://bucket/prefix")`` (or ``Registry.open``) keeps the artifacts in
an fsspec store (the URL is recorded in the catalog, so later opens find it). Promotion with
gates is ``gates.promote``; versions are immutable once added. The records it returns
(VersionRecord, AliasChange, Ref) are in ``records``.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from ..errors import InputError, UsageError
from .catalog import Catalog, Transaction
from .records import ALIAS, AliasChange, Ref, VersionRecord
from .store import FileFact, Store

if TYPE_CHECKING:
    from ..report import Report
    from .fsck import FsckResult

CATALOG = "catalog.db"
DEFAULT_STORE = "store"
ROLLBACKS = ("rollback", "auto-rollback")


class Registry:
    """Versions, aliases and history of named models; see the module docstring."""

    def __init__(self, path: str | Path, *, store: str | None = None, create: bool = False) -> None:
        """The registry in directory ``path`` (made when ``create``). ``store``: where the
        artifacts go, fixed when the registry is made (default ``path/store``); InputError when
        it differs from the recorded one."""
        self.path = Path(path)
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(
                    f"cannot create the registry {path}: {e.strerror or e}",
                    hint="check that the parent directory is writable",
                ) from None
        elif not self.path.is_dir():
            raise InputError(f"{path}: no registry here", hint="check the path")
        self.catalog = Catalog.open(self.path / CATALOG, create=create)
        url = self._store_url(store)
        local = "://" not in url and not Path(url).is_absolute()
        self.store = Store.open(str(self.path / url) if local else url)

    @classmethod
    def open(cls, path: str | Path, *, store: str | None = None, create: bool = False) -> Registry:
        """``Registry(path, store=..., create=...)``."""
        return cls(path, store=store, create=create)

    def _store_url(self, wanted: str | None) -> str:
        """The store URL recorded in the catalog (``wanted``, or the default, when none is)."""
        rows = self.catalog.read("SELECT value FROM meta WHERE key = 'store'")
        if rows:
            url = str(rows[0]["value"])
        else:
            with self.catalog.write() as tx:  # OR IGNORE: a racing first open may have won
                default = wanted or DEFAULT_STORE
                tx.execute("INSERT OR IGNORE INTO meta VALUES ('store', ?)", (default,))
                row = tx.one("SELECT value FROM meta WHERE key = 'store'")
            assert row is not None
            url = str(row[0])
        if wanted is not None and wanted != url:
            raise InputError(
                f"{self.path} keeps its artifacts in {url}, not {wanted}",
                hint="drop --store, or make a new registry for the other store",
            )
        return url

    # --- reading -----------------------------------------------------------------------------

    def names(self) -> list[str]:
        rows = self.catalog.read("SELECT DISTINCT name FROM versions ORDER BY name")
        return [str(r["name"]) for r in rows]

    def versions(self, name: str | None = None) -> list[VersionRecord]:
        """Every version (of ``name``), by name and number."""
        where, params = ("WHERE v.name = ?", (name,)) if name else ("", ())
        rows = self.catalog.read(
            f"SELECT v.*, (SELECT group_concat(alias, ',') FROM aliases a "
            f"WHERE a.name = v.name AND a.version = v.version) AS alias_list "
            f"FROM versions v {where} ORDER BY v.name, v.version",
            params,
        )
        return [_record(r) for r in rows]

    def get(self, ref: str | Ref) -> VersionRecord:
        """The version ``ref`` names (``NAME`` alone: the highest version). InputError with the
        known names, versions or aliases when there is none."""
        ref = Ref.parse(ref) if isinstance(ref, str) else ref
        known = self.versions(ref.name)
        if not known:
            names = ", ".join(self.names()) or "none yet"
            raise InputError(f"no model {ref.name!r} in the registry", hint=f"known: {names}")
        if ref.alias is not None:
            holder = self.aliases(ref.name).get(ref.alias)
            if holder is None:
                aliases = ", ".join(sorted(self.aliases(ref.name))) or "none"
                raise InputError(
                    f"{ref.name} has no alias {ref.alias!r}", hint=f"its aliases: {aliases}"
                )
            number = holder
        else:
            number = ref.version if ref.version is not None else known[-1].version
        for record in known:
            if record.version == number:
                return record
        numbers = ", ".join(str(v.version) for v in known)
        raise InputError(f"{ref.name} has no version {number}", hint=f"its versions: {numbers}")

    def aliases(self, name: str) -> dict[str, int]:
        rows = self.catalog.read(
            "SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,)
        )
        return {str(r["alias"]): int(r["version"]) for r in rows}

    def history(
        self, name: str | None = None, alias: str | None = None, *, until: float | None = None
    ) -> list[AliasChange]:
        """Alias changes, oldest first, of ``name`` (and ``alias``), up to time ``until``."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("name", name), ("alias", alias)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if until is not None:
            clauses.append("at <= ?")
            params.append(until)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.catalog.read(f"SELECT * FROM history {where} ORDER BY at, id", params)
        return [_change(r) for r in rows]

    def holder_at(self, name: str, alias: str, when: float) -> int | None:
        """The version ``name@alias`` pointed at, at time ``when`` (None: nothing then)."""
        changes = self.history(name, alias, until=when)
        return changes[-1].version if changes else None

    def local_files(self, record: VersionRecord, dest: Path) -> Path:
        """The model file of ``record`` on this machine: in place for a local store, else
        fetched into ``dest`` with every file checked against its digest. InputError for an
        encrypted version (it is only ever decrypted in memory)."""
        if record.encrypted:
            raise InputError(
                f"{record.ref} is encrypted; it is decrypted in memory only",
                hint="load it with its key (registry.access.load_model)",
            )
        here = self.store.local_path(record.location, record.model_file)
        if here is not None:
            return here
        self.store.fetch(record.location, record.files, dest)
        return dest / record.model_file

    # --- changing ----------------------------------------------------------------------------

    def add(self, model: str | Path, name: str, **options: Any) -> VersionRecord:
        """Register ``model`` as the next version of ``name`` (``adding.add_version``: golden,
        sign_key, encrypt_key, source, parent, actor)."""
        from .adding import add_version

        return add_version(self, model, name, **options)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | None,
        *,
        action: str = "set",
        reason: str = "",
        gates: Mapping[str, Any] | None = None,
        actor: str | None = None,
        expect: int | EllipsisType | None = ...,
    ) -> AliasChange:
        """Point ``name@alias`` at ``version`` (None removes it) and record the change, in one
        transaction. ``expect``: the version the caller saw holding the alias (None: none);
        InputError when another process changed it since, so one of two racing promotions
        wins and the other is told."""
        if ALIAS.fullmatch(alias) is None:
            raise UsageError(f"{alias!r} is not an alias name", hint="letters, digits, . _ -")
        now = time.time()
        with self.catalog.write() as tx:
            if version is not None and not tx.one(
                "SELECT 1 FROM versions WHERE name = ? AND version = ?", (name, version)
            ):
                raise InputError(
                    f"{name} has no version {version}", hint="see `ferry registry list`"
                )
            row = tx.one("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            previous = None if row is None else int(row[0])
            if expect is not ... and expect != previous:
                raise InputError(
                    f"{name}@{alias} changed while this ran (now {previous}, was {expect})",
                    hint="look at `ferry registry history` and try again",
                )
            if version is None:
                tx.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            else:
                tx.execute(
                    "INSERT INTO aliases VALUES (?, ?, ?, ?) ON CONFLICT (name, alias) "
                    "DO UPDATE SET version = excluded.version, since = excluded.since",
                    (name, alias, version, now),
                )
            change = AliasChange(
                name,
                alias,
                version,
                previous,
                action,
                now,
                actor or whoami(),
                reason,
                dict(gates) if gates is not None else None,
            )
            _record_change(tx, change)
        return change

    def rollback_target(self, name: str, alias: str) -> int | None:
        """The version ``rollback`` would return ``name@alias`` to: the latest earlier holder
        that was not itself rolled back from (None when there is none)."""
        current = self.aliases(name).get(alias)
        left = {current}
        existing = {v.version for v in self.versions(name)}
        for change in reversed(self.history(name, alias)):
            if change.action in ROLLBACKS:
                left.add(change.previous)
            elif change.version not in left and change.version in existing:
                return change.version
        return None

    def rollback(
        self,
        name: str,
        alias: str,
        *,
        reason: str = "",
        actor: str | None = None,
        action: str = "rollback",
    ) -> AliasChange:
        """Return ``name@alias`` to its previous holder (``rollback_target``); InputError when
        it has none."""
        current = self.aliases(name).get(alias)
        if current is None:
            raise InputError(f"{name} has no alias {alias!r}", hint="nothing to roll back")
        target = self.rollback_target(name, alias)
        if target is None:
            raise InputError(
                f"{name}@{alias} has no earlier version to return to",
                hint="promote a version with `ferry registry promote`",
            )
        return self.set_alias(
            name,
            alias,
            target,
            action=action,
            reason=reason or f"rolled back from {current}",
            actor=actor,
            expect=current,
        )

    def fsck(self, repair: bool = False) -> Report[FsckResult]:
        """Check the catalog and every version's stored files, and find the leftovers of
        killed processes (``fsck.fsck``); ``repair`` removes the leftovers only."""
        from .fsck import fsck

        return fsck(self, repair=repair)


def whoami() -> str:
    """``user@host`` (or ``$FERRY_ACTOR``), for the history."""
    import os

    actor = os.environ.get("FERRY_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _record_change(tx: Transaction, change: AliasChange) -> None:
    tx.execute(
        "INSERT INTO history (name, alias, version, previous, action, at, actor, reason, gates) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            change.name,
            change.alias,
            change.version,
            change.previous,
            change.action,
            change.at,
            change.actor,
            change.reason,
            json.dumps(change.gates) if change.gates is not None else None,
        ),
    )


def _record(row: Any) -> VersionRecord:
    files = {k: FileFact(v["sha256"], int(v["size"])) for k, v in json.loads(row["files"]).items()}
    aliases = tuple(sorted(str(row["alias_list"]).split(","))) if row["alias_list"] else ()
    return VersionRecord(
        name=str(row["name"]),
        version=int(row["version"]),
        location=str(row["location"]),
        model_file=str(row["model_file"]),
        files=files,
        digest=str(row["digest"]),
        size=int(row["size"]),
        signature=row["signature"],
        golden=row["golden"],
        encrypted=bool(row["encrypted"]),
        lineage=json.loads(row["lineage"]),
        created_at=float(row["created_at"]),
        created_by=str(row["created_by"]),
        aliases=aliases,
    )


def _change(row: Any) -> AliasChange:
    return AliasChange(
        name=str(row["name"]),
        alias=str(row["alias"]),
        version=None if row["version"] is None else int(row["version"]),
        previous=None if row["previous"] is None else int(row["previous"]),
        action=str(row["action"]),
        at=float(row["at"]),
        actor=str(row["actor"]),
        reason=str(row["reason"]),
        gates=json.loads(row["gates"]) if row["gates"] else None,
    )
