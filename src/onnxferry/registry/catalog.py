"""The registry's catalog: versions, aliases and their history in one SQLite file.

    db = Catalog.open(Path("catalog.db"), create=True)
    with db.write() as tx:                      # BEGIN IMMEDIATE ... COMMIT, or ROLLBACK
        tx.execute("INSERT INTO meta VALUES (?, ?)", ("owner", "ml-platform"))
    db.read("SELECT value FROM meta WHERE key = ?", ("owner",))[0]["value"]   # "ml-platform"
    db.integrity()                              # "ok"

WAL journal (readers never wait for a writer), ``synchronous=FULL`` (a committed change
survives a power cut), a 30 s busy timeout, and every change in one ``BEGIN IMMEDIATE``
transaction: two processes changing the registry at once are serialized by SQLite, so one
wins per alias and the catalog stays consistent. A connection is opened per call, so a
Registry can be used from any thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InputError

T = TypeVar("T")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    location TEXT NOT NULL,
    model_file TEXT NOT NULL,
    files TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    signature TEXT,
    golden TEXT,
    encrypted INTEGER NOT NULL DEFAULT 0,
    lineage TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES versions (name, version)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER,
    previous INTEGER,
    action TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    gates TEXT
);
CREATE INDEX IF NOT EXISTS history_by_alias ON history (name, alias, at);
CREATE TABLE IF NOT EXISTS trusted_keys (
    fingerprint TEXT PRIMARY KEY,
    pem TEXT NOT NULL,
    added_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Catalog:
    """One SQLite catalog file; see the module docstring."""

    path: Path

    @classmethod
    def open(cls, path: Path, *, create: bool) -> Catalog:
        """The catalog at ``path``, made (with its schema) when ``create``; InputError when it
        is missing (and not ``create``), not a registry catalog, or of a newer schema."""
        if not path.exists() and not create:
            raise InputError(
                f"{path.parent}: no registry here (no {path.name})",
                hint="check the path, or register a model there with `ferry registry add`",
            )
        catalog = cls(path)
        try:
            if path.exists() and catalog._current():
                return catalog  # nothing to write: read-only verbs work on a full disk too
            with catalog.write() as tx:
                tx.executescript_in_transaction(SCHEMA)
                row = tx.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if row is None:
                    tx.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise InputError(
                        f"{path}: registry schema {row[0]} is newer than this onnxferry's "
                        f"({SCHEMA_VERSION})",
                        hint="upgrade onnxferry",
                    )
        except sqlite3.DatabaseError as e:
            raise InputError(
                f"{path}: not a registry catalog ({e})",
                hint="point at a registry directory made by `ferry registry add`",
            ) from None
        return catalog

    def _current(self) -> bool:
        """Whether the file holds this onnxferry's schema already (InputError when newer)."""
        # Another process may have made the file and not yet committed its schema.
        if not self.read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"):
            return False
        rows = self.read("SELECT value FROM meta WHERE key = 'schema'")
        found = int(rows[0]["value"]) if rows else 0
        if found > SCHEMA_VERSION:
            raise InputError(
                f"{self.path}: registry schema {found} is newer than this onnxferry's "
                f"({SCHEMA_VERSION})",
                hint="upgrade onnxferry",
            )
        return found == SCHEMA_VERSION

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextlib.contextmanager
    def write(self) -> Iterator[Transaction]:
        """One write transaction (``BEGIN IMMEDIATE``): committed when the block ends, rolled
        back when it raises. Writers wait for each other up to the busy timeout."""
        db = _checked(self._connect, self.path)
        try:
            _checked(lambda: db.execute("BEGIN IMMEDIATE"), self.path)
            try:
                yield Transaction(db)
            except BaseException as e:
                # SQLite may have rolled back already (a full disk); never mask the cause.
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                if isinstance(e, sqlite3.OperationalError):
                    raise _sqlite_error(e, self.path) from None
                raise
            _checked(lambda: db.execute("COMMIT"), self.path)
        finally:
            db.close()

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one query, read from a consistent snapshot."""

        def query() -> list[sqlite3.Row]:
            db = self._connect()
            try:
                db.row_factory = sqlite3.Row
                return list(db.execute(sql, params).fetchall())
            finally:
                db.close()

        return _checked(query, self.path)

    def integrity(self) -> str:
        """``PRAGMA integrity_check``'s answer: "ok" for a sound file."""
        rows = self.read("PRAGMA integrity_check")
        return "; ".join(str(r[0]) for r in rows)


@dataclass(frozen=True)
class Transaction:
    """The statements of one write transaction."""

    db: sqlite3.Connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def executescript_in_transaction(self, script: str) -> None:
        """Run ``;``-separated statements without the implicit COMMIT of ``executescript``."""
        for statement in script.split(";"):
            if statement.strip():
                self.db.execute(statement)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.db.execute(sql, params).fetchone()
        return None if row is None else tuple(row)


def _checked(work: Callable[[], T], path: Path) -> T:
    """``work()``, with SQLite's operational errors (locked, disk full, read-only) as one
    line."""
    try:
        return work()
    except sqlite3.OperationalError as e:
        raise _sqlite_error(e, path) from None


def _sqlite_error(e: sqlite3.OperationalError, path: Path) -> InputError:
    text = str(e)
    if "locked" in text or "busy" in text:
        hint = "another process holds the registry for too long; try again"
    elif "disk" in text or "full" in text:
        hint = "free some disk space; nothing was changed"
    else:
        hint = "check that the registry directory is writable"
    return InputError(f"registry catalog {path}: {text}", hint=hint)
