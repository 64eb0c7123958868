"""Admin training jobs over HTTP: the JSON API (`/api/admin/jobs...`, SPEC §8), plus the /admin pages
(app.web.routes.admin_pages, included here so the app factory only includes `router`).

Every route needs the admin token (bearer header, or the login cookie plus a CSRF token on writes; see
app.web.auth). The job runner starts with the app's lifespan — recovering jobs of a previous server and
serving the SAEs of its succeeded jobs again — or lazily on the first admin request, and registers each finished
SAE with `services.register_sae`. A jobs.db that goes bad answers 503 (store_errors_as_503) on every admin route.

DELETE /api/admin/jobs/{id} cancels (as before); POST /api/admin/jobs/{id}/delete[?files=true] deletes the record
of a finished job (and its SAE folder and log), after which its name can be used again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from app.jobs import JobSpec
from app.jobs.explain_job import ExplainJobSpec
from app.jobs.runner import JobConflict
from app.web.admin_service import (
    DeletedJob,
    JobOut,
    act,
    delete_job,
    find_job,
    job_out,
    launch,
    runner_of,
    start_runner,
    stop_runner,
    store_errors_as_503,
)
from app.web.auth import AdminAuth, require_admin
from app.web.rendering import is_htmx
from app.web.routes import admin_pages


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the job runner with the server (recovering jobs of a previous run); stop watching on shutdown."""
    start_runner(app)
    yield
    stop_runner(app)


Admin = Annotated[AdminAuth, Depends(require_admin)]  # every admin API route needs the token
router = APIRouter(lifespan=_lifespan, dependencies=[Depends(store_errors_as_503)])
router.include_router(admin_pages.router)  # the router's dependencies apply to these routes too
# The API handlers are plain functions: FastAPI runs them in its thread pool, so SQLite writes and log reads
# never block the event loop.


@router.post("/api/admin/jobs", status_code=201, response_model=JobOut, tags=["admin"])
def create_job(spec: JobSpec, request: Request, _: Admin) -> JobOut:
    """Launch a training job (corpus through an LM hook, or an activation file). Paths are under the corpus root."""
    rec = launch(request, spec)
    return job_out(runner_of(request), rec)


@router.post("/api/admin/explain", status_code=201, response_model=JobOut, tags=["admin"])
def create_explain_job(spec: ExplainJobSpec, request: Request, _: Admin) -> JobOut:
    """Label (and score) the latents of an indexed SAE folder under data_dir/saes/ as a job: progress, cancel and
    resume like any job (a rerun skips latents already explained). 404 when no such indexed SAE."""
    runner = runner_of(request)
    try:
        rec = runner.submit_explain(spec)
    except KeyError as e:
        raise HTTPException(404, str(e.args[0])) from None
    except JobConflict as e:
        raise HTTPException(409, str(e)) from None
    return job_out(runner, rec)


@router.get("/api/admin/jobs", response_model=list[JobOut], tags=["admin"])
def list_jobs(request: Request, _: Admin) -> list[JobOut]:
    """All jobs, newest first (latest metrics only)."""
    runner = runner_of(request)
    return [job_out(runner, r) for r in runner.store.list(limit=500)]


@router.get("/api/admin/jobs/{job_id}", response_model=JobOut, tags=["admin"])
def get_job(job_id: str, request: Request, _: Admin) -> JobOut:
    """One job with its metric series and log tail."""
    runner = runner_of(request)
    return job_out(runner, find_job(runner, job_id), detail=True)


@router.delete("/api/admin/jobs/{job_id}", response_model=JobOut, tags=["admin"])
def cancel_job(job_id: str, request: Request, _: Admin) -> JobOut:
    """Cancel a queued or running job (its whole process tree is stopped). 409 when it already finished."""
    runner = runner_of(request)
    return job_out(runner, act(runner, job_id, "cancel"))


@router.post("/api/admin/jobs/{job_id}/resume", response_model=JobOut, tags=["admin"])
def resume_job(job_id: str, request: Request, _: Admin) -> JobOut:
    """Queue a failed or cancelled job again; training continues from its last checkpoint."""
    runner = runner_of(request)
    return job_out(runner, act(runner, job_id, "resume"))


@router.post("/api/admin/jobs/{job_id}/delete", response_model=DeletedJob, tags=["admin"])
def delete_job_record(job_id: str, request: Request, _: Admin,
                      files: bool = Query(False, description="also remove its SAE folder and log")) -> DeletedJob:
    """Delete a finished (succeeded, failed or cancelled) job's record; its name can then be used again once no
    SAE folder of that name is left (`files=true` removes it, and takes a served SAE out of the selector).
    409 while the job is queued or running: cancel it first."""
    return delete_job(request, job_id, files)


@router.post("/admin/jobs/{job_id}/delete", include_in_schema=False)
async def admin_delete(job_id: str, request: Request, _: Admin) -> Response:
    """The job page's delete form (checkbox `files`); back to the job list afterwards."""
    form = await request.form()
    await run_in_threadpool(delete_job, request, job_id, form.get("files") in ("1", "true", "on"))
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": "/admin"})
    return RedirectResponse("/admin", status_code=303)
