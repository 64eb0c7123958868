"""JobStore: CRUD, compare-and-set transitions, persistence across instances, startup recovery."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from app.jobs import procs
from app.jobs.store import JobStore

SPEC = {"d_sae": 8, "tokens": 100, "activations": "/x.safetensors"}


def test_create_get_list_update(store, tmp_path):
    a = store.create("first", SPEC, tmp_path / "a", tmp_path / "a.log")
    b = store.create("second", {**SPEC, "d_sae": 16}, tmp_path / "b", tmp_path / "b.log")
    assert a.status == "queued" and a.id != b.id
    got = store.get(a.id)
    assert got.name == "first" and got.spec == SPEC and got.metrics == {} and got.resume is False
    assert [r.name for r in store.list()] == ["second", "first"]  # newest first
    assert [r.name for r in store.list(statuses=["running"])] == []
    upd = store.update(a.id, status="running", progress=0.5, metrics={"loss": 1.5}, resume=True)
    assert upd.status == "running" and upd.progress == 0.5 and upd.metrics == {"loss": 1.5} and upd.resume is True
    assert [r.id for r in store.list(statuses=["running"])] == [a.id]
    assert store.get("nope") is None
    assert store.name_taken("first") and not store.name_taken("third")


def test_duplicate_name_and_bad_fields(store, tmp_path):
    store.create("x", SPEC, tmp_path / "x", tmp_path / "x.log")
    with pytest.raises(ValueError, match="already exists"):
        store.create("x", SPEC, tmp_path / "y", tmp_path / "y.log")
    rec = store.list()[0]
    with pytest.raises(KeyError):
        store.update(rec.id, name="other")
    with pytest.raises(ValueError):
        store.update(rec.id, status="exploded")


def test_transition_is_compare_and_set(store, tmp_path):
    rec = store.create("x", SPEC, tmp_path / "x", tmp_path / "x.log")
    assert store.transition(rec.id, ["queued"], status="running")
    assert not store.transition(rec.id, ["queued"], status="cancelled")
    assert store.get(rec.id).status == "running"
    assert store.transition(rec.id, ["queued", "running"], status="cancelled")
    assert store.get(rec.id).status == "cancelled"


def test_record_survives_a_new_store_instance(tmp_path):
    db = tmp_path / "jobs.db"
    s1 = JobStore(db)
    rec = s1.create("keep", SPEC, tmp_path / "k", tmp_path / "k.log")
    s1.update(rec.id, status="running", metrics={"step": 3}, progress=0.3)
    s1.close()
    s2 = JobStore(db)
    got = s2.get(rec.id)
    assert got.status == "running" and got.metrics == {"step": 3} and got.progress == pytest.approx(0.3)
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    s2.close()


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "jobs.db"
    JobStore(db).close()
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(RuntimeError, match="newer"):
        JobStore(db)


def test_startup_marks_dead_running_jobs_failed(tmp_path):
    db = tmp_path / "jobs.db"
    s1 = JobStore(db)
    dead = s1.create("dead", SPEC, tmp_path / "d", tmp_path / "d.log")
    alive = s1.create("alive", SPEC, tmp_path / "a", tmp_path / "a.log")
    queued = s1.create("queued", SPEC, tmp_path / "q", tmp_path / "q.log")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        s1.update(dead.id, status="running", phase="training", pid=gone.pid, pid_start="123")
        s1.update(alive.id, status="running", phase="training", pid=live.pid,
                  pid_start=procs.process_start_time(live.pid))
        s1.close()
        s2 = JobStore(db)  # a "restarted server"
        failed = s2.fail_dead_jobs(lambda r: procs.pid_alive(r.pid, r.pid_start))
        assert failed == [dead.id]
        d = s2.get(dead.id)
        assert d.status == "failed" and d.pid is None and "resume" in d.error and d.finished_at
        assert s2.get(alive.id).status == "running"
        assert s2.get(queued.id).status == "queued"
        s2.close()
    finally:
        live.kill()
        live.wait()


def test_pid_identity_uses_start_time():
    me = procs.process_start_time(__import__("os").getpid())
    assert me is not None
    assert procs.pid_alive(__import__("os").getpid(), me)
    assert not procs.pid_alive(__import__("os").getpid(), str(int(me) + 1))  # same pid, other process
    assert not procs.pid_alive(None) and not procs.pid_alive(0)


def test_resumable_is_failed_or_cancelled():
    from app.jobs.store import JOB_STATUSES, JobRecord

    def rec(status):
        return JobRecord(id="x", name="x", status=status, phase="done", spec={}, out_dir="o", log_path="l")

    assert {s for s in JOB_STATUSES if rec(s).resumable} == {"failed", "cancelled"}
