"""The run lock: one process per run folder, an OS lock (filelock) that a killed holder releases;
and what Windows lacks (fcntl, os.fchmod before Python 3.13) is never needed. Two tests are a
helper's (branch cli)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from ddcore.errors import StageError
from ddcore.store import RunLock

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ddcore.store import RunLock
    with RunLock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_process_is_refused_with_the_holders_pid_until_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StageError, match=rf"another dd process \(pid {holder.pid}\) is writing {tmp_path}; "
                                             "wait for it to finish or choose another --out"):
            with RunLock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: the OS releases the lock
        holder.wait()
    with RunLock(tmp_path):
        assert (tmp_path / ".lock.pid").read_text() == str(__import__("os").getpid())
    assert not (tmp_path / ".lock.pid").exists()


def test_the_lock_is_exclusive_within_one_process_too_and_released_on_error(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(StageError, match="another dd process"):
            with RunLock(tmp_path):
                pass
    with pytest.raises(KeyboardInterrupt):
        with RunLock(tmp_path):
            raise KeyboardInterrupt
    with RunLock(tmp_path):  # released by the interrupted holder
        pass


def test_dd_imports_without_fcntl():
    """Windows has no fcntl: `dd` must still import (filelock picks the OS's own lock)."""
    code = "import sys; sys.modules['fcntl'] = None; import ddcore.store, dd_cli.app; print('ok')"
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_an_atomic_write_needs_no_fchmod(tmp_path, monkeypatch):
    """Windows before Python 3.13 has no os.fchmod; the file still gets open()'s usual mode."""
    import os

    from ddcore.store import atomic_write_text

    monkeypatch.delattr(os, "fchmod", raising=False)
    mask = os.umask(0)
    os.umask(mask)
    atomic_write_text(tmp_path / "a.txt", "text")
    assert (tmp_path / "a.txt").read_text() == "text"
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left
