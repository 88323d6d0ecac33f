"""Spawned workers for native code, and the kept one (``native.spawned_worker(keep=...)``):
the next block uses it, in the caller's folder and environment, and a dead or busy one is
never what a block gets."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from onnxferry import native
from onnxferry.errors import InputError
from onnxferry.native import spawned_worker


def _pid(keep: str | None) -> int:
    with spawned_worker("died", hint="h", keep=keep) as pool:
        return pool.submit(os.getpid).result()


def test_a_kept_worker_serves_the_next_block_and_a_plain_one_does_not() -> None:
    first, second = _pid("test-kept"), _pid("test-kept")
    assert first == second != os.getpid()
    assert _pid(None) != _pid(None)


def test_a_kept_worker_follows_the_caller_s_folder_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pid("test-follow")  # started in the folder pytest runs in
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FERRY_TEST_KEPT", "now")
    with spawned_worker("died", hint="h", keep="test-follow") as pool:
        assert pool.submit(os.getcwd).result() == str(tmp_path)
        assert pool.submit(os.getenv, "FERRY_TEST_KEPT").result() == "now"


def test_a_kept_worker_that_dies_is_one_line_and_the_next_block_gets_a_new_one() -> None:
    before = _pid("test-crash")
    with pytest.raises(InputError, match="died"):  # noqa: SIM117
        with spawned_worker("died", hint="h", keep="test-crash") as pool:
            pool.submit(os._exit, 3).result()
    assert _pid("test-crash") != before


def test_work_past_its_deadline_is_killed_and_the_kept_worker_forgotten() -> None:
    """``within``: what the worker runs may not stop when asked (here it sleeps through a
    minute); past the deadline the worker is killed at once, not left running, and the next
    block that keeps a worker of that name gets a new one."""
    before = _pid("test-deadline")
    with spawned_worker("died", hint="h", keep="test-deadline") as pool:  # noqa: SIM117
        with pytest.raises(TimeoutError):
            native.within(pool, 0.5, time.sleep, 60)
    deadline = time.monotonic() + 10
    while not _ended(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ended(before)
    assert _pid("test-deadline") != before
    with spawned_worker("died", hint="h", keep="test-deadline") as pool:
        assert native.within(pool, 10, len, "abc") == 3


def _ended(pid: int) -> bool:
    """Whether process ``pid`` is gone or a zombie (dead, not yet reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def test_a_kept_worker_killed_while_idle_is_replaced_without_an_error() -> None:
    before = _pid("test-idle-kill")
    os.kill(before, 9)
    time.sleep(0.5)
    assert _pid("test-idle-kill") != before


def test_a_block_that_finds_the_kept_worker_busy_gets_a_fresh_one() -> None:
    holding, done = threading.Event(), threading.Event()
    pids: dict[str, int] = {}

    def hold() -> None:
        with spawned_worker("died", hint="h", keep="test-busy") as pool:
            pids["holder"] = pool.submit(os.getpid).result()
            holding.set()
            done.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(30)
        pids["other"] = _pid("test-busy")
    finally:
        done.set()
        thread.join()
    assert pids["other"] != pids["holder"]
    assert _pid("test-busy") == pids["holder"]  # free again: the kept one


def test_a_kept_worker_ends_after_it_waited_keep_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "KEEP_S", 0.2)
    before = _pid("test-expire")
    deadline = time.monotonic() + 10
    while "test-expire" in native._kept and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "test-expire" not in native._kept
    assert _pid("test-expire") != before


@pytest.mark.parametrize("keep", [None, "tensorflow"])
def test_a_script_without_a_main_guard_runs_its_body_once(tmp_path: Path, keep: str | None) -> None:
    """multiprocessing's spawn imports the caller's script again in the worker: one without
    ``if __name__ == "__main__"`` ran its whole body there, tried to start a worker of its
    own, died, and the pool started it again for ever (a user's packaging script hung)."""
    script = tmp_path / "ship.py"
    script.write_text(
        "import os\n"
        "from onnxferry.native import spawned_worker\n"
        "print('body', flush=True)\n"
        f"with spawned_worker('died', hint='h', keep={keep!r}) as pool:\n"
        "    print('worker', pool.submit(os.getpid).result() != os.getpid(), flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["body", "worker", "True"], done.stdout


def test_a_kept_worker_that_cannot_start_is_one_line_after_one_more_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures.process import BrokenProcessPool

    starts: list[object] = []

    def broken(pool: object) -> None:
        starts.append(pool)
        raise BrokenProcessPool("the worker died while starting")

    monkeypatch.setattr(native, "_start", broken)
    with pytest.raises(InputError, match="died"):  # noqa: SIM117
        with spawned_worker("died", hint="h", keep="test-never-starts"):
            pass
    assert len(starts) == 2 and "test-never-starts" not in native._kept
