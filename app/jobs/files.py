"""The files a job runner owns under data_dir, all private to the server's user: folders 0700, logs 0600.

Job processes run with umask 0o077, so what they write (the SAE folder, checkpoints, index.db) is private too.
Also: removing a job's files on request, never outside the folders the runner owns.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

JOB_UMASK = 0o077  # files 0600, folders 0700 in everything a job process creates


def private_dir(path: str | Path) -> Path:
    """Create `path` (and missing parents) with mode 0700; an existing folder is left as it is."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def open_log(path: str | Path) -> BinaryIO:
    """Open a job log for appending (binary); a new log is created with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "ab")


def append_log(path: str | Path, line: str) -> None:
    """A runner line in the job log, timestamped and marked so it stands out from the process output."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open_log(path) as fh:
        fh.write(f"[jumpscope {stamp}] {line}\n".encode())


def read_tail(path: str | Path, max_bytes: int = 8192) -> str:
    """The end of a log file (whole lines, undecodable bytes replaced); "" when there is no file."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return text.split("\n", 1)[1] if size > max_bytes and "\n" in text else text


def fresh_private_dir(path: str | Path) -> Path:
    """An empty 0700 folder at `path` (whatever was there is removed first)."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    return private_dir(path)


def remove_inside(path: str | Path, owner: str | Path) -> bool:
    """Delete the file or folder `path` if it lies strictly inside `owner` (links are not followed out).

    Returns True when something was removed. A path outside `owner` (a record edited by hand) is left alone.
    """
    path, owner = Path(path), Path(owner).resolve()
    parent = path.parent.resolve()
    if not (parent == owner or parent.is_relative_to(owner)) or path.name in ("", ".", ".."):
        log.warning("not removing %s: outside %s", path, owner)
        return False
    target = parent / path.name
    if target.is_symlink() or target.is_file():
        target.unlink()
        return True
    if target.is_dir():
        shutil.rmtree(target)
        return True
    return False
