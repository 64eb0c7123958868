"""A damaged jobs.db is a clear JobStoreError (the admin's 503), at open and from every later call; the files are
private to their owner."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from app.jobs.store import JobStore, JobStoreError

SPEC = {"d_sae": 8, "tokens": 4096, "activations": "/x.safetensors", "padding": "p" * 2000}


def filled_db(path, n: int = 40):
    """A checkpointed jobs.db with `n` records spread over many pages; returns its path."""
    store = JobStore(path)
    for i in range(n):
        store.create(f"job-{i}", SPEC, f"/saes/job-{i}", f"/logs/{i}.log")
    store.close()  # the last connection closing checkpoints the WAL into the main file
    return path


def damage_pages(path, pages=(2, 3, 4, 5)) -> None:
    """XOR every byte of the given (1-based) pages, as a bad disk or a stray write would."""
    data = bytearray(path.read_bytes())
    size = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    for page in pages:
        start = (page - 1) * size
        data[start:start + size] = bytes(b ^ 0x5A for b in data[start:start + size])
    path.write_bytes(bytes(data))


def test_damaged_pages_are_a_store_error_at_open(tmp_path):
    db = filled_db(tmp_path / "jobs.db")
    damage_pages(db)
    with pytest.raises(JobStoreError, match="damaged"):
        store = JobStore(db)  # quick_check finds it (before: opened fine, then list() raised a raw sqlite3 error)
        store.list()


class _BrokenConnection:
    """Stands in for a connection whose file went bad after the store opened it."""

    def execute(self, *_a, **_k):
        raise sqlite3.DatabaseError("database disk image is malformed")

    def close(self) -> None:
        pass


def test_damage_after_open_is_a_store_error_in_every_method(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    good = store._db
    store._db = _BrokenConnection()
    try:
        calls = [store.list, lambda: store.get("x"), lambda: store.name_taken("x"), lambda: store.delete("x"),
                 lambda: store.update("x", status="failed"), lambda: store.create("n", SPEC, "/o", "/l"),
                 lambda: store.fail_dead_jobs(lambda r: False)]
        for call in calls:
            with pytest.raises(JobStoreError, match="malformed"):
                call()
    finally:
        store._db = good
        store.close()


def test_duplicate_name_is_still_a_value_error(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    store.create("same", SPEC, "/o", "/l")
    with pytest.raises(ValueError, match="already exists"):
        store.create("same", SPEC, "/o2", "/l2")
    store.close()


def test_jobs_db_and_its_folder_are_private(tmp_path):
    db = tmp_path / "data" / "jobs" / "jobs.db"
    store = JobStore(db)
    store.create("x", SPEC, "/o", "/l")
    for path in (db, db.with_name("jobs.db-wal")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    store.close()
    db.chmod(0o644)  # a file from before this version is tightened when opened
    JobStore(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
