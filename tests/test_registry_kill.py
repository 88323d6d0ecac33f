"""kill -9 during `ferry registry export` and `ferry follow --once`: real processes, SIGKILL
at random moments (a seeded RNG), many times over. After each kill: the output folder holds
no bundle or a complete one that imports and round-trips, the source registry is unchanged and
sound; a device's ``current`` and ``previous`` point at complete versions whose files match
their records, and nothing half-installed is reachable through them. A last run that is not
killed finishes the work (resuming or discarding what the killed ones left).

The kills of `add` and alias changes are in test_registry_reliability.py."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onnxferry import Model
from onnxferry.errors import FerryError
from onnxferry.registry import Registry, VersionRecord
from onnxferry.registry.bundle import import_bundle
from onnxferry.registry.follow import (
    CURRENT,
    PARTIAL,
    PREVIOUS,
    RECORD,
    VERSIONS,
    follow_once,
    state,
)
from onnxferry.registry.store import FileFact, file_fact
from onnxferry.serve.registry_http import running_registry
from tests.helpers import mlp, save, save_external
from tests.test_registry_reliability import FERRY, assert_sound, run_script

KILLS = 10


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``; it may have finished already, but only well."""
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode in (-signal.SIGKILL, 0), err.decode(errors="replace")


def _wait_for(proc: subprocess.Popen[bytes], ready: Callable[[], bool], limit: float = 60) -> None:
    """Poll until ``ready()`` or ``proc`` has ended."""
    deadline = time.monotonic() + limit
    while not ready() and proc.poll() is None:
        assert time.monotonic() < deadline, "the process never got there"
        time.sleep(0.002)


def _reached(measure: Callable[[], int], at: float) -> Callable[[], bool]:
    """Whether ``measure()`` (bytes written so far) reached ``at``, or is -1 (all done)."""
    return lambda: not 0 <= measure() < at


def _files(folder: Path) -> set[str]:
    """Every file and link under ``folder``, as relative names."""
    return {
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_symlink() or not p.is_dir()
    }


# --- export ----------------------------------------------------------------------------------


def _snapshot(reg: Registry) -> tuple[Any, ...]:
    """What the registry holds: its records, aliases, history, and every stored file's size,
    mode and modification time."""
    root = Path(reg.store.root)
    stored = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        stored[str(p.relative_to(root))] = (st.st_size, st.st_mode, st.st_mtime_ns)
    return (
        [v.to_dict() for v in reg.versions()],
        reg.aliases("m"),
        [c.to_dict() for c in reg.history("m")],
        stored,
    )


def _export(reg: Registry, out: Path) -> subprocess.Popen[bytes]:
    """`ferry registry export m:1 -o OUT/bundle.tar` started."""
    argv = [*FERRY, "registry", "export", "m:1", "-o", str(out / "bundle.tar")]
    return subprocess.Popen(
        [*argv, "--registry", str(reg.path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


TEMP = re.compile(r"\.bundle\.tar\.[0-9]+-[0-9a-f]+\.tmp")
"""A bundle being written (atomic_write's temporary name)."""


def _written(out: Path, earlier: int | None) -> int:
    """Bytes of the bundle being written in ``out``; -1 once it is in place (a new file, not
    the ``earlier`` one)."""
    bundle = out / "bundle.tar"
    try:
        if bundle.stat().st_ino != earlier:
            return -1
    except FileNotFoundError:
        pass
    sizes = []
    for p in out.iterdir():
        if TEMP.fullmatch(p.name):
            with contextlib.suppress(FileNotFoundError):  # renamed in the meantime
                sizes.append(p.stat().st_size)
    return max(sizes, default=0)


@pytest.mark.slow
def test_sigkill_during_export_leaves_no_bundle_or_a_whole_one(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path / "registry", create=True)
    model = save_external(mlp(1, hidden=1 << 19), tmp_path / "big" / "model.onnx")  # 16 MB
    record = reg.add(model, "m")
    reg.set_alias("m", "production", 1)
    before = _snapshot(reg)

    reference = tmp_path / "reference"  # one whole export, timed to aim the kills
    reference.mkdir()
    started = time.monotonic()
    proc = _export(reg, reference)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 0, err.decode()
    whole = file_fact(reference / "bundle.tar")  # export is deterministic: every whole one is this
    other = Registry.open(tmp_path / "other", create=True)

    def round_trips(bundle: Path) -> None:
        imported = import_bundle(other, bundle)
        assert (imported.digest, imported.files) == (record.digest, record.files)
        assert imported.lineage["imported_from"]["ref"] == "m:1"

    round_trips(reference / "bundle.tar")
    rng = random.Random(20261204)
    seen: Counter[str] = Counter()
    for i in range(KILLS):
        out = tmp_path / f"out{i}"
        out.mkdir()
        bundle = out / "bundle.tar"
        had = i % 2 == 1  # an earlier bundle there: a killed export leaves it whole
        if had:
            shutil.copyfile(reference / "bundle.tar", bundle)
        earlier = bundle.stat().st_ino if had else None

        def written(out: Path = out, earlier: int | None = earlier) -> int:
            return _written(out, earlier)

        proc = _export(reg, out)
        if i % 3 == 0:  # anywhere: starting, opening the registry, writing, renaming
            time.sleep(rng.uniform(0.0, took * 1.2))
        elif i % 3 == 1:  # at a random byte of the bundle
            at = rng.uniform(0.02, 0.98) * whole.size
            _wait_for(proc, _reached(written, at))
        else:  # its last byte written: syncing, renaming
            _wait_for(proc, _reached(written, whole.size))
            time.sleep(rng.uniform(0.0, 0.02))
        _kill(proc)

        names = sorted(p.name for p in out.iterdir())
        strays = [n for n in names if n != bundle.name]
        assert all(TEMP.fullmatch(n) for n in strays), names  # nothing else, no bundle's name
        if had:
            assert bundle.exists()  # the earlier bundle, or the new one: never none
        if bundle.exists():
            assert file_fact(bundle) == whole  # complete: byte for byte a whole export
            if bundle.stat().st_ino != earlier:  # written by the killed export
                round_trips(bundle)
                seen["whole"] += 1
        for stray in strays:  # a killed export's temporary file
            left = out / stray
            if file_fact(left) == whole:  # killed between its last write and the rename
                continue
            count = len(other.versions())
            with pytest.raises(FerryError):
                import_bundle(other, left)  # half a bundle is refused, nothing registered
            assert len(other.versions()) == count
            seen["cut short"] += 1

        assert _snapshot(reg) == before  # the source registry is unchanged, and sound
        assert reg.catalog.integrity() == "ok"
        report = reg.fsck()
        assert report.ok and report.result.findings == [], report.to_text()

    assert seen["cut short"] >= 2, seen  # the kills did land while the bundle was written
    assert_sound(other)
    assert other.fsck().result.findings == []


# --- follow ----------------------------------------------------------------------------------


def _id(record: VersionRecord) -> str:
    return f"{record.name}-{record.version}-{record.digest[:12]}"


def _installed(dest: Path, link: str, records: dict[int, VersionRecord]) -> int | None:
    """The version ``dest/link`` points at, checked whole: its folder holds exactly the
    record's files and its record, each file matching the registry's sha256 and size."""
    path = dest / link
    if not os.path.lexists(path):
        return None
    assert path.is_symlink(), f"{link} is not a link"
    target = os.readlink(path)
    folder = dest / target
    assert folder.is_dir(), f"{link} -> {target} dangles"
    wire = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    record = records[wire["version"]]
    assert target == f"{VERSIONS}/{_id(record)}"
    assert wire["digest"] == record.digest
    assert {rel: FileFact(**fact) for rel, fact in wire["files"].items()} == record.files
    assert _files(folder) == {*record.files, RECORD}, f"{link}: files beyond its record"
    for rel, fact in record.files.items():
        assert file_fact(folder / rel) == fact, f"{link}/{rel} does not match its sha256"
    return record.version


def _device(dest: Path, records: dict[int, VersionRecord]) -> tuple[int | None, int | None]:
    """(current, previous), each checked whole, agreeing with what the agent reads."""
    now = _installed(dest, CURRENT, records), _installed(dest, PREVIOUS, records)
    seen = state(dest)
    assert (seen.current and seen.current.version, seen.previous and seen.previous.version) == now
    return now


def _progress(dest: Path, target: VersionRecord) -> int:
    """Bytes of ``target`` downloaded so far (its partial folder), -1 once installed."""
    if (dest / VERSIONS / _id(target) / RECORD).is_file():
        return -1
    total = 0
    for folder, _, names in os.walk(dest / PARTIAL / _id(target)):  # as the agent writes it
        for name in names:
            with contextlib.suppress(FileNotFoundError):  # a part renamed in the meantime
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _complete(dest: Path, record: VersionRecord) -> bool:
    """Whether ``dest/versions`` holds ``record`` whole (installed, not yet swapped in)."""
    folder = dest / VERSIONS / _id(record)
    return (folder / RECORD).is_file() and all(
        (folder / rel).is_file() and file_fact(folder / rel) == fact
        for rel, fact in record.files.items()
    )


@pytest.mark.slow
def test_sigkill_during_follow_never_exposes_a_half_installed_version(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path / "registry", create=True)
    records: dict[int, VersionRecord] = {}
    for seed in range(1, 5):  # 4 versions of 8 MB: always one that is not on the device
        model = save_external(mlp(seed, hidden=1 << 18), tmp_path / f"m{seed}" / "model.onnx")
        record = reg.add(model, "m")
        records[record.version] = record
    dest = tmp_path / "device"
    rng = random.Random(20261205)
    seen: Counter[str] = Counter()

    with running_registry(reg.path) as url:
        argv = [*FERRY, "follow", url, "--model", "m", "--to", str(dest), "--once", "--json"]

        reg.set_alias("m", "production", 1)  # one whole install, timed to aim the kills
        size = sum(f.size for f in records[1].files.values())
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for(proc, _reached(lambda: _progress(dest, records[1]), size))
        fetched = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took, settle = time.monotonic() - started, time.monotonic() - fetched
        assert proc.returncode == 0, err.decode()
        assert json.loads(out)["result"]["action"] == "installed"
        assert _device(dest, records) == (1, None)

        for i in range(KILLS):
            current, previous = _device(dest, records)
            target = records[rng.choice([v for v in records if v not in (current, previous)])]
            reg.set_alias("m", "production", target.version)
            size = sum(f.size for f in target.files.values())
            had = _progress(dest, target)

            def progress(target: VersionRecord = target) -> int:
                return _progress(dest, target)

            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if i % 3 == 0:  # anywhere: starting, asking, downloading, checking, swapping
                time.sleep(rng.uniform(0.0, took * 1.1))
            elif i % 3 == 1:  # at a random byte of the download
                at = max(had, 0) + rng.uniform(0.02, 0.98) * (size - max(had, 0))
                _wait_for(proc, _reached(progress, at))
            else:  # every byte there: checking, renaming, swapping, tidying
                _wait_for(proc, _reached(progress, size))
                time.sleep(rng.uniform(0.0, settle * 1.2))
            _kill(proc)
            after = _progress(dest, target)

            now = _device(dest, records)  # each link: a whole version, or none
            assert now[0] is not None  # a device once installed always has a current version
            assert now[0] in (current, target.version)
            assert now[1] in (previous, current)  # previous is pointed first, then current
            if now[0] == target.version:
                assert now[1] == current
            loaded = Model.load(dest / CURRENT / records[now[0]].model_file)
            assert loaded.digest == records[now[0]].digest  # what a device loads is whole
            if now != (current, previous):
                seen["swapped"] += 1
            elif after == -1:
                seen["installed, not swapped"] += 1
            elif after > max(had, 0) and list((dest / PARTIAL / _id(target)).rglob("*.part")):
                seen["mid-download"] += 1
            else:
                seen["before or after the download"] += 1

        # a last poll, not killed: it resumes a download cut short, or fetches a new version
        current, previous = _device(dest, records)
        others = [v for v in records if v not in (current, previous)]
        cut = [v for v in others if _progress(dest, records[v]) > 0]
        target = records[cut[0] if cut else rng.choice(others)]
        reg.set_alias("m", "production", target.version)
        partial = dest / PARTIAL / _id(target)
        held = _files(partial) if partial.is_dir() else set()
        parts = sum((partial / rel).stat().st_size for rel in held if rel.endswith(".part"))
        done = sum(
            fact.size
            for rel, fact in target.files.items()
            if rel in held and file_fact(partial / rel) == fact
        )
        reused = _complete(dest, target)  # killed after its rename, before the swap
        finished = subprocess.run(argv, capture_output=True, text=True, timeout=60)

    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout)["result"]
    assert (result["action"], result["version"]) == ("installed", target.version), result
    if reused:
        assert (result["downloaded"], result["resumed"]) == (0, 0)
    else:
        assert result["resumed"] == parts  # each part cut short resumed with a range request
        total = sum(f.size for f in target.files.values())
        assert result["downloaded"] + result["resumed"] + done == total
    assert _device(dest, records) == (target.version, current)
    assert list((dest / PARTIAL).iterdir()) == []  # nothing left of the killed downloads
    assert sorted(p.name for p in (dest / VERSIONS).iterdir()) == sorted(
        _id(records[v]) for v in (target.version, current) if v is not None
    )
    assert seen["mid-download"] >= 2, seen  # the kills did land while it downloaded


# --- chosen moments ----------------------------------------------------------------------------

FOLLOW_DIES = """
    import os, signal, sys
    from onnxferry import atomic
    from onnxferry.registry import follow

    url, dest, moment = sys.argv[1:]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if moment == "record":  # the record's temporary file written and synced, not renamed
        atomic.AtomicFiles.commit = die
    follow.follow_once(url, "m", "production", dest)
"""


def test_follow_killed_before_its_record_is_renamed_installs_a_clean_folder(
    tmp_path: Path,
) -> None:
    reg = Registry.open(tmp_path / "registry", create=True)
    record = reg.add(save(mlp(1), tmp_path / "m1" / "model.onnx"), "m")
    reg.set_alias("m", "production", 1)
    dest, records = tmp_path / "device", {1: record}
    with running_registry(reg.path) as url:
        code, output = run_script(tmp_path, FOLLOW_DIES, url, dest, "record")
        assert code == -signal.SIGKILL, output
        assert _device(dest, records) == (None, None)
        result = follow_once(url, "m", "production", dest)
    assert result.action == "installed"
    assert _device(dest, records) == (1, None)  # the killed run's temporary file is not in it
