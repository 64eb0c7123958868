"""Fuzz the JSON API from its own OpenAPI schema (schemathesis, in-process ASGI): every operation gets
schema-valid and schema-violating requests, with and without the admin token.

Properties: no 5xx, no hang (each call well under a generous bound), and every 4xx answer is JSON with a
`detail`. The total number of requests is counted and asserted (≥ 500), so the fuzzing cannot silently shrink.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from tests.reliability.conftest import ADMIN_TOKEN

# Per operation and mode; with ~10 operations × 2 modes × 2 auth states this is several hundred requests.
EXAMPLES = {GenerationMode.POSITIVE: 45, GenerationMode.NEGATIVE: 30}
MIN_REQUESTS = 500
HANG_S = 60.0  # a request taking this long on a tiny model is a hang, not slowness

COUNTS: Counter = Counter()
STATUSES: Counter = Counter()


@pytest.fixture(scope="module")
def fuzz_app(rel_services, tmp_path_factory):
    from app.web import create_app
    from app.web.settings import Settings

    root = tmp_path_factory.mktemp("fuzz")
    (root / "corpora").mkdir()  # empty: no job spec can name an existing corpus, so no job can launch
    settings = Settings(data_dir=root / "data", corpus_root=root / "corpora", admin_token=ADMIN_TOKEN,
                        max_prompt_tokens=48, max_new_tokens=6, max_interventions=4, max_top_k=16,
                        max_body_bytes=64 * 1024)
    return create_app(settings, services=rel_services)


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


def _operations(schema):
    ops = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.startswith("/api"):
            ops.append(op)
    return ops


def _check(case, response, elapsed: float) -> None:
    where = f"{case.method} {case.formatted_path} body={getattr(case, 'body', None)!r:.300}"
    assert elapsed < HANG_S, f"{where}: took {elapsed:.1f}s"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        ctype = (response.headers.get("content-type") or [""])[0]
        assert ctype.startswith("application/json"), f"{where}: error is {ctype!r}, not JSON"
        body = response.json()
        assert isinstance(body, dict) and "detail" in body, f"{where}: error without detail: {body!r}"


SAE_IDS = ("good-sae", "plain-sae")
D_SAE_MIN = 48  # the smaller SAE's width: latents below it exist in both


def _aim(case, n: int) -> None:
    """Point every other schema-valid case at a loaded SAE, an existing latent and the server's limits, so
    fuzzing reaches the model code instead of stopping at a 404 or a limit's 422 (both tested elsewhere)."""
    if n % 2:
        return
    sae = SAE_IDS[(n // 2) % 2]
    params = case.path_parameters or {}
    if "sae" in params:
        params["sae"] = sae
    if isinstance(params.get("latent"), int):
        params["latent"] = abs(params["latent"]) % D_SAE_MIN
    body = case.body
    if isinstance(body, dict):
        body["sae"] = sae
        for key, limit in (("top_k", 16), ("max_new_tokens", 6)):
            if isinstance(body.get(key), int):
                body[key] = 1 + abs(body[key]) % limit
        for key in ("latents", "interventions"):
            if isinstance(body.get(key), list):
                body[key] = body[key][:4]
        if isinstance(body.get("latents"), list):
            body["latents"] = [abs(x) % D_SAE_MIN if isinstance(x, int) else x for x in body["latents"]]
        for item in body.get("interventions") or []:
            if isinstance(item, dict) and isinstance(item.get("latent"), int):
                item["latent"] = abs(item["latent"]) % D_SAE_MIN


def _fuzz(op, mode: GenerationMode, headers: dict[str, str] | None) -> None:
    strategy = op.as_strategy(generation_mode=mode)

    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        if headers:
            case.headers = {**(case.headers or {}), **headers}
        if mode is GenerationMode.POSITIVE:
            _aim(case, COUNTS[(op.method.upper(), op.path)])
        t0 = time.perf_counter()
        response = case.call()
        elapsed = time.perf_counter() - t0
        COUNTS[(op.method.upper(), op.path)] += 1
        STATUSES[response.status_code] += 1
        _check(case, response, elapsed)

    try:
        run()
    except Unsatisfiable:
        # An operation whose inputs are all free strings (or none) has no schema-violating form.
        assert mode is GenerationMode.NEGATIVE, op.label


@pytest.mark.timeout(600)
def test_fuzz_every_api_operation(api_schema, fuzz_app):
    ops = _operations(api_schema)
    routes = {(op.method.upper(), op.path) for op in ops}
    # The SPEC §8 routes must all be in the schema (so they are all fuzzed).
    for route in [("GET", "/api/health"), ("GET", "/api/saes"), ("POST", "/api/encode"),
                  ("GET", "/api/saes/{sae}/latents/{latent}"), ("POST", "/api/steer"), ("POST", "/api/ablate"),
                  ("GET", "/api/admin/jobs"), ("POST", "/api/admin/jobs"), ("GET", "/api/admin/jobs/{job_id}"),
                  ("DELETE", "/api/admin/jobs/{job_id}")]:
        assert route in routes, f"{route} missing from the OpenAPI schema"
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for op in ops:
        admin = op.path.startswith("/api/admin")
        for mode in EXAMPLES:
            _fuzz(op, mode, None)
            if admin:  # again with the token: past authentication, into validation and the handlers
                _fuzz(op, mode, bearer)
    total = sum(COUNTS.values())
    print(f"\nfuzzed requests: {total} over {len(COUNTS)} operations; statuses {dict(sorted(STATUSES.items()))}")
    assert total >= MIN_REQUESTS, f"only {total} fuzzed requests: {dict(COUNTS)}"
    assert all(COUNTS[r] > 0 for r in routes), "an operation got no requests"
    # Nothing the fuzzer sent may have launched a training process (the corpus root is empty).
    runner = getattr(fuzz_app.state, "job_runner", None)
    if runner is not None:
        assert all(r.status in ("failed", "cancelled") for r in runner.store.list(limit=1000))
