"""Web app settings (pydantic-settings, env prefix JUMPSCOPE_); built by the app factory or the CLI, never
at import time."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.web.assets import vendor_files


class Settings(BaseSettings):
    """Everything `jumpscope serve` can be told; each field is also read from JUMPSCOPE_<FIELD>.

    Lists come from the environment as JSON, e.g. JUMPSCOPE_SAES='["runs/sae-a", "runs/sae-b"]'.
    """

    model_config = SettingsConfigDict(env_prefix="JUMPSCOPE_", extra="ignore", validate_default=True)

    model: str | None = Field(None, description="LM folder or hub id; default: model_name of the first SAE")
    saes: list[Path] = Field(default_factory=list, description="SAE folders, Gemma Scope params.npz, "
                             "hf://OWNER/REPO/PATH or saelens://RELEASE/SAE_ID references to load")
    data_dir: Path = Field(Path(".jumpscope"), description="where jobs, their SAEs and the jobs DB live")
    corpus_root: Path | None = Field(None, description="training corpora must lie under this folder")
    demo_report: Path | None = Field(None, description="the demo bundle's report.json, shown at /report; set by"
                                     " `jumpscope serve` when it serves the demo (unset: no report page)")
    admin_token: SecretStr | None = Field(None, description="bearer token for /admin and /api/admin; unset = off")
    train_gpus: int = Field(1, ge=1, description="GPUs per admin training job (torchrun --nproc_per_node when > 1)")
    cache: Path | None = Field(None, description="cache folder: the demo bundle, converted GGUF models, Hub SAEs"
                               " (unset: ~/.cache/jumpscope; `jumpscope serve` exports it for the core and jobs)")
    device: str = Field("auto", description="torch device: auto (CUDA when present), cpu, cuda, cuda:1 ...")
    dtype: str = Field("auto", description="LM dtype: auto (bf16 on CUDA, float32 on CPU), float32, bfloat16")
    max_prompt_tokens: int = Field(256, ge=2, description="longest prompt/text accepted, in tokens incl. BOS")
    max_new_tokens: int = Field(128, ge=1, description="largest max_new_tokens a steer request may ask")
    max_interventions: int = Field(16, ge=1, description="most latents one steer/ablate request may edit")
    max_top_k: int = Field(64, ge=1, description="largest top_k of an encode request")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest request body; bigger gets 413")
    allowed_hosts: list[str] | None = Field(None, description="Host header values served (e.g. [\"sae.example.org\","
                                            " \"*.example.org\"]); others get 400. Unset: `jumpscope serve` allows"
                                            " its bind host (+ localhost, 127.0.0.1, [::1] on loopback); [\"*\"] = any")
    cookie_secure: bool | None = Field(None, description="mark the admin cookies Secure; unset: only when the request"
                                       " came over https (directly or, with forwarded_allow_ips, via the proxy)")
    forwarded_allow_ips: list[str] | None = Field(None, description="proxy addresses whose X-Forwarded-For/-Proto"
                                                  " `jumpscope serve` trusts; unset: forwarded headers are ignored")
    auth_failures_per_minute: int = Field(10, ge=1, description="failed admin logins/tokens per client and minute"
                                          " before it gets 429 with Retry-After")
    limit_concurrency: int = Field(100, ge=1, description="open connections + tasks uvicorn allows before 503")
    timeout_keep_alive: int = Field(5, ge=1, description="seconds an idle keep-alive connection stays open")
    header_timeout: float = Field(10.0, gt=0, description="seconds a client has to send a request's headers"
                                  " (slow clients are disconnected)")
    htmx_path: Path = Field(default_factory=lambda: vendor_files()["htmx.min.js"],
                            description="htmx.min.js from the pinned npm package (never a CDN)")

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        v = v.strip().lower()
        if not (v in ("auto", "cpu", "mps") or v == "cuda" or v.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    def admin_token_value(self) -> str | None:
        """The admin token as plain text (None when admin is disabled)."""
        return self.admin_token.get_secret_value() if self.admin_token else None
