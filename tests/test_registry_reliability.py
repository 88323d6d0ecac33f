"""The registry under duress: processes killed with SIGKILL at random and at chosen moments,
processes adding and promoting at once, and a full disk. After each: the catalog passes
``PRAGMA integrity_check``, every registered version's files match their digests (fsck), and
nothing half-written is visible; what a killed process left is removed by the next add."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onnxferry.registry import Registry
from onnxferry.registry.store import PARTIAL
from tests.helpers import Run, mlp, save, save_external

FERRY = [sys.executable, "-m", "onnxferry"]


def run_script(tmp_path: Path, source: str, *args: object, timeout: float = 60) -> tuple[int, str]:
    """Run ``source`` as a Python script with ``args``: (exit code, stdout + stderr)."""
    script = tmp_path / f"script-{random.randrange(1 << 30)}.py"
    script.write_text(textwrap.dedent(source))
    done = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout + done.stderr


def folders(reg: Registry, name: str = "m") -> set[str]:
    """The folders under the store's ``name``/ (as locations)."""
    root = Path(reg.store.root) / name
    return {f"{name}/{p.name}" for p in root.iterdir()} if root.is_dir() else set()


def assert_sound(reg: Registry) -> None:
    """Catalog sound, every version's files match, versions numbered without gaps, and the
    aliases agree with their history; leftovers only of processes that are gone."""
    assert reg.catalog.integrity() == "ok"
    report = reg.fsck()
    assert report.ok, report.to_text()
    assert report.result.in_progress == 0
    numbers = [v.version for v in reg.versions("m")]
    assert numbers == list(range(1, len(numbers) + 1))
    referenced = {v.location for v in reg.versions("m")}
    leftovers = {f.where for f in report.result.leftovers}
    assert folders(reg) == referenced | leftovers  # nothing else lies in the store
    for alias, version in reg.aliases("m").items():
        assert reg.history("m", alias)[-1].version == version
    for change in reg.history("m"):
        assert change.version is None or change.version in numbers


@pytest.fixture
def models(tmp_path: Path) -> list[Path]:
    """A small model, and one with 2 MB of external data (its writes take a moment)."""
    return [
        save(mlp(0), tmp_path / "small" / "model.onnx"),
        save_external(mlp(1, hidden=65536), tmp_path / "big" / "model.onnx"),
    ]


# --- kill -9 ---------------------------------------------------------------------------------

DRIVER = """
    import random, sys
    from onnxferry.errors import InputError
    from onnxferry.registry import Registry

    registry, *models = sys.argv[1:]
    reg = Registry.open(registry, create=True)
    rng = random.Random()
    version = reg.add(rng.choice(models), "m", actor="driver").version  # some work done
    current = reg.aliases("m").get("production")  # on the slowest machine too, then
    reg.set_alias("m", "production", version, expect=current, reason="driver")  # killed
    print("ready", flush=True)  # at a random moment of what follows
    while True:
        op, versions = rng.random(), [v.version for v in reg.versions("m")]
        try:
            if op < 0.5 or not versions:
                reg.add(rng.choice(models), "m", actor="driver")
                continue
            current = reg.aliases("m").get("production")
            if op < 0.85 or current is None:
                target = rng.choice(versions)
                reg.set_alias("m", "production", target, expect=current, reason="driver")
            else:
                reg.rollback("m", "production", reason="driver")
        except InputError:  # nothing to roll back to
            pass
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_sound_registry(
    tmp_path: Path, models: list[Path]
) -> None:
    registry = tmp_path / "registry"
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER))
    # One version up front, so a promote never meets an empty registry however slow the
    # machine makes the first kills (it would rightly refuse: "no model 'm'", exit 2).
    Registry.open(registry, create=True).add(models[0], "m")
    rng = random.Random(20261203)
    for i in range(24):
        cli = i % 3 == 2
        if cli:  # the CLI itself, killed while it starts, loads, stores, gates or commits
            if i % 6 == 5:
                argv = [*FERRY, "registry", "promote", "m", "--to", "production", "--force"]
            else:
                argv = [*FERRY, "registry", "add", str(models[i % 2]), "--name", "m"]
            proc = subprocess.Popen(
                [*argv, "--registry", str(registry)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(rng.uniform(0.2, 1.2))
        else:  # adds and alias changes in a loop, killed at a random moment
            proc = subprocess.Popen(
                [sys.executable, str(driver), str(registry), *map(str, models)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            assert ready == b"ready\n", proc.communicate()[1].decode()
            time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        finished = {0} if cli else set()  # the driver never ends by itself
        assert proc.returncode in {-signal.SIGKILL, *finished}, err.decode()
        if i % 9 == 8:
            assert_sound(Registry.open(registry))

    reg = Registry.open(registry)
    assert_sound(reg)
    count = len(reg.versions("m"))
    assert count >= 5 and len(reg.history("m")) >= 3  # the loop got real work done
    record = reg.add(models[0], "m")  # the next add tidies what the killed ones left
    assert record.version == count + 1
    assert_sound(reg)
    assert folders(reg) == {v.location for v in reg.versions("m")}
    assert not list(Path(reg.store.root).rglob(f"{PARTIAL}*"))


DIE_AT = """
    import os, signal, sys
    from onnxferry.registry import Registry, catalog, store

    registry, model, moment = sys.argv[1:]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if moment == "staging":  # the model file written, its external data not yet
        put = store.Store._put
        def put_then_die(self, source, target, rel, transform):
            fact = put(self, source, target, rel, transform)
            die()
        store.Store._put = put_then_die
    elif moment == "published":  # renamed to its final name, no catalog row yet
        publish = store.Store.publish
        def publish_then_die(self, staged):
            publish(self, staged)
            die()
        store.Store.publish = publish_then_die
    elif moment == "inserted":  # its row written, the transaction not committed
        execute = catalog.Transaction.execute
        def execute_then_die(self, sql, params=()):
            cursor = execute(self, sql, params)
            if sql.startswith("INSERT INTO versions"):
                die()
            return cursor
        catalog.Transaction.execute = execute_then_die
    Registry.open(registry).add(model, "m")
"""


@pytest.mark.parametrize(
    ("moment", "left"), [("staging", "partial"), ("published", "orphan"), ("inserted", "orphan")]
)
def test_sigkill_at_each_step_of_an_add(
    tmp_path: Path, models: list[Path], moment: str, left: str
) -> None:
    reg = Registry.open(tmp_path / "registry", create=True)
    first = reg.add(models[0], "m")
    reg.set_alias("m", "production", 1)
    code, output = run_script(tmp_path, DIE_AT, reg.path, models[1], moment)
    assert code == -signal.SIGKILL, output

    assert [v.ref for v in reg.versions()] == ["m:1"]  # nothing half-registered is visible
    assert reg.get("m@production").location == first.location
    assert_sound(reg)
    (leftover,) = reg.fsck().result.leftovers
    assert leftover.kind == left
    assert leftover.where in folders(reg)

    second = reg.add(models[1], "m")  # the number was never taken; the leftover is swept
    assert second.version == 2
    assert folders(reg) == {first.location, second.location}
    assert reg.fsck().result.findings == []


# --- at once ---------------------------------------------------------------------------------

RACER = """
    import sys, time
    from pathlib import Path
    from onnxferry.errors import InputError
    from onnxferry.registry import Registry

    registry, model, me, racers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    here = Path(registry).parent
    give_up = time.monotonic() + 60  # a racer that died must fail the test, not hang it
    reg = Registry.open(registry, create=True)  # made by whoever comes first
    (here / f"ready-{me}").touch()
    while not (here / "go").exists() and time.monotonic() < give_up:
        time.sleep(0.001)
    mine = [reg.add(model, "m", actor=me).version for _ in range(3)]
    (here / f"added-{me}").touch()
    while len(list(here.glob("added-*"))) < racers and time.monotonic() < give_up:
        time.sleep(0.001)
    try:  # everyone saw no production yet; one may set it
        reg.set_alias("m", "production", mine[-1], expect=None, actor=me)
    except InputError as e:
        print("lost", *mine, e)
        sys.exit(2)
    print("won", *mine)
"""


def test_processes_adding_and_promoting_at_once(tmp_path: Path, models: list[Path]) -> None:
    registry, racers = tmp_path / "registry", 3
    script = tmp_path / "racer.py"
    script.write_text(textwrap.dedent(RACER))
    with contextlib.ExitStack() as stack:  # on any failure: killed, reaped, pipes closed
        procs = []
        for i in range(racers):
            argv = [str(script), str(registry), str(models[0]), f"p{i}", str(racers)]
            proc = subprocess.Popen(
                [sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            procs.append(stack.enter_context(proc))
            stack.callback(proc.kill)
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < racers and time.monotonic() < deadline:
            time.sleep(0.01)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    outcomes = [(p.returncode, out.split()) for p, out in zip(procs, outputs, strict=True)]

    winners = [words for code, words in outcomes if code == 0 and words[0] == "won"]
    losers = [words for code, words in outcomes if code == 2 and words[0] == "lost"]
    assert len(winners) == 1 and len(losers) == racers - 1, outcomes
    assert all("changed while this ran" in " ".join(words) for words in losers)
    numbers = [int(n) for _, words in outcomes for n in words[1:4]]
    assert sorted(numbers) == list(range(1, 3 * racers + 1))  # each add its own number

    reg = Registry.open(registry)
    assert reg.aliases("m") == {"production": int(winners[0][3])}
    (change,) = reg.history("m")
    assert change.previous is None and change.actor in {f"p{i}" for i in range(racers)}
    assert_sound(reg)
    assert reg.fsck().result.findings == []
    by = {v.version: v.created_by for v in reg.versions("m")}
    for _, words in outcomes:
        assert len({by[int(n)] for n in words[1:4]}) == 1


# --- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (root and mount(8) needed, else the test is skipped)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        pytest.skip("no mount(8) here")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, timeout=30)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until its disk is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ferry: error: "), err
    return lines[0]


def test_full_disk_while_storing(ferry: Run, tiny_disk: Path, models: list[Path]) -> None:
    registry = tiny_disk / "registry"
    small, big = models
    code, _, err = ferry("registry", "add", big, "--name", "m", "--registry", registry)
    assert code == 2
    line = error_line(err)
    assert "cannot store m: No space left on device" in line and "nothing was registered" in line
    reg = Registry.open(registry)
    assert reg.versions() == [] and folders(reg) == set()  # no partial left behind
    assert_sound(reg)
    code, _, err = ferry("registry", "add", small, "--name", "m", "--registry", registry)
    assert code == 0, err
    assert [v.ref for v in reg.versions()] == ["m:1"]
    assert reg.fsck().result.findings == []


def test_full_disk_under_the_catalog(
    ferry: Run, tiny_disk: Path, tmp_path: Path, models: list[Path]
) -> None:
    registry, small = tiny_disk / "registry", models[0]
    store = tmp_path / "store"  # on another disk: only the catalog's is full
    code, _, err = ferry(
        "registry", "add", small, "--name", "m", "--registry", registry, "--store", store
    )
    assert code == 0, err
    filler = tiny_disk / "filler"
    fill(filler)
    code, _, err = ferry("registry", "add", small, "--name", "m", "--registry", registry)
    assert code == 2
    assert f"registry catalog {registry / 'catalog.db'}" in error_line(err)
    code, _, err = ferry("registry", "show", "m@production", "--registry", registry)
    assert code == 2
    error_line(err)
    filler.unlink()
    reg = Registry.open(registry)
    assert [v.ref for v in reg.versions()] == ["m:1"]
    assert_sound(reg)
    assert len(folders(reg)) == 1  # nothing stored for the add that failed


def test_file_size_limit_while_storing(tmp_path: Path, models: list[Path]) -> None:
    """``ulimit -f``: writes past 256 KiB fail with EFBIG (Python ignores SIGXFSZ)."""
    registry, (small, big) = tmp_path / "registry", models
    Registry.open(registry, create=True).add(small, "m")
    command = " ".join([*FERRY, "registry", "add", str(big), "--name", "m"])
    done = subprocess.run(
        ["bash", "-c", f"ulimit -f 256 && exec {command} --registry {registry}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot store m: File too large" in error_line(done.stderr)
    reg = Registry.open(registry)
    assert [v.ref for v in reg.versions()] == ["m:1"]
    assert_sound(reg)
    assert reg.fsck().result.findings == []
