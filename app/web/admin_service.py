"""The admin's job service for the web layer: the app's JobRunner (created once, started with the app), launch /
cancel / resume / delete with HTTP errors, the API view of a job, the SAEs of succeeded jobs loaded again at
start-up, and a damaged jobs.db answered with 503. Shared by the JSON API and the /admin pages."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from app.jobs import JobRecord, JobSpec, JobSpecError, JobStore, JobStoreError
from app.jobs.commands import sae_folders
from app.jobs.metrics import series
from app.jobs.runner import JobConflict, JobRunner
from app.web.deps import get_settings

log = logging.getLogger(__name__)
_runner_lock = threading.Lock()


# --- the runner -------------------------------------------------------------------------------------------
def corpus_root(settings: Any) -> Path:
    """settings.corpus_root, or data_dir/corpora when unset (created so the admin has somewhere to put data)."""
    root = getattr(settings, "corpus_root", None)
    if root is None:
        root = Path(settings.data_dir) / "corpora"
        root.mkdir(parents=True, exist_ok=True)
    return Path(root)


def start_runner(app: FastAPI) -> None:
    """At server start: the job runner, recovering the previous server's jobs and serving their SAEs again.

    A damaged jobs.db is logged by `get_runner`; the rest of the app serves and the admin says why.
    """
    if getattr(app.state, "settings", None) is None:
        return
    try:
        get_runner(app)
    except (HTTPException, JobStoreError):
        pass


def stop_runner(app: FastAPI) -> None:
    """At server shutdown: stop watching jobs and close the job store (a later start makes a new runner)."""
    runner = getattr(app.state, "job_runner", None)
    if runner is not None:
        runner.stop()
        runner.store.close()
        app.state.job_runner = None


def get_runner(app: FastAPI) -> JobRunner:
    """The app's JobRunner, created and started on first use."""
    runner = getattr(app.state, "job_runner", None)
    if runner is not None:
        restore_once(app, runner)
        return runner
    with _runner_lock:
        runner = getattr(app.state, "job_runner", None)
        if runner is None:
            settings = app.state.settings
            data_dir = Path(settings.data_dir)
            try:
                store = JobStore(data_dir / "jobs" / "jobs.db")
            except JobStoreError as e:
                # The explorer keeps serving; only the admin answers 503 with what to fix.
                log.error("admin jobs disabled: %s", e)
                raise HTTPException(503, f"training jobs are unavailable: {e}") from None
            runner = JobRunner(store, data_dir, n_gpus=settings.train_gpus, device=settings.device,
                               on_success=_register_with(app))
            runner.start()
            app.state.job_runner = runner
    restore_once(app, runner)
    return runner


def restore_once(app: FastAPI, runner: JobRunner) -> None:
    """restore_job_saes the first time a runner is used: at start-up with the app's lifespan, or (FastAPI
    versions that do not run router lifespans) with the first admin request."""
    if getattr(app.state, "job_saes_restored", False):
        return
    with _runner_lock:
        if getattr(app.state, "job_saes_restored", False):
            return
        app.state.job_saes_restored = True
    restore_job_saes(app, runner)


def store_errors_as_503() -> Iterator[None]:
    """Route dependency: a jobs.db that went bad while the app runs answers 503 with what to do, not 500."""
    try:
        yield
    except JobStoreError as e:
        raise HTTPException(503, f"training jobs are unavailable: {e}") from None


def restore_job_saes(app: FastAPI, runner: JobRunner) -> list[str]:
    """Load the SAE of every succeeded job into the app's registry (at start-up); returns the ids registered.

    A folder that is already served, gone, or cannot be loaded is skipped; a load failure is logged and listed in
    services.failed like an SAE given on the command line.
    """
    services = getattr(app.state, "services", None)
    if services is None or not hasattr(services, "register_sae"):
        return []
    served = {Path(e.folder).resolve() for e in services.entries()} if hasattr(services, "entries") else set()
    registered = []
    for rec in reversed(runner.store.list(limit=100_000, statuses=["succeeded"])):  # oldest first: stable ids
        try:
            folders = sae_folders(rec.spec, rec.out_dir)  # a sweep job: each of its SAEs
        except ValueError:
            folders = [Path(rec.out_dir)]
        for folder in folders:
            if folder.resolve() in served or not (folder / "cfg.json").is_file():
                continue
            try:
                registered.append(services.register_sae(folder))
            except Exception as e:  # one bad folder must not keep the others (or the app) from serving
                log.error("job %s: not serving its SAE %s: %s", rec.id, folder, e)
                if isinstance(getattr(services, "failed", None), dict):
                    services.failed[str(folder)] = str(e)
    if registered:
        log.info("serving %d SAE(s) trained by jobs: %s", len(registered), ", ".join(registered))
    return registered


def _register_with(app: FastAPI):
    """Callback for finished jobs: load the new SAE into the running app (it then shows in the SAE selector)."""

    def register(rec: JobRecord, folder: Path) -> None:
        services = getattr(app.state, "services", None)
        if services is None or not hasattr(services, "register_sae"):
            return
        sae_id = services.register_sae(folder)
        log.info("job %s: SAE registered as %s", rec.id, sae_id)

    return register


def runner_of(request: Request) -> JobRunner:
    return get_runner(request.app)


# --- API views -------------------------------------------------------------------------------------------
class JobMetrics(BaseModel):
    """Training metrics: the latest metrics.jsonl row, and (single-job answers) a thinned series for a plot."""

    latest: dict[str, Any] = Field(default_factory=dict)
    series: dict[str, list[float | None]] | None = None


class JobOut(BaseModel):
    """A training job as the API shows it."""

    id: str
    name: str = Field(description="SAE folder name (also the SAE id once it is registered)")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    phase: str = Field(description="queued, training, evaluating, indexing or done")
    progress: float = Field(ge=0, le=1, description="training progress, step / total_steps")
    metrics: JobMetrics
    error: str | None = Field(None, description="why the job failed, or a note")
    spec: dict[str, Any]
    sae_dir: str
    attempts: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    log_tail: str | None = Field(None, description="end of the job log (single-job answers)")


def job_out(runner: JobRunner, rec: JobRecord, detail: bool = False) -> JobOut:
    """The API view of a record; `detail` adds the metric series and the log tail."""
    metrics = JobMetrics(latest=rec.metrics)
    tail = None
    if detail:
        rows = runner.metrics_rows(rec.id)
        metrics = JobMetrics(latest=rows[-1] if rows else rec.metrics, series=series(rows))
        tail = runner.log_tail(rec.id)
    return JobOut(id=rec.id, name=rec.name, status=rec.status, phase=rec.phase, progress=rec.progress,
                  metrics=metrics, error=rec.error, spec=rec.spec, sae_dir=rec.out_dir, attempts=rec.attempts,
                  created_at=rec.created_at, started_at=rec.started_at, finished_at=rec.finished_at, log_tail=tail)


def launch(request: Request, spec: JobSpec) -> JobRecord:
    """Confine the spec's paths and queue it; 400 for a bad path, 422 for a spec no job could finish (too few
    tokens, an activation file without its model/hook/layer), 409 for a taken name."""
    runner = runner_of(request)
    try:
        confined = spec.confined(corpus_root(get_settings(request)))
        problem = confined.submit_problem()
        if problem is not None:
            raise HTTPException(422, problem)
        return runner.submit(confined)
    except JobSpecError as e:
        raise HTTPException(400, str(e)) from None
    except JobConflict as e:
        raise HTTPException(409, str(e)) from None


def find_job(runner: JobRunner, job_id: str) -> JobRecord:
    rec = runner.get(job_id) if len(job_id) <= 64 else None
    if rec is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return rec


def act(runner: JobRunner, job_id: str, action: str) -> JobRecord:
    """Cancel or resume; 404 unknown, 409 when the job's state does not allow it."""
    find_job(runner, job_id)
    try:
        return runner.cancel(job_id) if action == "cancel" else runner.resume(job_id)
    except JobConflict as e:
        raise HTTPException(409, str(e)) from None


class DeletedJob(BaseModel):
    """What deleting a job record did."""

    id: str
    name: str = Field(description="the job's name, free for a new job once no SAE folder of that name is left")
    files_removed: bool = Field(description="its SAE folder and log were removed too (files=true)")
    sae_unloaded: bool = Field(description="its SAE was served and was taken out of the SAE selector")


def delete_job(request: Request, job_id: str, files: bool) -> DeletedJob:
    """Delete a finished job's record (and with `files` its SAE folder and log); 404 unknown, 409 while active."""
    runner = runner_of(request)
    find_job(runner, job_id)
    try:
        rec = runner.delete(job_id, files=files)
    except JobConflict as e:
        raise HTTPException(409, str(e)) from None
    except KeyError:
        raise HTTPException(404, f"no job {job_id!r}") from None
    unloaded = _unload_sae(request.app, Path(rec.out_dir)) if files else False
    return DeletedJob(id=rec.id, name=rec.name, files_removed=files, sae_unloaded=unloaded)


def _unload_sae(app: FastAPI, folder: Path) -> bool:
    """Take the SAE served from `folder` out of the registry (its files are gone); True when one was."""
    services = getattr(app.state, "services", None)
    saes, lock = getattr(services, "saes", None), getattr(services, "_lock", None)
    if not isinstance(saes, dict) or lock is None:
        return False
    folder = folder.resolve()
    with lock:
        ids = [i for i, e in saes.items() if Path(e.folder).resolve() == folder]
        for i in ids:
            del saes[i]
    return bool(ids)
