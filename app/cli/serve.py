"""`jumpscope serve [--model M --sae DIR ...] [--host --port]`: run the web app with uvicorn.

With no model and no SAE (on the command line or in JUMPSCOPE_MODEL / JUMPSCOPE_SAES) it serves the embedded
demo bundle, building it on first use. This is the only CLI module that imports the web stack.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from app.cli.common import CLIError
from app.runtime import CACHE_ENV

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the web app (no arguments: the embedded demo)",
                       description="Serve the JumpScope web app. Settings also come from JUMPSCOPE_* variables.")
    p.add_argument("--model", help="LM folder, .gguf file or hub id (default: model_name in the first SAE's cfg.json)")
    p.add_argument("--sae", action="append", default=None, metavar="DIR",
                   help="SAE folder, Gemma Scope params.npz, hf://OWNER/REPO/PATH or saelens://RELEASE/SAE_ID; "
                        "repeat for several (e.g. one model's layers)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--dtype", help="auto (default: bf16 on CUDA, float32 on CPU), float32, bfloat16")
    p.add_argument("--data-dir", type=Path, help="where admin jobs keep their runs and database")
    p.add_argument("--corpus-root", type=Path, help="training corpora must lie under this folder")
    p.add_argument("--cache", "--demo-cache", dest="cache", type=Path,
                   help="cache folder: the demo bundle, converted GGUF models, Hub SAEs "
                        "(default $JUMPSCOPE_CACHE or ~/.cache/jumpscope)")
    p.add_argument("--allowed-host", action="append", default=None, metavar="NAME",
                   help="a Host name this server answers to (repeat; default: the bind host, plus localhost, "
                        "127.0.0.1 and [::1] on loopback); others get 400")
    p.set_defaults(func=run)


def build_settings(args: argparse.Namespace):
    """Settings from JUMPSCOPE_* variables overridden by the command line; the demo when nothing is named."""
    from pydantic import ValidationError

    from app.web.settings import Settings

    overrides = {k: v for k, v in {
        "model": args.model, "saes": args.sae, "device": args.device, "dtype": args.dtype,
        "data_dir": args.data_dir, "corpus_root": args.corpus_root, "cache": getattr(args, "cache", None),
        "allowed_hosts": getattr(args, "allowed_host", None)}.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        first = e.errors()[0]
        raise CLIError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    if settings.cache is not None:  # one cache for the server, the core (app.runtime.cache_dir) and job processes
        os.environ[CACHE_ENV] = str(settings.cache)
    if settings.model is None and not settings.saes:
        settings = settings.model_copy(update=_demo_paths(settings.cache))
    from app.sae.hub import resolve_sae_ref

    saes = [resolve_sae_ref(path) for path in settings.saes]  # hf:// and saelens:// fetched once, then offline
    for path in saes:
        if not Path(path).exists():
            raise CLIError(f"SAE {path} does not exist")
    return settings.model_copy(update={"saes": saes})


def _demo_paths(cache: Path | None) -> dict:
    from app.demo.bundle import ensure_demo

    log.info("no model or SAE given: serving the demo bundle (built on first use)")
    bundle = ensure_demo(cache)
    return {"model": str(bundle.model_dir), "saes": [Path(bundle.sae_dir)],
            "demo_report": Path(bundle.report_path)}


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.web import create_app
    from app.web.auth import prepare_admin
    from app.web.server import default_allowed_hosts, uvicorn_options

    settings = build_settings(args)
    # No admin token: admin off on a public address, a one-run token on localhost; a short token on a public
    # address is refused (ValueError → one line, exit 2).
    prepare_admin(settings, args.host)
    if settings.allowed_hosts is None:
        settings.allowed_hosts = default_allowed_hosts(args.host)
    log.info("answering to Host names: %s", ", ".join(settings.allowed_hosts))
    app = create_app(settings)
    log.info("JumpScope on http://%s:%d (API docs at /docs)", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", **uvicorn_options(settings))
    return 0
