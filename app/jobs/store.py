"""Training-job records in SQLite (stdlib sqlite3, WAL): they survive server restarts.

One row per job. The spec and the latest metrics are JSON text; everything else is a plain column so the
list view is one cheap query. Status changes that can race (cancel vs. finish) use `transition`, a
compare-and-set on the current status. The file (and its -wal/-shm) is private to the owner (0600). Opening runs
`PRAGMA quick_check`; a damaged file, at open or later, raises JobStoreError (the admin answers 503).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
RESUMABLE_STATUSES = ("failed", "cancelled")  # a resume request queues these again with --resume

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL,
    phase       TEXT NOT NULL DEFAULT 'queued',
    spec        TEXT NOT NULL,
    out_dir     TEXT NOT NULL,
    log_path    TEXT NOT NULL,
    pid         INTEGER,
    pid_start   TEXT,
    progress    REAL NOT NULL DEFAULT 0,
    metrics     TEXT NOT NULL DEFAULT '{}',
    error       TEXT,
    resume      INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status);
"""
_JSON_COLUMNS = ("spec", "metrics")
_UPDATABLE = {
    "status", "phase", "pid", "pid_start", "progress", "metrics", "error", "resume", "attempts",
    "started_at", "finished_at",
}


@dataclass
class JobRecord:
    """One training job as stored; `to_json()` is what the admin API returns."""

    id: str  # short random hex id used in URLs
    name: str  # the SAE folder name under data_dir/saes/ (unique)
    status: str  # one of JOB_STATUSES
    phase: str  # what the job is doing: queued, training, evaluating, indexing, done
    spec: dict[str, Any]  # the validated launch spec (JobSpec.model_dump())
    out_dir: str  # absolute path of the SAE folder the job writes
    log_path: str  # absolute path of the captured stdout/stderr of every step
    pid: int | None = None  # process-group leader of the current step (None when nothing runs)
    pid_start: str | None = None  # that process's start time (from /proc) so a reused pid is not mistaken
    progress: float = 0.0  # training progress 0..1 (step / total_steps)
    metrics: dict[str, Any] = field(default_factory=dict)  # latest metrics.jsonl row
    error: str | None = None  # why it failed, or a note (e.g. "index skipped")
    resume: bool = False  # the next launch passes --resume (set by a resume request)
    attempts: int = 0  # how many times a training process was started
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.status in ACTIVE_STATUSES

    @property
    def resumable(self) -> bool:
        """Failed or cancelled: a resume request continues it from its last checkpoint."""
        return self.status in RESUMABLE_STATUSES

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (what the API serves)."""
        return asdict(self)


class JobStoreError(RuntimeError):
    """The jobs database cannot be used (damaged, not SQLite, or from a newer JumpScope)."""


class JobStore:
    """SQLite-backed job records; safe to share between threads (one connection behind a lock)."""

    def __init__(self, db_path: str | Path):
        self.path = Path(db_path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _make_private(self.path)
        self._lock = threading.Lock()
        # isolation_level=None: explicit transactions only; every write below is one statement or BEGIN..COMMIT.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        try:
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")  # job records are small; never lose a committed one
                self._db.execute("PRAGMA busy_timeout=10000")
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise JobStoreError(f"{self.path}: job database schema v{version} is newer than this "
                                        f"JumpScope (v{SCHEMA_VERSION}); upgrade JumpScope")
                problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)").fetchall()]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError("quick_check: " + "; ".join(map(str, problems)))
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.DatabaseError, JobStoreError) as e:
            self._db.close()
            if isinstance(e, JobStoreError):
                raise
            raise JobStoreError(_damaged(self.path, e)) from None
        for suffix in ("-wal", "-shm"):  # SQLite gives them the database's mode; older files may predate 0600
            _make_private(Path(f"{self.path}{suffix}"), create=False)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock; a damaged file (sqlite3.DatabaseError) becomes JobStoreError."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.IntegrityError:
                raise  # a constraint (duplicate name), not damage: the caller handles it
            except sqlite3.DatabaseError as e:
                log.error("jobs database %s: %s", self.path, e)
                raise JobStoreError(_damaged(self.path, e)) from None

    def close(self) -> None:
        """Close the connection (records stay on disk)."""
        with self._lock:
            self._db.close()

    # --- reads ------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or None."""
        with self._locked() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _to_record(row) if row else None

    def list(self, limit: int = 100, statuses: Iterable[str] | None = None) -> list[JobRecord]:
        """Newest first; optionally only the given statuses."""
        sql, args = "SELECT * FROM jobs", []
        if statuses is not None:
            statuses = list(statuses)
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args += statuses
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        with self._locked() as db:
            rows = db.execute(sql, [*args, int(limit)]).fetchall()
        return [_to_record(r) for r in rows]

    def name_taken(self, name: str) -> bool:
        """Whether a job already uses this SAE folder name."""
        with self._locked() as db:
            return db.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone() is not None

    # --- writes -----------------------------------------------------------------------------------------
    def create(self, name: str, spec: dict[str, Any], out_dir: str | Path, log_path: str | Path,
               job_id: str | None = None) -> JobRecord:
        """Insert a queued job; raises ValueError when the name is already used."""
        now = time.time()
        rec = JobRecord(
            id=job_id or uuid.uuid4().hex[:12], name=name, status="queued", phase="queued", spec=dict(spec),
            out_dir=str(out_dir), log_path=str(log_path), created_at=now, updated_at=now,
        )
        cols = rec.to_json()
        cols["spec"] = json.dumps(cols["spec"])
        cols["metrics"] = json.dumps(cols["metrics"])
        try:
            with self._locked() as db:
                db.execute(
                    f"INSERT INTO jobs ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", list(cols.values())
                )
        except sqlite3.IntegrityError:
            raise ValueError(f"a job named {name!r} already exists") from None
        return rec

    def update(self, job_id: str, **fields: Any) -> JobRecord | None:
        """Set the given columns; returns the updated record (None when the job does not exist)."""
        self._write(job_id, None, fields)
        return self.get(job_id)

    def transition(self, job_id: str, from_statuses: Iterable[str], **fields: Any) -> bool:
        """Update only if the job's status is one of `from_statuses`; True when it did (compare-and-set)."""
        return self._write(job_id, tuple(from_statuses), fields)

    def _write(self, job_id: str, from_statuses: tuple[str, ...] | None, fields: dict[str, Any]) -> bool:
        bad = set(fields) - _UPDATABLE
        if bad:
            raise KeyError(f"not updatable job fields: {sorted(bad)}")
        if "status" in fields and fields["status"] not in JOB_STATUSES:
            raise ValueError(f"unknown job status {fields['status']!r}")
        values = {k: (json.dumps(v) if k in _JSON_COLUMNS else v) for k, v in fields.items()}
        values["updated_at"] = time.time()
        sql = f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?"
        args = [*values.values(), job_id]
        if from_statuses is not None:
            sql += f" AND status IN ({','.join('?' * len(from_statuses))})"
            args += list(from_statuses)
        with self._locked() as db:
            return db.execute(sql, args).rowcount == 1

    def delete(self, job_id: str) -> bool:
        """Remove a record (its files stay); True when it existed."""
        with self._locked() as db:
            return db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1

    def fail_dead_jobs(self, is_alive: Callable[[JobRecord], bool]) -> list[str]:
        """On startup: mark every 'running' job whose process is gone as failed; returns their ids.

        `is_alive(record)` decides; jobs whose process still runs (it outlived the server) are left alone.
        """
        failed = []
        for rec in self.list(limit=1_000_000, statuses=["running"]):
            if is_alive(rec):
                continue
            ok = self.transition(
                rec.id, ["running"], status="failed", pid=None, pid_start=None, finished_at=time.time(),
                error=f"the job's process died while it was {rec.phase} (server restart or crash); resume it",
            )
            if ok:
                log.warning("job %s (%s): process gone, marked failed", rec.id, rec.name)
                failed.append(rec.id)
        return failed


def _damaged(path: Path, e: Exception) -> str:
    return (f"{path}: the jobs database is damaged or not SQLite ({e}); stop the server, move jobs.db and its "
            "-wal/-shm files aside (or restore a backup) and restart to begin a fresh one")


def _make_private(path: Path, create: bool = True) -> None:
    """Create `path` empty with mode 0600 (when `create`), or tighten an existing file to 0600 (owner only)."""
    try:
        if create and not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        elif path.exists() and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError as e:  # not ours, or a read-only file system: SQLite reports what matters
        log.warning("could not make %s private: %s", path, e)


def _to_record(row: sqlite3.Row) -> JobRecord:
    d = dict(row)
    for k in _JSON_COLUMNS:
        d[k] = json.loads(d[k]) if d[k] else {}
    d["resume"] = bool(d["resume"])
    return JobRecord(**d)
