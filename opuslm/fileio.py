"""Atomic file writes shared by every module that writes results (temp file + rename).

A durable write also flushes the file's data (and the directory entry of the rename) to disk, so
a power cut or kernel crash leaves the old file or the complete new one, never an empty file of
the new name. Per-utterance outputs (waveforms) skip that: they are cheap to write again and
thousands of fsyncs cost minutes on network file systems.
Kept free of heavy imports so that light command-line tools (data-dir validation) start fast.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written (closed) file's data to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where the platform cannot
    open directories (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory: nothing more can be done
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """Flush every file under `root`, then its directories, to disk."""
    for directory, _, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(directory, name))
        fsync_directory(directory)


def _current_umask() -> int:
    """The process umask (reading it means setting it: put it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _permit_as_created(path: str, directory: bool) -> None:
    """Give a mkstemp / mkdtemp path (0600 / 0700: private) the mode a plain open / mkdir would
    have, so results written for a team (packed models, dumps) are readable by it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_current_umask())


def _share_private_files(directory: Path) -> None:
    """Give the files under `directory` that their writer left private (no group / other bits:
    safetensors writes 0600 whatever the umask, and so does Hugging Face's save_pretrained
    through it) the mode a plain open would give. Other modes are left as written."""
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o077 == 0:
            _permit_as_created(str(path), directory=False)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[str]:
    """Yield a temporary path next to `path`; on success rename it onto `path`, else delete it.
    durable: flush the file to disk before the rename and the rename after it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        # After the writer: some (safetensors) replace the file with a private one of their own.
        _permit_as_created(tmp, directory=False)
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically and durably (a crash leaves the old file or the new
    one, never a truncated one)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically and durably."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_directory_atomic(output_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run `write` on a temporary sibling directory, flush it to disk, then rename it onto
    `output_dir` (a crash leaves no half-written directory behind)."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.", suffix=".tmp")
    )
    _permit_as_created(str(tmp), directory=True)
    # A directory cannot be renamed over a non-empty one: the previous output is moved aside
    # first, so output_dir is missing only between two renames, never half-deleted.
    previous = tmp.with_name(tmp.name + ".old")
    try:
        write(tmp)
        _share_private_files(tmp)
        fsync_tree(tmp)
        if output_dir.exists():
            os.replace(output_dir, previous)
        os.replace(tmp, output_dir)
    except BaseException:
        if previous.exists() and not output_dir.exists():
            os.replace(previous, output_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(output_dir.parent)
    shutil.rmtree(previous, ignore_errors=True)
    return output_dir
