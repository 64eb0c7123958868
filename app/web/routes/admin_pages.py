"""The /admin pages: login, the job launch form and list, and a job page whose widget polls itself every 2 s
while the job is active (the swapped-in widget of a finished job has no trigger, so polling stops).

Forms work without JavaScript (POST, then a 303 redirect); with htmx they swap partials. Every state-changing
form carries the session's CSRF token (checked by app.web.auth.require_admin).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from app.jobs import JobRecord, JobSpec
from app.jobs.metrics import series
from app.web import auth
from app.web.admin_service import act, corpus_root, find_job, launch, runner_of
from app.web.auth import AdminAuth, require_admin
from app.web.deps import get_settings
from app.web.rendering import is_htmx, render
from app.web.viz import svg_polyline

router = APIRouter(include_in_schema=False)


def _when(t: float | None) -> str:
    """A job timestamp as local date and time ('–' when unset)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "–"


Admin = Annotated[AdminAuth, Depends(require_admin)]

FORM_FIELDS = ("name", "model", "hook", "layer", "d_sae", "l0_coefficient", "target_l0", "tokens", "corpus",
               "activations", "context_size", "seed", "polish_share", "sweep_layer", "sweep_d_sae", "sweep_target_l0")
SWEEP_PREFIX = "sweep_"  # form fields holding a sweep's comma lists (JobSpec.sweep)
PLOT_W, PLOT_H = 320, 120


def _see_other(url: str, request: Request) -> Response:
    """Redirect after a POST: a real 303 for plain forms, HX-Redirect for htmx."""
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


# --- login -------------------------------------------------------------------------------------------------
@router.get("/admin")
async def admin_home(request: Request) -> Response:
    """The job form and list when logged in; the login form otherwise."""
    who = auth.authenticate(request)
    if who is None:
        return _login_page(request)
    return _home(request, who, form={}, errors=[])


def _login_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    csrf = auth.login_csrf_value(request)
    response = render(request, "admin_login.html", "admin_login.html", {"error": error, "login_csrf": csrf}, status)
    auth.set_login_csrf_cookie(response, request, csrf)
    return response


@router.post("/admin/login")
async def admin_login(request: Request) -> Response:
    """Trade the admin token for a server-side session (cookie: HttpOnly, SameSite=Strict, a random id).

    Wrong tokens count towards the client's failure limit; past it the answer is 429 with Retry-After."""
    token = auth.admin_token(request)
    if token is None:
        raise HTTPException(403, "the admin is disabled: no admin token is configured (JUMPSCOPE_ADMIN_TOKEN)")
    try:
        auth.check_throttle(request)
    except HTTPException as e:
        response = _login_page(request, str(e.detail), e.status_code)
        response.headers.update(e.headers or {})
        return response
    form = await request.form()
    given, csrf = form.get("token"), form.get(auth.CSRF_FIELD)
    if not auth.login_csrf_ok(request, csrf if isinstance(csrf, str) else None):
        return _login_page(request, "the login form expired; please try again", 403)
    if not isinstance(given, str) or not auth.tokens_equal(given.strip(), token):
        auth.note_failure(request)
        return _login_page(request, "wrong admin token", 401)
    response = RedirectResponse("/admin", status_code=303)
    auth.set_session_cookie(response, request, auth.start_session(request, token))
    return response


@router.post("/admin/logout")
async def admin_logout(request: Request, _: Admin) -> Response:
    """End the session server-side (the old cookie no longer works) and drop the cookie."""
    auth.end_session(request)
    response = RedirectResponse("/admin", status_code=303)
    auth.clear_session_cookie(response, request)
    return response


# --- jobs --------------------------------------------------------------------------------------------------
def _home(request: Request, who: AdminAuth, form: dict[str, str], errors: list[str], status: int = 200) -> Response:
    runner = runner_of(request)
    ctx = {"jobs": runner.store.list(limit=200), "form": form, "errors": errors, "csrf": who.csrf,
           "corpus_root": str(corpus_root(get_settings(request))), "when": _when}
    ctx["any_active"] = any(j.active for j in ctx["jobs"])
    return render(request, "admin.html", "partials/_admin_job_form.html", ctx, status)


@router.get("/admin/jobs")
async def admin_jobs(request: Request, who: Admin) -> Response:
    """The job list (the partial polls itself while any job is active)."""
    runner = runner_of(request)
    jobs = runner.store.list(limit=200)
    ctx = {"jobs": jobs, "any_active": any(j.active for j in jobs), "csrf": who.csrf, "when": _when}
    return render(request, "admin_jobs.html", "partials/_admin_jobs.html", ctx)


@router.post("/admin/jobs")
async def admin_launch(request: Request, who: Admin) -> Response:
    """Launch a job from the form; errors re-render the form (422/400/409) with what to fix."""
    raw = await request.form()
    form = {k: v.strip() for k in FORM_FIELDS if isinstance(v := raw.get(k), str)}
    data: dict[str, Any] = {k: v for k, v in form.items() if v != ""}
    source = raw.get("source")
    if source in ("corpus", "activations"):  # the form has both inputs; only the chosen source counts
        data.pop("activations" if source == "corpus" else "corpus", None)  # model: both need it (the hook's LM)
    sweep = {k[len(SWEEP_PREFIX):]: [x.strip() for x in data.pop(k).split(",")]
             for k in list(data) if k.startswith(SWEEP_PREFIX)}
    if sweep:
        data["sweep"] = sweep  # JobSpec checks the items (numbers, ranges, at most 16 SAEs)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        errors = [f"{'.'.join(str(p) for p in err['loc']) or 'form'}: {err['msg']}" for err in e.errors()]
        return _home(request, who, form, errors, 422)
    try:
        rec = launch(request, spec)
    except HTTPException as e:
        return _home(request, who, form, [str(e.detail)], e.status_code)
    return _see_other(f"/admin/jobs/{rec.id}", request)


@router.get("/admin/jobs/{job_id}")
async def admin_job(job_id: str, request: Request, who: Admin) -> Response:
    """The job page; htmx polls get only the widget."""
    runner = runner_of(request)
    rec = find_job(runner, job_id)
    return render(request, "admin_job.html", "partials/_admin_job.html", job_context(runner, rec, who.csrf))


@router.post("/admin/jobs/{job_id}/cancel")
async def admin_cancel(job_id: str, request: Request, who: Admin) -> Response:
    return _after_action(job_id, "cancel", request, who)


@router.post("/admin/jobs/{job_id}/resume")
async def admin_resume(job_id: str, request: Request, who: Admin) -> Response:
    return _after_action(job_id, "resume", request, who)


def _after_action(job_id: str, action: str, request: Request, who: AdminAuth) -> Response:
    runner = runner_of(request)
    rec = act(runner, job_id, action)
    if not is_htmx(request):
        return RedirectResponse(f"/admin/jobs/{job_id}", status_code=303)
    return render(request, "admin_job.html", "partials/_admin_job.html", job_context(runner, rec, who.csrf))


def job_context(runner, rec: JobRecord, csrf: str | None) -> dict[str, Any]:
    """Template context of a job widget: record, latest metrics, loss/L0 plots and the log tail."""
    rows = runner.metrics_rows(rec.id)
    s = series(rows)
    plots = [{"key": k, "label": label, **svg_polyline(s["step"], s[k], PLOT_W, PLOT_H)}
             for k, label in (("loss", "loss"), ("l0", "L0"))]
    return {"job": rec, "latest": rows[-1] if rows else rec.metrics, "plots": plots, "plot_w": PLOT_W,
            "plot_h": PLOT_H, "log_tail": runner.log_tail(rec.id, 6000), "csrf": csrf, "when": _when}
