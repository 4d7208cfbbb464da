"""The run lock: one process per run folder, an OS lock (filelock) that a killed holder releases."""

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


def test_the_core_imports_no_posix_only_module():
    from pathlib import Path

    import ddcore

    for path in Path(ddcore.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert "import fcntl" not in text and "import termios" not in text, path
