"""Runs training jobs as separate processes and keeps their SQLite records current.

A background thread ticks once a second: it reaps finished steps, reads each job's metrics.jsonl for
progress, escalates cancels (SIGTERM, then SIGKILL after a grace period) and starts queued jobs. A job is a
pipeline of processes — train, eval, index — each in its own process group with stdout/stderr appended to
the job's log. Jobs outlive the server: on start, a 'running' job whose process is gone is marked failed
(resumable from its checkpoint) and one whose process still runs is adopted and watched to its end.
Job processes get a filtered environment (app.jobs.environment), umask 0o077, and an empty private working
folder of their own (data_dir/jobs/run/<id>), so a hub-id-shaped model name never resolves to a local folder.
A finished job's record (and, on request, its SAE folder and log) can be deleted; its name is then free again.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.jobs import procs
from app.jobs.commands import SAE_FILES, Step, pipeline, sae_folders
from app.jobs.environment import child_env
from app.jobs.explain_job import ExplainJobSpec, explain_pipeline, is_explain, read_progress
from app.jobs.files import JOB_UMASK, append_log, fresh_private_dir, open_log, private_dir, read_tail, remove_inside
from app.jobs.label import label_sae
from app.jobs.metrics import METRICS_FILE, MetricsTail, progress_of
from app.jobs.spec import JobSpec
from app.jobs.store import ACTIVE_STATUSES, RESUMABLE_STATUSES, JobRecord, JobStore, JobStoreError

log = logging.getLogger(__name__)

PipelineFn = Callable[..., list[Step]]  # (spec, out_dir, resume=..., python=..., n_gpus=..., device=...)
OnSuccess = Callable[[JobRecord, Path], None]  # registers a finished SAE with the running app


class JobConflict(Exception):
    """The request does not fit the job's state (e.g. resume a running job); HTTP 409."""


@dataclass
class _Active:
    """In-memory state of a job whose process (or a pipeline step of it) is alive."""

    job_id: str
    steps: list[Step]  # the current step first, then those still to run
    pid: int
    proc: subprocess.Popen | None  # None for a process adopted after a server restart
    pid_start: str | None = None  # start time of that pid, so a reused pid is not mistaken for the job
    term_sent_at: float | None = None  # when a cancel sent SIGTERM


class JobRunner:
    """Launches, watches, cancels and resumes jobs; `start()` recovers state and starts the ticking thread."""

    def __init__(self, store: JobStore, data_dir: str | Path, *, python: str | None = None, n_gpus: int = 1,
                 device: str | None = None, max_running: int = 1, on_success: OnSuccess | None = None,
                 poll_interval: float = 1.0, term_grace: float = 10.0, pipeline_fn: PipelineFn = pipeline,
                 env: dict[str, str] | None = None):
        self.store = store
        self.data_dir = Path(data_dir)
        self.saes_dir = self.data_dir / "saes"
        self.logs_dir = self.data_dir / "jobs" / "logs"
        self.run_dir = self.data_dir / "jobs" / "run"  # one empty private working folder per running job
        self.python, self.n_gpus, self.device = python, max(1, int(n_gpus)), device
        self.max_running = max(1, int(max_running))
        self.on_success = on_success
        self.poll_interval, self.term_grace = poll_interval, term_grace
        self.pipeline_fn = pipeline_fn
        self.env = child_env(env)
        self._active: dict[str, _Active] = {}
        self._ready: list[str] = []  # jobs whose pipeline finished inside _launch (only skipped steps left)
        self._tails: OrderedDict[str, MetricsTail] = OrderedDict()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for d in (self.data_dir / "jobs", self.saes_dir, self.logs_dir, self.run_dir):
            private_dir(d)

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        """Recover jobs left by a previous server, then tick in a daemon thread (or not: tests tick by hand)."""
        self.recover()
        if background and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="jumpscope-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop ticking. Job processes keep running; the next server adopts or fails them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def recover(self) -> None:
        """Fail 'running' jobs whose process died; adopt those whose process outlived the previous server."""
        self.store.fail_dead_jobs(lambda r: procs.pid_alive(r.pid, r.pid_start))
        for rec in self.store.list(limit=1_000_000, statuses=["running"]):
            if rec.id in self._active or rec.pid is None:
                continue
            try:
                steps = self._steps(rec)
            except ValueError:
                steps = []
            names = [s.phase for s in steps]
            current = steps[names.index(rec.phase):] if rec.phase in names else steps[-1:]
            if not current:  # nothing we know how to continue: watch it end, then fail it
                current = [Step("train", rec.phase, ())]
            log.info("job %s: adopting pid %s (still %s)", rec.id, rec.pid, rec.phase)
            self._active[rec.id] = _Active(rec.id, current, rec.pid, None, rec.pid_start)

    def _steps(self, rec: JobRecord) -> list[Step]:
        """The pipeline still to run for a record (ValueError when its spec no longer validates)."""
        if is_explain(rec.spec):
            return explain_pipeline(ExplainJobSpec.model_validate(rec.spec), Path(rec.out_dir), python=self.python)
        spec = JobSpec.model_validate(rec.spec)
        return self.pipeline_fn(spec, Path(rec.out_dir), resume=rec.resume, python=self.python,
                                n_gpus=self.n_gpus, device=self.device)

    def _loop(self) -> None:
        store_down = False
        while not self._stop.wait(self.poll_interval):
            try:
                self.tick()
                store_down = False
            except JobStoreError as e:  # a damaged jobs.db: say so once, not every second
                if not store_down:
                    log.error("job runner paused: %s", e)
                store_down = True
            except Exception:  # never let one bad tick kill the watcher
                log.exception("job runner tick failed")

    # --- requests ---------------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> JobRecord:
        """Queue a job (spec already confined); raises JobConflict when the SAE folder name is taken."""
        job_id = uuid.uuid4().hex[:12]
        name = spec.name or f"job-{job_id}"
        out_dir = self.saes_dir / name
        if self.store.name_taken(name):
            raise JobConflict(f"a job named {name!r} already exists; pick another name, or delete that job first "
                              "(POST /api/admin/jobs/<id>/delete?files=true also removes its SAE folder)")
        if out_dir.exists():
            raise JobConflict(f"an SAE folder named {name!r} already exists in {self.saes_dir.name}/; pick another "
                              "name or remove that folder")
        try:
            rec = self.store.create(name, spec.model_dump(), out_dir, self.logs_dir / f"{job_id}.log", job_id=job_id)
        except ValueError as e:
            raise JobConflict(str(e)) from None
        append_log(rec.log_path, f"queued: {spec.kind} job, SAE folder {out_dir}")
        return rec

    def submit_explain(self, spec: ExplainJobSpec) -> JobRecord:
        """Queue an explain job for the SAE folder data_dir/saes/<spec.sae> (KeyError when it has no index)."""
        sae_dir = self.saes_dir / spec.sae
        if not (sae_dir / "index.db").is_file():
            raise KeyError(f"no indexed SAE {spec.sae!r} in {self.saes_dir.name}/ (index it first)")
        job_id = uuid.uuid4().hex[:12]
        try:
            rec = self.store.create(f"explain-{spec.sae}-{job_id[:6]}", spec.model_dump(), sae_dir,
                                    self.logs_dir / f"{job_id}.log", job_id=job_id)
        except ValueError as e:
            raise JobConflict(str(e)) from None
        append_log(rec.log_path, f"queued: explain job ({spec.explainer}) for SAE folder {sae_dir}")
        return rec

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job: its process group gets SIGTERM now and SIGKILL after the grace."""
        with self._lock:
            rec = self._get(job_id)
            if rec.status == "cancelled":
                return rec
            if not self.store.transition(job_id, ACTIVE_STATUSES, status="cancelled", finished_at=time.time()):
                raise JobConflict(f"job {job_id} already {self._get(job_id).status}")
            act = self._active.get(job_id)
            if act is not None and act.term_sent_at is None:
                procs.signal_group(act.pid)
                act.term_sent_at = time.monotonic()
            append_log(rec.log_path, "cancel requested")
            return self._get(job_id)

    def resume(self, job_id: str) -> JobRecord:
        """Queue a failed or cancelled job again; training continues from its last checkpoint."""
        with self._lock:
            rec = self._get(job_id)
            if job_id in self._active:
                raise JobConflict(f"job {job_id} is still stopping; try again in a few seconds")
            if not rec.resumable:
                raise JobConflict(f"only failed or cancelled jobs can be resumed (this one is {rec.status})")
            self.store.transition(job_id, RESUMABLE_STATUSES, status="queued", phase="queued", resume=True,
                                  error=None, finished_at=None, pid=None, pid_start=None)
            append_log(rec.log_path, "resume requested")
            return self._get(job_id)

    def delete(self, job_id: str, files: bool = False) -> JobRecord:
        """Delete a finished job's record (its name is free again); `files` also removes its SAE folder and log.

        Refused (JobConflict) while the job is queued or running, or its process is still stopping. Returns the
        deleted record. Only paths inside data_dir/saes and data_dir/jobs/logs are ever removed.
        """
        with self._lock:
            rec = self._get(job_id)
            if rec.active or job_id in self._active:
                raise JobConflict(f"job {job_id} is {rec.status if rec.active else 'still stopping'}; "
                                  "cancel it and wait until it stopped before deleting it")
            if not self.store.delete(job_id):
                raise KeyError(job_id)
            self._tails.pop(job_id, None)
            shutil.rmtree(self.run_dir / job_id, ignore_errors=True)
        if files and not is_explain(rec.spec):  # an explain job's SAE folder is not its own
            remove_inside(rec.out_dir, self.saes_dir)
            remove_inside(rec.log_path, self.logs_dir)
        log.info("job %s (%s) deleted%s", job_id, rec.name, " with its files" if files else "")
        return rec

    def get(self, job_id: str) -> JobRecord | None:
        """The stored record (None when unknown)."""
        return self.store.get(job_id)

    def metrics_rows(self, job_id: str) -> list[dict[str, Any]]:
        """All metrics rows of the job so far (restarts folded); [] before the first."""
        rec = self._get(job_id)
        with self._lock:
            tail = self._tails.get(job_id)
            if tail is None:
                tail = self._tails[job_id] = MetricsTail(Path(rec.out_dir) / METRICS_FILE)
                while len(self._tails) > 64:
                    self._tails.popitem(last=False)
            self._tails.move_to_end(job_id)
            return list(tail.refresh())

    def log_tail(self, job_id: str, max_bytes: int = 8192) -> str:
        """The end of the job's log (whole lines, undecodable bytes replaced)."""
        return read_tail(self._get(job_id).log_path, max_bytes)

    def _get(self, job_id: str) -> JobRecord:
        rec = self.store.get(job_id)
        if rec is None:
            raise KeyError(job_id)
        return rec

    # --- the tick ---------------------------------------------------------------------------------------
    def tick(self) -> None:
        """One round: watch running steps, advance or finish pipelines, start queued jobs."""
        finished: list[str] = []
        with self._lock:
            for job_id in list(self._active):
                if self._watch(self._active[job_id]):
                    finished.append(job_id)
            self._start_queued()
            finished += self._ready
            self._ready = []
        for job_id in finished:  # outside the lock: registering an SAE may take a while
            self._succeed(job_id)

    def _watch(self, act: _Active) -> bool:
        """Poll one active job; returns True when its whole pipeline succeeded."""
        rec = self._get(act.job_id)
        if act.steps[0].name == "train":
            self._update_progress(rec)
        elif act.steps[0].name == "explain" and is_explain(rec.spec):
            done = read_progress(rec.out_dir)
            if done is not None and abs(done - rec.progress) > 1e-9:
                self.store.update(rec.id, progress=done)
        if act.term_sent_at is not None and time.monotonic() - act.term_sent_at > self.term_grace:
            procs.kill_group(act.pid)
        rc = act.proc.poll() if act.proc is not None else (None if procs.pid_alive(act.pid, act.pid_start) else "gone")
        if rc is None:
            return False
        procs.kill_group(act.pid)  # stragglers of the step (torchrun workers, data loaders)
        step = act.steps.pop(0)
        rec = self._get(act.job_id)
        if rec.status != "running":  # cancelled while it ran
            append_log(rec.log_path, f"{step.name} stopped ({_describe_rc(rc)}); job {rec.status}")
            self._finish(act, status=None)
            return False
        ok = rc == 0 or (rc == "gone" and (step.name != "train" or _has_sae(rec)))
        if not ok:
            self._finish(act, status="failed", error=f"{step.name} failed ({_describe_rc(rc)}); see the log")
            return False
        append_log(rec.log_path, f"{step.name} done")
        if step.name == "train":
            self._update_progress(rec, final=True)
        if act.steps:
            self._launch(act.job_id, act.steps)  # a job with only skipped steps left lands in _ready
            return False
        del self._active[act.job_id]
        return True

    def _update_progress(self, rec: JobRecord, final: bool = False) -> None:
        rows = self.metrics_rows(rec.id)
        latest = rows[-1] if rows else {}
        progress = 1.0 if final else progress_of(latest)
        if latest and (latest != rec.metrics or abs(progress - rec.progress) > 1e-9):
            self.store.update(rec.id, metrics=latest, progress=progress)

    def _start_queued(self) -> None:
        free = self.max_running - len(self._active)
        if free <= 0:
            return
        for rec in reversed(self.store.list(limit=10_000, statuses=["queued"])):  # oldest first
            if free <= 0:
                break
            try:
                steps = self._steps(rec)
            except ValueError as e:  # a record this version cannot read (e.g. written by an older schema)
                self.store.transition(rec.id, ["queued"], status="failed", error=f"unreadable job spec: {e}",
                                      finished_at=time.time())
                continue
            trains = any(s.name == "train" for s in steps)
            if not self.store.transition(rec.id, ["queued"], status="running", started_at=time.time(),
                                         attempts=rec.attempts + int(trains)):
                continue
            if self._launch(rec.id, steps):
                free -= 1

    def _launch(self, job_id: str, steps: list[Step]) -> bool:
        """Start steps[0] in its own process group (skipped steps are noted and passed); on failure the job fails.

        Returns False when nothing was started (spawn failed, or only skipped steps were left: then the job
        is left in the runner's finished list for `tick` to complete).
        """
        rec = self._get(job_id)
        while steps and steps[0].note is not None:
            append_log(rec.log_path, f"note: {steps[0].note}")
            steps = steps[1:]
        if not steps:
            self._active.pop(job_id, None)
            self._ready.append(job_id)
            return False
        step = steps[0]
        append_log(rec.log_path, f"{step.name}: {' '.join(step.argv)}")
        try:
            # An empty private cwd: relative names (a hub id like 'org/name') cannot pick up a local folder.
            cwd = fresh_private_dir(self.run_dir / job_id)
            with open_log(rec.log_path) as fh:
                proc = subprocess.Popen(step.argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=str(cwd), env=self.env, start_new_session=True, umask=JOB_UMASK)
        except OSError as e:
            self._active.pop(job_id, None)
            self.store.update(job_id, status="failed", phase=step.phase, error=f"could not start {step.name}: {e}",
                              finished_at=time.time(), pid=None, pid_start=None)
            return False
        start = procs.process_start_time(proc.pid)
        self._active[job_id] = _Active(job_id, list(steps), proc.pid, proc, start)
        self.store.transition(job_id, ["running"], phase=step.phase, pid=proc.pid, pid_start=start)
        log.info("job %s: %s started (pid %d)", job_id, step.name, proc.pid)
        return True

    def _finish(self, act: _Active, status: str | None, error: str | None = None) -> None:
        self._active.pop(act.job_id, None)
        shutil.rmtree(self.run_dir / act.job_id, ignore_errors=True)
        fields: dict[str, Any] = {"pid": None, "pid_start": None}
        if status is not None:
            self.store.transition(act.job_id, ["running"], status=status, error=error, finished_at=time.time(),
                                  **fields)
            append_log(self._get(act.job_id).log_path, f"job {status}" + (f": {error}" if error else ""))
        else:
            self.store.update(act.job_id, **fields)

    def _succeed(self, job_id: str) -> None:
        rec = self._get(job_id)
        shutil.rmtree(self.run_dir / job_id, ignore_errors=True)
        note = None
        try:
            folders = [Path(rec.out_dir)] if is_explain(rec.spec) else sae_folders(rec.spec, rec.out_dir)
            for folder in folders:  # a sweep job: each of its SAEs
                if label_sae(folder, rec.spec):  # activation-file jobs: the spec's LM and hook into cfg.json
                    append_log(rec.log_path, f"{folder.name}/cfg.json labelled with the job's model, hook and layer")
                if self.on_success is not None and not is_explain(rec.spec):  # explain jobs add no new SAE
                    self.on_success(rec, folder)
        except Exception as e:  # the SAE is trained and on disk; say why it is not served
            log.exception("job %s: registering the SAE failed", job_id)
            note = f"trained, but the app could not load the SAE: {type(e).__name__}: {e}"
        if self.store.transition(job_id, ["running"], status="succeeded", phase="done", progress=1.0, error=note,
                                 finished_at=time.time(), pid=None, pid_start=None):
            append_log(rec.log_path, "job succeeded" + (f" ({note})" if note else ""))


def _has_sae(rec: JobRecord) -> bool:
    return all((Path(rec.out_dir) / f).is_file() for f in SAE_FILES)


def _describe_rc(rc: int | str) -> str:
    if rc == "gone":
        return "process gone, exit status unknown"
    if isinstance(rc, int) and rc < 0:
        return f"killed by signal {-rc}"
    return f"exit code {rc}"


