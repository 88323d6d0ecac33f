"""The registry's core: adding numbered versions, references, aliases, history, rollback, the
CLI verbs (add, list, show, history --at, rollback, fsck) and their one-line errors."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from onnxferry.data import save_test_case
from onnxferry.errors import InputError, UsageError
from onnxferry.model import Model
from onnxferry.registry import Ref, Registry
from onnxferry.registry.access import verify_version
from onnxferry.runtime import OrtRunner
from onnxferry.signing import generate_keys
from tests.helpers import Run, mlp, mlp_feeds, save, save_external


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save(mlp(0), tmp_path / "out" / "model.onnx")


@pytest.fixture
def golden(tmp_path: Path, model: Path) -> Path:
    feeds = mlp_feeds(1)[0]
    outputs = OrtRunner(Model.load(model)).run(feeds)
    save_test_case(tmp_path / "golden" / "test_data_set_0", feeds, outputs)
    return tmp_path / "golden"


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry.open(tmp_path / "registry", create=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ferry: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- the API ---------------------------------------------------------------------------------


def test_add_records_digest_size_files_and_lineage(reg: Registry, tmp_path: Path) -> None:
    path = save_external(mlp(1), tmp_path / "ext" / "model.onnx")
    (tmp_path / "ext" / "report.json").write_text(
        json.dumps(
            {"verb": "deploy", "ok": True, "result": {"stages": [{"verb": "convert", "ok": True}]}}
        )
    )
    source = tmp_path / "model.pt"
    source.write_bytes(b"torch weights")
    record = reg.add(path, "mlp", source=source, parent="other:3", actor="ci@build")

    assert (record.name, record.version, record.ref) == ("mlp", 1, "mlp:1")
    loaded = Model.load(path)
    assert (record.digest, record.size) == (loaded.digest, loaded.size_bytes)
    assert set(record.files) == {"model.onnx", "weights.bin", "lineage/report.json"}
    for rel, fact in record.files.items():  # what is stored is what was given, byte for byte
        stored = reg.store.local_path(record.location, rel)
        assert stored is not None and stored.is_file()
        assert (fact.sha256, fact.size) == (sha256(stored), stored.stat().st_size)
        assert fact.sha256 == sha256(path.parent / rel.removeprefix("lineage/"))
        assert stored.stat().st_mode & 0o222 == 0  # published read-only
    lineage = record.lineage
    assert lineage["source"] == {"path": str(source.resolve()), "sha256": sha256(source)}
    assert lineage["parent"] == "other:3"
    assert lineage["report"]["stages"] == {"convert": True}
    assert {"ferry", "onnx", "onnxruntime", "python", "opsets"} <= set(lineage)
    assert record.created_by == "ci@build"
    assert record.signature is None and record.golden is None and not record.encrypted
    assert reg.local_files(record, tmp_path / "unused") == reg.store.local_path(
        record.location, "model.onnx"
    )


def test_versions_are_numbered_per_name(reg: Registry, model: Path) -> None:
    numbers = [reg.add(model, name).ref for name in ("a", "a", "b", "a", "b")]
    assert numbers == ["a:1", "a:2", "b:1", "a:3", "b:2"]
    assert [v.ref for v in reg.versions()] == ["a:1", "a:2", "a:3", "b:1", "b:2"]
    assert [v.ref for v in reg.versions("b")] == ["b:1", "b:2"]
    assert reg.names() == ["a", "b"]
    locations = {v.location for v in reg.versions()}
    assert len(locations) == 5  # each version its own folder, never overwritten
    assert reg.fsck().ok


def test_golden_data_and_signature_are_stored(
    reg: Registry, model: Path, golden: Path, tmp_path: Path
) -> None:
    private, public = generate_keys(tmp_path / "keys")
    record = reg.add(model, "mlp", golden=golden, sign_key=private)
    assert record.signature == "model.onnx.sig" and record.golden == "golden"
    assert "golden/test_data_set_0/input_0.pb" in record.files
    assert "golden/test_data_set_0/output_0.pb" in record.files
    assert not (model.parent / "model.onnx.sig").exists()  # the user's folder is untouched
    assert verify_version(reg, record, public).ok


def test_golden_data_that_does_not_fit_is_refused_before_storing(
    reg: Registry, model: Path, tmp_path: Path
) -> None:
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, nope=np.zeros((2, 4), np.float32))
    with pytest.raises(InputError, match="neither an input nor an output"):
        reg.add(model, "mlp", golden=bad)
    assert reg.versions() == []
    assert not any(reg.store.fs.find(reg.store.root))


def test_refs_resolve_versions_and_aliases(reg: Registry, model: Path) -> None:
    for _ in range(3):
        reg.add(model, "m")
    reg.set_alias("m", "production", 2)
    assert reg.get("m").version == 3  # a bare name: the latest
    assert reg.get("m:1").version == 1
    assert reg.get("m@production").version == 2
    assert reg.get(Ref("m", alias="production")).aliases == ("production",)
    assert str(Ref.parse("m@production")) == "m@production"
    assert str(Ref.parse(" m:7 ")) == "m:7"

    with pytest.raises(InputError, match=r"no model 'x'.*known: m"):
        reg.get("x")
    with pytest.raises(InputError, match=r"no version 9.*its versions: 1, 2, 3"):
        reg.get("m:9")
    with pytest.raises(InputError, match=r"no alias 'staging'.*its aliases: production"):
        reg.get("m@staging")
    for bad in ("", "m:", "m@", "m:1@a", "-m", "m/1", "m:x"):
        with pytest.raises(UsageError, match="not a registry reference"):
            Ref.parse(bad)


def test_alias_history_holder_at_and_rollback(reg: Registry, model: Path) -> None:
    for _ in range(3):
        reg.add(model, "m")
    before = reg.set_alias("m", "staging", 1)  # another alias: its own history
    changes = [
        reg.set_alias("m", "production", v, reason=f"release {v}", actor="alice", gates={"ok": v})
        for v in (1, 2, 3)
    ]
    assert [(c.version, c.previous) for c in changes] == [(1, None), (2, 1), (3, 2)]
    history = reg.history("m", "production")
    assert [(c.version, c.reason, c.actor, c.gates) for c in history] == [
        (1, "release 1", "alice", {"ok": 1}),
        (2, "release 2", "alice", {"ok": 2}),
        (3, "release 3", "alice", {"ok": 3}),
    ]
    assert [c.alias for c in reg.history("m")] == ["staging"] + ["production"] * 3

    assert reg.holder_at("m", "production", before.at) is None
    for change in changes:
        assert reg.holder_at("m", "production", change.at) == change.version
    assert reg.holder_at("m", "staging", changes[-1].at) == 1

    back = reg.rollback("m", "production", actor="bob")
    assert (back.version, back.previous, back.action, back.actor) == (2, 3, "rollback", "bob")
    assert back.reason == "rolled back from 3"
    assert reg.rollback("m", "production").version == 1  # 2 was rolled back from, not to 3
    with pytest.raises(InputError, match="no earlier version"):
        reg.rollback("m", "production")
    with pytest.raises(InputError, match="no alias 'canary'"):
        reg.rollback("m", "canary")

    removed = reg.set_alias("m", "staging", None, reason="retired")
    assert (removed.version, removed.previous) == (None, 1)
    assert "staging" not in reg.aliases("m")
    assert reg.holder_at("m", "staging", removed.at) is None


def test_set_alias_refuses_a_stale_expectation_and_unknown_versions(
    reg: Registry, model: Path
) -> None:
    reg.add(model, "m")
    reg.add(model, "m")
    reg.set_alias("m", "production", 1, expect=None)
    with pytest.raises(InputError, match="changed while this ran"):
        reg.set_alias("m", "production", 2, expect=None)
    with pytest.raises(InputError, match="no version 5"):
        reg.set_alias("m", "production", 5)
    with pytest.raises(UsageError, match="not an alias name"):
        reg.set_alias("m", "prod/1", 1)
    assert reg.aliases("m") == {"production": 1}
    assert len(reg.history("m")) == 1  # refused changes leave no trace


def test_open_refuses_missing_and_foreign_registries(tmp_path: Path, model: Path) -> None:
    with pytest.raises(InputError, match="no registry here"):
        Registry.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no registry here"):
        Registry.open(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "catalog.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(InputError, match="not a registry catalog"):
        Registry.open(tmp_path / "junk")
    reg = Registry.open(tmp_path / "r", create=True, store=str(tmp_path / "elsewhere"))
    reg.add(model, "m")
    assert (tmp_path / "elsewhere" / "m").is_dir()
    assert Registry.open(tmp_path / "r").store.root == str(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="keeps its artifacts in"):
        Registry.open(tmp_path / "r", store=str(tmp_path / "other"))


def test_open_while_another_process_is_still_making_the_catalog(tmp_path: Path) -> None:
    # The file exists (sqlite made it) but its schema is not committed yet: not an error.
    (tmp_path / "r").mkdir()
    sqlite3.connect(tmp_path / "r" / "catalog.db").close()
    reg = Registry.open(tmp_path / "r", create=True)
    assert reg.names() == []


# --- fsck ------------------------------------------------------------------------------------


def test_fsck_finds_damage_and_leftovers_and_repairs_leftovers_only(
    reg: Registry, model: Path, golden: Path
) -> None:
    good = reg.add(model, "m", golden=golden)
    bad = reg.add(model, "m")
    clean = reg.fsck()
    assert clean.ok and clean.result.findings == [] and clean.result.files == len(good.files) + 1
    store = Path(reg.store.root)

    damaged = store / bad.location / "model.onnx"
    damaged.chmod(0o644)
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")  # same size, other bytes
    (store / good.location / "golden" / "test_data_set_0" / "output_0.pb").unlink()
    (store / good.location / "extra.txt").write_text("slipped in")
    orphan = store / "m" / "0123456789abcdef"  # published, then killed before its catalog row
    orphan.mkdir()
    (orphan / "model.onnx").write_bytes(b"x")
    dead = store / "m" / ".partial-999999999-feed"  # a staging folder of a process that is gone
    dead.mkdir()
    live = store / "m" / f".partial-{os.getpid()}-beef"  # one being written right now
    live.mkdir()
    (store / "gone" / "0123").mkdir(parents=True)  # a model whose first add never committed

    report = reg.fsck()
    result = report.result
    assert not report.ok and report.exit_code == 1
    kinds = {(f.kind, f.where) for f in result.findings}
    assert kinds == {
        ("changed", "m:2 model.onnx"),
        ("missing", "m:1 golden/test_data_set_0/output_0.pb"),
        ("unrecorded", "m:1 extra.txt"),
        ("orphan", "m/0123456789abcdef"),
        ("partial", "m/.partial-999999999-feed"),
        ("orphan", "gone/0123"),
    }
    assert result.in_progress == 1
    assert orphan.exists() and dead.exists()  # only looked

    repaired = reg.fsck(repair=True).result
    assert sorted(repaired.removed) == [
        "gone/0123",
        "m/.partial-999999999-feed",
        "m/0123456789abcdef",
    ]
    assert not orphan.exists() and not dead.exists() and live.exists()
    assert damaged.exists()  # damage is reported, never "repaired" away
    after = reg.fsck().result
    assert after.leftovers == [] and {f.kind for f in after.findings} == {
        "changed",
        "missing",
        "unrecorded",
    }


def test_fsck_reports_a_damaged_catalog(reg: Registry, model: Path) -> None:
    for _ in range(3):
        reg.add(model, "m")
        reg.set_alias("m", "production", reg.get("m").version)
    db = sqlite3.connect(reg.catalog.path)
    db.execute("INSERT INTO aliases VALUES ('m', 'canary', 42, 0)")  # foreign keys are off here
    db.execute("PRAGMA writable_schema=ON")  # an index that no longer matches its rows
    db.execute(
        "UPDATE sqlite_master SET sql = 'CREATE INDEX history_by_alias ON history "
        "(alias, name, at)' WHERE name = 'history_by_alias'"
    )
    db.commit()
    db.close()
    report = Registry.open(reg.path).fsck()
    assert not report.ok and report.exit_code == 1
    details = [f.detail for f in report.result.findings if f.kind == "catalog"]
    assert len(details) == 2
    assert "missing from index history_by_alias" in details[0] == report.result.integrity
    assert "1 row(s) refer to missing rows (first: table aliases)" in details[1]


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_add_list_show(ferry: Run, tmp_path: Path, model: Path, golden: Path) -> None:
    registry = tmp_path / "registry"
    private, _ = generate_keys(tmp_path / "keys")
    code, out, err = ferry(
        "registry", "add", model, "--name", "mlp", "--golden", golden, "--sign-key", private,
        "--registry", registry, "--json",
    )  # fmt: skip
    assert code == 0, err
    added = json.loads(out)["result"]
    assert (added["name"], added["version"], added["signed"], added["golden"]) == (
        "mlp", 1, True, True,
    )  # fmt: skip
    assert added["digest"] == Model.load(model).digest
    code, out, err = ferry("registry", "add", model, "--name", "mlp", "--registry", registry)
    assert code == 0 and "mlp:2" in out, err

    code, out, err = ferry("registry", "list", "--registry", registry, "--json")
    assert code == 0, err
    listed = json.loads(out)["result"]["versions"]
    assert [(v["name"], v["version"], v["signed"]) for v in listed] == [
        ("mlp", 1, True),
        ("mlp", 2, False),
    ]
    code, out, _ = ferry("registry", "list", "--registry", registry)
    assert "mlp:1" in out and "mlp:2" in out

    code, out, err = ferry("registry", "show", "mlp:1", "--registry", registry, "--json")
    assert code == 0, err
    shown = json.loads(out)["result"]
    assert shown["files"]["model.onnx"]["sha256"] == sha256(model)
    assert shown["lineage"]["added_from"] == str(model.resolve())
    code, out, _ = ferry("registry", "show", "mlp", "--registry", registry)
    assert code == 0 and "mlp:2" in out


def test_cli_history_at_a_time_and_rollback(
    ferry: Run, tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = tmp_path / "registry"
    reg = Registry.open(registry, create=True)
    for _ in range(3):
        reg.add(model, "m")
    first = reg.set_alias("m", "production", 1, actor="alice", reason="launch")
    staging = reg.set_alias("m", "staging", 2)
    reg.set_alias("m", "production", 2, actor="alice", reason="better")
    reg.set_alias("m", "production", 3, actor="carol", reason="faster")

    code, out, err = ferry("registry", "history", "m", "--registry", registry, "--json")
    assert code == 0, err
    rows = json.loads(out)["result"]["history"]
    assert [(r["alias"], r["version"], r["previous"], r["actor"], r["reason"]) for r in rows] == [
        ("production", 1, None, "alice", "launch"),
        ("staging", 2, None, staging.actor, ""),
        ("production", 2, 1, "alice", "better"),
        ("production", 3, 2, "carol", "faster"),
    ]

    # "what was serving at that moment": local time without a zone, and UTC with one
    moment = (first.at + staging.at) / 2
    local = datetime.datetime.fromtimestamp(moment).isoformat()
    utc = datetime.datetime.fromtimestamp(moment, tz=datetime.timezone.utc).isoformat()
    for when in (local, utc):
        code, out, err = ferry(
            "registry", "history", "m", "--alias", "production", "--at", when,
            "--registry", registry, "--json",
        )  # fmt: skip
        assert code == 0, err
        held = json.loads(out)["result"]["history"]
        assert [(r["alias"], r["version"]) for r in held] == [("production", 1)]
    code, out, _ = ferry("registry", "history", "m", "--at", utc, "--registry", registry)
    assert code == 0 and "production" in out and "staging" not in out  # staging came later

    monkeypatch.setenv("FERRY_ACTOR", "oncall")
    code, out, err = ferry(
        "registry", "rollback", "m", "--alias", "production", "--reason", "p99 regression",
        "--registry", registry, "--json",
    )  # fmt: skip
    assert code == 0, err
    (change,) = json.loads(out)["result"]["history"]
    assert (change["version"], change["previous"], change["action"]) == (2, 3, "rollback")
    assert (change["actor"], change["reason"]) == ("oncall", "p99 regression")
    assert reg.get("m@production").version == 2
    code, _, _ = ferry("registry", "rollback", "m", "--registry", registry)
    assert code == 0 and reg.get("m@production").version == 1
    code, _, err = ferry("registry", "rollback", "m", "--registry", registry)
    assert code == 2 and "no earlier version" in one_error_line(err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "m:9"), "m has no version 9"),
        (("show", "nope"), "no model 'nope'"),
        (("show", "m@canary"), "m has no alias 'canary'"),
        (("show", "m/1"), "is not a registry reference"),
        (("history", "m", "--at", "last tuesday"), "is not a time"),
        (("rollback", "m", "--alias", "production"), "m has no alias 'production'"),
        (("add", "missing.onnx", "--name", "m"), "missing.onnx"),
        (("add", "MODEL", "--name", "bad/name"), "is not a model name"),
        (("add", "MODEL", "--name", "m", "--store", "/elsewhere"), "keeps its artifacts in"),
        (("add", "MODEL", "--name", "m", "--sign-key", "nokey.pem"), "nokey.pem"),
    ],
)
def test_cli_errors_are_one_line_with_exit_2(
    ferry: Run, tmp_path: Path, model: Path, args: tuple[str, ...], message: str
) -> None:
    registry = tmp_path / "registry"
    Registry.open(registry, create=True).add(model, "m")
    argv = [str(model) if a == "MODEL" else a for a in args]
    code, _, err = ferry("registry", *argv, "--registry", registry)
    assert code == 2, err
    assert message in one_error_line(err)
    assert [v.ref for v in Registry.open(registry).versions()] == ["m:1"]


def test_cli_on_a_missing_registry_is_one_line(ferry: Run, tmp_path: Path) -> None:
    for verb in (("list",), ("show", "m"), ("history",), ("fsck",)):
        code, _, err = ferry("registry", *verb, "--registry", tmp_path / "nothing")
        assert code == 2 and "no registry here" in one_error_line(err)
    assert not (tmp_path / "nothing").exists()  # reading never creates a registry


def test_cli_fsck(ferry: Run, tmp_path: Path, model: Path) -> None:
    registry = tmp_path / "registry"
    reg = Registry.open(registry, create=True)
    record = reg.add(model, "m")
    code, out, err = ferry("registry", "fsck", "--registry", registry)
    assert code == 0 and "registry fsck: ok" in out, err
    orphan = registry / "store" / "m" / "feedfacefeedface"
    orphan.mkdir()
    code, out, _ = ferry("registry", "fsck", "--registry", registry, "--json")
    result = json.loads(out)["result"]
    assert code == 0 and result["leftovers"] == 1 and orphan.exists()
    code, out, _ = ferry("registry", "fsck", "--repair", "--registry", registry, "--json")
    assert code == 0 and json.loads(out)["result"]["removed"] == ["m/feedfacefeedface"]
    assert not orphan.exists()
    stored = registry / "store" / record.location / "model.onnx"
    stored.chmod(0o644)
    stored.write_bytes(b"tampered")
    code, out, _ = ferry("registry", "fsck", "--registry", registry)
    assert code == 1 and "changed" in out and "registry fsck: FAILED" in out
