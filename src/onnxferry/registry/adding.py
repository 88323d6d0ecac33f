"""Register a model: its files, signature, golden data and lineage, as the next version.

    record = add_version(reg, "out/model.onnx", "resnet", golden="out/golden/",
                         sign_key="keys/private_key.pem")
    record.version, record.digest, record.lineage["onnxruntime"]

The model goes through the safe loader first; golden data must load against its signature;
a signature is made with ``sign_key`` (into a temporary file, the user's folder untouched) or
taken from ``<model>.sig`` beside it. Files are staged and published (store.py), then the
catalog row is written in one transaction that also numbers the version: two processes adding
at once get two numbers.
"""

from __future__ import annotations

import contextlib
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..data import load_test_cases
from ..data.testsets import PB_RE, layout
from ..errors import UsageError
from ..model import Model
from ..signing import default_signature
from .core import whoami
from .records import NAME, VersionRecord
from .store import Staged, file_fact

if TYPE_CHECKING:
    from .core import Registry

GOLDEN = "golden"
LINEAGE = "lineage"


def add_version(
    registry: Registry,
    model: str | Path,
    name: str,
    *,
    golden: str | Path | None = None,
    sign_key: str | Path | None = None,
    encrypt_key: bytes | None = None,
    source: str | Path | None = None,
    parent: str | None = None,
    actor: str | None = None,
) -> VersionRecord:
    """Register ``model`` (a file, with its external data) as the next version of ``name``."""
    if NAME.fullmatch(name) is None:
        raise UsageError(f"{name!r} is not a model name", hint="letters, digits, . _ - (<= 128)")
    loaded = Model.load(model)
    assert loaded.path is not None
    root = loaded.path.parent
    files = {loaded.path.name: loaded.path}
    files |= {p.resolve().relative_to(root.resolve()).as_posix(): p for p in loaded.external_files}
    clear = set(files)  # what encryption covers: the model and its external data
    golden_rel = None
    if golden is not None:
        load_test_cases(golden, loaded.signature)  # refuse bad golden data before storing
        found = golden_files(Path(golden))
        files |= found
        golden_rel = GOLDEN
    lineage = collect_lineage(loaded, source=source, parent=parent)
    files |= lineage.pop("_files")
    encrypt = _encrypter(encrypt_key, clear)
    with tempfile.TemporaryDirectory(prefix="ferry-add-") as tmp:
        signature_rel = None
        sig = _signature(loaded.path, sign_key, Path(tmp))
        if sig is not None:
            signature_rel = f"{loaded.path.name}.sig"
            files[signature_rel] = sig
        staged = registry.store.stage(name, files, transform=encrypt)
    return _commit(
        registry,
        staged,
        model_file=loaded.path.name,
        digest=loaded.digest,
        size=loaded.size_bytes,
        signature=signature_rel,
        golden=golden_rel,
        encrypted=encrypt_key is not None,
        lineage=lineage,
        actor=actor or whoami(),
    )


def _commit(registry: Registry, staged: Staged, **row: Any) -> VersionRecord:
    """Number the version, publish its folder, tidy orphans and record it: one transaction."""
    store = registry.store
    try:
        with registry.catalog.write() as tx:
            top = tx.one("SELECT MAX(version) FROM versions WHERE name = ?", (staged.name,))
            version = int(top[0]) + 1 if top and top[0] is not None else 1
            rows = tx.execute("SELECT location FROM versions WHERE name = ?", (staged.name,))
            store.sweep(staged.name, [str(r[0]) for r in rows] + [staged.partial])
            store.publish(staged)
            tx.execute(
                "INSERT INTO versions (name, version, location, model_file, files, digest, size,"
                " signature, golden, encrypted, lineage, created_at, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    staged.name,
                    version,
                    staged.location,
                    row["model_file"],
                    json.dumps({k: v.to_dict() for k, v in staged.files.items()}),
                    row["digest"],
                    row["size"],
                    row["signature"],
                    row["golden"],
                    int(row["encrypted"]),
                    json.dumps(row["lineage"], sort_keys=True),
                    time.time(),
                    row["actor"],
                ),
            )
    except BaseException:
        for location in (staged.partial, staged.location):
            with contextlib.suppress(Exception):  # the store may be what failed; keep the cause
                store.remove(location)
        raise
    return registry.get(f"{staged.name}:{version}")


def golden_files(path: Path) -> dict[str, Path]:
    """The files of golden data ``path`` (test_data_set folders, one set, .npz files or one
    .npz) as ``{"golden/<relative name>": file}``; nothing else in the folder is taken."""
    if path.is_file():
        return {f"{GOLDEN}/{path.name}": path}
    kind, items = layout(path)
    if kind == "npz":
        return {f"{GOLDEN}/{p.name}": p for p in items}
    found = {}
    for folder in items:
        for p in sorted(folder.iterdir()):
            if p.is_file() and PB_RE.match(p.name):
                found[f"{GOLDEN}/{folder.name}/{p.name}"] = p
    return found


def collect_lineage(
    model: Model, *, source: str | Path | None = None, parent: str | None = None
) -> dict[str, Any]:
    """Where the model came from: ferry's provenance metadata, the convert/deploy report and
    optimize recipe found beside it (stored with the version under ``lineage/``), the source
    file's digest, the parent version, tool versions, and who added it when. The stored files
    are under the ``"_files"`` key (``{relative name: file}``)."""
    import onnx
    import onnxruntime

    assert model.path is not None
    lineage: dict[str, Any] = {
        "ferry": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "added_from": str(model.path.resolve()),
        "opsets": model.opset_imports,
        "producer": model.producer,
    }
    for key, value in model.metadata_props.items():
        if key.startswith("onnxferry."):
            lineage[key.removeprefix("onnxferry.")] = value
    if source is not None:
        lineage["source"] = {
            "path": str(Path(source).resolve()),
            "sha256": file_fact(Path(source)).sha256,
        }
    if parent is not None:
        lineage["parent"] = parent
    stored: dict[str, Path] = {}
    beside = model.path.parent
    recipe = beside / f"{model.path.stem}.recipe.toml"
    if recipe.is_file():
        stored[f"{LINEAGE}/{recipe.name}"] = recipe
        lineage["recipe"] = recipe.read_text(encoding="utf-8", errors="replace")
    report = beside / "report.json"
    if report.is_file():
        stored[f"{LINEAGE}/report.json"] = report
        lineage["report"] = _report_summary(report)
    lineage["_files"] = stored
    return lineage


def _report_summary(path: Path) -> dict[str, Any]:
    """The verb and the stages' verdicts of a ferry report (the whole file is stored)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"file": path.name, "readable": False}
    summary: dict[str, Any] = {"file": path.name, "verb": data.get("verb"), "ok": data.get("ok")}
    result = data.get("result")
    if isinstance(result, dict) and isinstance(result.get("stages"), list):
        summary["stages"] = {
            str(s.get("verb")): s.get("ok") for s in result["stages"] if isinstance(s, dict)
        }
        summary["source"] = result.get("source")
    return summary


def _signature(model: Path, sign_key: str | Path | None, tmp: Path) -> Path | None:
    if sign_key is not None:
        from ..signing import sign

        return sign(model, sign_key, tmp / f"{model.name}.sig")
    beside = default_signature(model)
    return beside if beside.is_file() else None


def _encrypter(key: bytes | None, names: set[str]) -> Callable[[str, bytes], bytes] | None:
    if key is None:
        return None
    from .crypto import encrypt

    def seal(rel: str, data: bytes) -> bytes:
        return encrypt(key, data, rel) if rel in names else data

    return seal
