"""Registry export and import (onnxferry.registry.bundle, `ferry registry export/import`):
round trips of clear and encrypted versions, tampered and forged bundles, and malicious tars
that must be refused, one line, with nothing written outside."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from onnxferry.data import save_test_case
from onnxferry.errors import InputError, UsageError, VerificationError
from onnxferry.model import Model
from onnxferry.registry import Registry
from onnxferry.registry.access import opened
from onnxferry.registry.bundle import MANIFEST, export_version, import_bundle
from onnxferry.registry.crypto import KEY_ENV, generate_key, load_key
from onnxferry.runtime import OrtRunner
from onnxferry.signing import generate_keys
from tests.helpers import Run, mlp, mlp_feeds, save_external

Keys = tuple[Path, Path]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """out/model.onnx with its weights in out/weights.bin, and golden data in out/golden."""
    out = tmp_path_factory.mktemp("out")
    path = save_external(mlp(hidden=16), out / "model.onnx")
    feeds = mlp_feeds(1, seed=7)[0]  # not seed 0: mlp(seed=0) draws its weights from it
    outputs = OrtRunner(Model.load(path)).run(feeds)
    save_test_case(out / "golden" / "test_data_set_0", feeds, outputs)
    return out


@pytest.fixture
def source(tmp_path: Path, model_dir: Path, keys: Keys) -> Registry:
    """A registry with mlp:1, signed, with external data and golden data."""
    reg = Registry.open(tmp_path / "source", create=True)
    reg.add(model_dir / "model.onnx", "mlp", golden=model_dir / "golden", sign_key=keys[0])
    return reg


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _stored_folders(reg: Registry) -> list[Path]:
    root = Path(reg.store.root)
    return list(root.glob("*/*")) if root.is_dir() else []


def _outputs(reg: Registry, ref: str, key: bytes | None = None) -> dict[str, np.ndarray]:
    with opened(reg, reg.get(ref), key=key) as version:
        return OrtRunner(version.model).run(mlp_feeds(1)[0])


# --- round trips -----------------------------------------------------------------------------


def test_export_import_round_trip_verifies_and_keeps_everything(
    source: Registry, tmp_path: Path, keys: Keys
) -> None:
    original = source.get("mlp:1")
    bundle = export_version(source, "mlp:1", tmp_path / "mlp-1.tar")
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    assert names[0] == MANIFEST
    assert sorted(names[1:]) == sorted(f"files/{rel}" for rel in original.files)
    assert {"model.onnx", "weights.bin", "model.onnx.sig"} <= set(original.files)
    assert any(rel.startswith("golden/") for rel in original.files)
    assert manifest["files"] == {k: v.to_dict() for k, v in original.files.items()}
    assert (manifest["name"], manifest["version"], manifest["digest"]) == (
        "mlp",
        1,
        original.digest,
    )
    assert manifest["encrypted"] is False
    assert manifest["lineage"] == original.lineage
    # The same version exports to the same bytes.
    again = export_version(source, "mlp:1", tmp_path / "again.tar")
    assert again.read_bytes() == bundle.read_bytes()

    target = Registry.open(tmp_path / "target", create=True)
    record = import_bundle(target, bundle, public_key=keys[1])
    assert record.ref == "mlp:1"
    assert (record.digest, record.size, record.files) == (
        original.digest,
        original.size,
        original.files,
    )
    assert record.signature == original.signature and record.golden == original.golden
    imported = record.lineage.pop("imported_from")
    assert record.lineage == original.lineage
    assert imported["ref"] == "mlp:1" and imported["verified"] is True
    assert imported["bundle_sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    for rel in original.files:  # stored byte for byte
        assert target.store.read_bytes(record.location, rel) == source.store.read_bytes(
            original.location, rel
        )
    np.testing.assert_array_equal(
        _outputs(target, "mlp:1")["probs"], _outputs(source, "mlp:1")["probs"]
    )

    # Imported again, and under another name: the next version of each.
    assert import_bundle(target, bundle).ref == "mlp:2"
    renamed = import_bundle(target, bundle, name="shared")
    assert renamed.ref == "shared:1"
    assert renamed.lineage["imported_from"]["ref"] == "mlp:1"
    # Exported from the importer and imported once more: the earlier step is kept.
    chain = import_bundle(source, export_version(target, "shared:1", tmp_path))
    assert chain.ref == "shared:1"
    assert chain.lineage["imported_from"]["ref"] == "shared:1"
    assert chain.lineage["imported_from"]["earlier"]["ref"] == "mlp:1"


def test_cli_export_import(ferry: Run, source: Registry, tmp_path: Path, keys: Keys) -> None:
    code, out, err = ferry(
        "registry", "export", "mlp@latest", "--registry", source.path, "-o", tmp_path / "b.tar"
    )
    assert code == 2 and err.count("\n") == 1 and "no alias 'latest'" in err
    code, out, err = ferry(
        "registry", "export", "mlp", "--registry", source.path, "-o", tmp_path, "--json"
    )
    assert code == 0, err
    fields = json.loads(out)
    assert fields["bundle"] == str(tmp_path / "mlp-1.tar")
    assert (fields["version"], fields["signed"], fields["encrypted"]) == ("mlp:1", "yes", "no")

    target = tmp_path / "target"
    args = ("registry", "import", fields["bundle"], "--registry", target)
    code, out, err = ferry(*args, "--public-key", keys[1], "--json")
    assert code == 0, err
    shown = json.loads(out)["result"]
    assert (shown["name"], shown["version"], shown["signed"]) == ("mlp", 1, True)
    assert shown["lineage"]["imported_from"]["verified"] is True

    other = generate_keys(tmp_path / "other-keys")
    code, out, err = ferry(*args, "--public-key", other[1])
    assert code == 1 and err.count("\n") == 1 and "does not verify" in err, err
    assert [v.ref for v in Registry.open(target).versions()] == ["mlp:1"]


def test_gzipped_bundle_is_accepted(source: Registry, tmp_path: Path) -> None:
    bundle = export_version(source, "mlp:1", tmp_path / "b.tar")
    zipped = tmp_path / "b.tar.gz"
    zipped.write_bytes(gzip.compress(bundle.read_bytes()))
    target = Registry.open(tmp_path / "target", create=True)
    assert import_bundle(target, zipped).files == source.get("mlp:1").files


def test_export_refuses_a_damaged_version_and_leaves_no_file(
    source: Registry, tmp_path: Path
) -> None:
    record = source.get("mlp:1")
    stored = Path(source.store.path(record.location, "weights.bin"))
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x01")
    out = tmp_path / "bundles"
    out.mkdir()
    with pytest.raises(InputError, match="does not match its recorded digest"):
        export_version(source, "mlp:1", out / "b.tar")
    assert list(out.iterdir()) == []
    stored.write_bytes(stored.read_bytes()[:-10])  # shorter than recorded
    with pytest.raises(InputError, match=r"cannot read stored file .*weights\.bin"):
        export_version(source, "mlp:1", out / "b.tar")
    assert list(out.iterdir()) == []


# --- what import refuses ---------------------------------------------------------------------


def _rewrite(
    bundle: Path,
    out: Path,
    change: Callable[[str, bytes], bytes | None] = lambda name, data: data,
    extra: list[tuple[tarfile.TarInfo, bytes | None]] | None = None,
) -> Path:
    """``bundle`` copied to ``out`` with each member's bytes passed through ``change`` (None
    drops it) and ``extra`` members appended."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            f = src.extractfile(member)
            assert f is not None
            data = change(member.name, f.read())
            if data is not None:
                member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
        for info, data in extra or []:
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def _edit_manifest(data: bytes, **fields: object) -> bytes:
    manifest = json.loads(data)
    manifest.update(fields)
    return json.dumps(manifest).encode()


def test_tampered_file_is_refused_and_nothing_registered(
    source: Registry, tmp_path: Path, keys: Keys
) -> None:
    bundle = export_version(source, "mlp:1", tmp_path / "b.tar")
    flipped = _rewrite(
        bundle,
        tmp_path / "flipped.tar",
        lambda n, d: d[:-1] + bytes([d[-1] ^ 1]) if n == "files/weights.bin" else d,
    )
    target = Registry.open(tmp_path / "target", create=True)
    with pytest.raises(VerificationError, match=r"weights\.bin does not match the sha256"):
        import_bundle(target, flipped)
    assert target.versions() == [] and _stored_folders(target) == []

    # A forger who fixes the manifest's sha256 too: the model's digest gives it away, and with
    # the digest fixed as well, the signature does.
    def forge(name: str, data: bytes, digest: bool = False) -> bytes:
        if name == "files/weights.bin":
            return data[:-1] + bytes([data[-1] ^ 1])
        if name != MANIFEST:
            return data
        weights = bytearray(source.store.read_bytes(source.get("mlp:1").location, "weights.bin"))
        weights[-1] ^= 1
        manifest = json.loads(data)
        manifest["files"]["weights.bin"]["sha256"] = hashlib.sha256(weights).hexdigest()
        if digest:
            model = source.store.read_bytes(source.get("mlp:1").location, "model.onnx")
            manifest["digest"] = hashlib.sha256(model + bytes(weights)).hexdigest()
        return json.dumps(manifest).encode()

    forged = _rewrite(bundle, tmp_path / "forged.tar", forge)
    with pytest.raises(VerificationError, match="digest is not the one its manifest names"):
        import_bundle(target, forged)
    forged = _rewrite(bundle, tmp_path / "forged2.tar", lambda n, d: forge(n, d, digest=True))
    with pytest.raises(VerificationError, match=r"weights.bin: changed since it was signed"):
        import_bundle(target, forged, public_key=keys[1])
    assert target.versions() == [] and _stored_folders(target) == []


def test_unsigned_bundle_with_public_key_is_refused(
    ferry: Run, tmp_path: Path, model_dir: Path, keys: Keys
) -> None:
    source = Registry.open(tmp_path / "source", create=True)
    source.add(model_dir / "model.onnx", "mlp")
    bundle = export_version(source, "mlp:1", tmp_path / "b.tar")
    target = tmp_path / "target"
    args = ("registry", "import", bundle, "--registry", target)
    code, _, err = ferry(*args, "--public-key", keys[1])
    assert code == 1 and err.count("\n") == 1 and "mlp:1 is unsigned" in err, err
    assert Registry.open(target).versions() == []
    code, _, err = ferry(*args)
    assert code == 0, err


def test_manifest_and_member_mismatches_are_refused(source: Registry, tmp_path: Path) -> None:
    bundle = export_version(source, "mlp:1", tmp_path / "b.tar")
    target = Registry.open(tmp_path / "target", create=True)
    cases: list[tuple[Callable[[str, bytes], bytes | None], type[Exception], str]] = [
        (
            lambda n, d: None if n == "files/weights.bin" else d,
            VerificationError,
            "not in the bundle",
        ),
        (lambda n, d: None if n == MANIFEST else d, InputError, "no manifest.json"),
        (lambda n, d: b"{not json" if n == MANIFEST else d, InputError, "is not JSON"),
        (
            lambda n, d: _edit_manifest(d, format_version=99) if n == MANIFEST else d,
            InputError,
            "format version 99",
        ),
        (
            lambda n, d: (
                _edit_manifest(d, files={"../x": {"sha256": "0" * 64, "size": 1}})
                if n == MANIFEST
                else d
            ),
            InputError,
            "bad file name",
        ),
        (
            lambda n, d: _edit_manifest(d, name="../up") if n == MANIFEST else d,
            InputError,
            "bad name",
        ),
    ]
    for i, (change, error, message) in enumerate(cases):
        with pytest.raises(error, match=message):
            import_bundle(target, _rewrite(bundle, tmp_path / f"case{i}.tar", change))
    extra = tarfile.TarInfo("files/stray.txt")
    extra.size = 2
    with pytest.raises(InputError, match=r"'files/stray\.txt' is not in its manifest"):
        import_bundle(target, _rewrite(bundle, tmp_path / "stray.tar", extra=[(extra, b"hi")]))
    with pytest.raises(UsageError, match="not a model name"):
        import_bundle(target, bundle, name="a/b")
    with pytest.raises(InputError, match="more than 3 members"):
        import_bundle(target, bundle, max_members=3)
    with pytest.raises(InputError, match="more than the 100 allowed"):
        import_bundle(target, bundle, max_bytes=100)
    assert target.versions() == [] and _stored_folders(target) == []


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def _malicious(outside: Path) -> dict[str, tuple[list[tuple[tarfile.TarInfo, bytes | None]], str]]:
    """Members a bundle must not have, each with what the error says. ``outside``: a folder
    where an absolute member would land."""
    evil = b"evil"
    return {
        "dotdot": ([(_info("../evil", size=4), evil)], "'..'"),
        "deep-dotdot": ([(_info("files/../../evil", size=4), evil)], "'..'"),
        "absolute": ([(_info(str(outside / "evil"), size=4), evil)], "absolute name"),
        "symlink": ([(_info("files/link", tarfile.SYMTYPE, link=str(outside)), None)], "symbolic"),
        "symlink-then-write": (
            [
                (_info("files/escape", tarfile.SYMTYPE, link="../../.."), None),
                (_info("files/escape/evil", size=4), evil),
            ],
            "symbolic link",
        ),
        "hardlink": ([(_info("files/hard", tarfile.LNKTYPE, link=MANIFEST), None)], "hard link"),
        "hardlink-out": (
            [(_info("files/hard", tarfile.LNKTYPE, link=str(outside / "x")), None)],
            "hard link",
        ),
        "fifo": ([(_info("files/fifo", tarfile.FIFOTYPE), None)], "not a regular file"),
        "device": ([(_info("files/dev", tarfile.CHRTYPE), None)], "not a regular file"),
        "backslash": ([(_info("files\\..\\evil", size=4), evil)], "backslash"),
        "duplicate": ([(_info(MANIFEST, size=4), evil)], "appears twice"),
        "elsewhere": ([(_info("evil.txt", size=4), evil)], "unexpected member"),
    }


@pytest.mark.parametrize("case", sorted(_malicious(Path("/x"))))
def test_malicious_tar_is_refused_one_line_nothing_written_outside(
    ferry: Run, source: Registry, tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    bundle = export_version(source, "mlp:1", tmp_path / "b.tar")
    members, message = _malicious(outside)[case]
    # The evil members first (before the manifest is read) and, in a second tar, last.
    first = tmp_path / "first.tar"
    with tarfile.open(first, "w") as dst:
        for info, data in members:
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    last = _rewrite(bundle, tmp_path / "last.tar", extra=members)
    work = tmp_path / "work"  # the import runs from here; the registry is made here
    work.mkdir()
    monkeypatch.chdir(work)
    before = _tree(tmp_path)
    temp_before = set(Path(tempfile.gettempdir()).glob("ferry-import-*"))
    for evil_tar in (first, last) if case != "duplicate" else (last,):
        code, out, err = ferry("registry", "import", evil_tar, "--registry", work / "reg")
        assert code == 2, (case, out, err)
        assert err.count("\n") == 1 and message in err, (case, err)
        assert "Traceback" not in err
    assert _tree(tmp_path) - before <= {"work/reg", "work/reg/catalog.db", "work/reg/store"} | {
        p for p in _tree(tmp_path) if p.startswith("work/reg/catalog.db-")
    }
    assert list(outside.iterdir()) == []
    assert set(Path(tempfile.gettempdir()).glob("ferry-import-*")) == temp_before
    assert Registry.open(work / "reg").versions() == []
    assert list((work / "reg" / "store").iterdir()) == []


def test_not_a_bundle_is_one_line(ferry: Run, source: Registry, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(3000))
    bundle = export_version(source, "mlp:1", tmp_path / "b.tar")
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(bundle.read_bytes()[:1500])
    for path, message in (
        (junk, "not a tar bundle"),
        (truncated, ""),
        (tmp_path / "missing.tar", "no such file"),
        (tmp_path, "is a folder"),
    ):
        code, _, err = ferry("registry", "import", path, "--registry", tmp_path / "reg")
        assert code in (1, 2) and err.count("\n") == 1 and message in err, (path, err)
        assert "internal error" not in err


# --- encrypted versions ----------------------------------------------------------------------


def test_encrypted_bundle_stays_encrypted(
    ferry: Run,
    tmp_path: Path,
    model_dir: Path,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    key_file = generate_key(tmp_path / "secret.key")
    key = load_key(key_file)
    source = Registry.open(tmp_path / "source", create=True)
    original = source.add(
        model_dir / "model.onnx",
        "mlp",
        golden=model_dir / "golden",
        sign_key=keys[0],
        encrypt_key=key,
    )
    bundle = export_version(source, "mlp:1", tmp_path / "b.tar")
    clear = (model_dir / "weights.bin").read_bytes()
    assert clear[16:48] not in bundle.read_bytes()

    # No key needed to import (checked against the manifest only); it stays encrypted.
    target = Registry.open(tmp_path / "target", create=True)
    record = import_bundle(target, bundle)
    assert record.encrypted and record.files == original.files
    expected = _outputs(source, "mlp:1", key)["probs"]
    np.testing.assert_array_equal(_outputs(target, "mlp:1", key)["probs"], expected)

    # With --public-key the key is needed: the signature covers the clear bytes.
    args = ("registry", "import", bundle, "--registry", tmp_path / "target")
    code, _, err = ferry(*args, "--public-key", keys[1])
    assert code == 2 and err.count("\n") == 1 and "no encryption key" in err, err
    wrong = generate_key(tmp_path / "wrong.key")
    code, _, err = ferry(*args, "--public-key", keys[1], "--encrypt-key-file", wrong)
    assert code == 2 and err.count("\n") == 1 and "cannot decrypt" in err, err
    assert [v.ref for v in target.versions()] == ["mlp:1"]
    code, out, err = ferry(*args, "--public-key", keys[1], "--encrypt-key-file", key_file, "--json")
    assert code == 0, err
    assert json.loads(out)["result"]["encrypted"] is True
    monkeypatch.setenv(KEY_ENV, key_file.read_text().strip())
    assert import_bundle(target, bundle, public_key=keys[1]).ref == "mlp:3"
