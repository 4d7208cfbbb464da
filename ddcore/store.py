"""Files on disk: atomic writes, the run lock, content digests and stage folders.

Everything a stage writes goes to a temporary name in the same folder and is renamed into
place, so an interrupted run (Ctrl-C, a killed job, a full disk) never leaves a half-written
file under a final name. A stage folder is finished when its ``stage.json`` says so.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ddcore.errors import DDError, StageError
from ddcore.seeds import derive


def digest(obj: Any, length: int = 12) -> str:
    """A short stable digest of JSON-serialisable data (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


stable_seed = derive  # the older name (ddcore.seeds has every seed)


@contextlib.contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DDError(
                f"disk full while writing {path}; free some space and rerun the same command to continue"
            ) from exc
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a uniquely named temporary file in the same folder,
    fsync and rename, so readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with _disk_errors(path):
            os.chmod(tmp, _FILE_MODE)  # by name: os.fchmod reaches Windows only in Python 3.13
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_save_image(path: Path, image: Any) -> None:
    """Save a PIL image as PNG atomically (encoded in memory, then written)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class RunLock:
    """An exclusive lock on a run folder, so two processes never write one run.

    An OS lock through ``filelock`` (``fcntl`` on POSIX, ``msvcrt`` on Windows): it is released
    when the holder exits, however it exits (a killed job leaves no stale lock). The holder's
    pid goes to a file beside it, for the message the second process prints."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.pid_path = folder / ".lock.pid"
        self._lock: Any = None

    def __enter__(self) -> "RunLock":
        import filelock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.path))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            try:
                holder = self.pid_path.read_text().strip() or "?"
            except OSError:
                holder = "?"
            raise StageError(
                f"another dd process (pid {holder}) is writing {self.path.parent}; "
                "wait for it to finish or choose another --out"
            ) from None
        self._lock = lock
        atomic_write_text(self.pid_path, str(os.getpid()))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pid_path.unlink(missing_ok=True)
        self._lock.release()


class StageDir:
    """The folder of one stage output, ``<root>/<kind>/<key>``, keyed by a digest of its
    inputs and settings. ``stage.json`` records the inputs and marks it finished."""

    MARKER = "stage.json"

    def __init__(self, root: Path, kind: str, key: str) -> None:
        self.kind, self.key = kind, key
        self.path = root / kind / key

    def info(self) -> dict[str, Any] | None:
        marker = self.path / self.MARKER
        if not marker.is_file():
            return None
        try:
            return read_json(marker)
        except (OSError, json.JSONDecodeError):
            return None  # a damaged marker: treat the stage as unfinished

    def is_complete(self) -> bool:
        info = self.info()
        return bool(info and info.get("complete"))

    def mark_complete(self, **info: Any) -> None:
        atomic_write_json(self.path / self.MARKER, {"kind": self.kind, "key": self.key, "complete": True, **info})

    def mark_started(self, **info: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.info() is None:
            atomic_write_json(self.path / self.MARKER, {"kind": self.kind, "key": self.key, "complete": False, **info})


def copy_stage_files(source: Path, dest: Path) -> None:
    """Copy a finished stage's files (not its marker) into another stage folder."""
    import shutil

    for path in source.iterdir():
        if path.name == StageDir.MARKER:
            continue
        target = dest / path.name
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(path, dest / f".{path.name}.tmp")
            (dest / f".{path.name}.tmp").replace(target)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
