"""`--sae hf://OWNER/REPO[@REVISION]/PATH` and `--sae saelens://RELEASE/SAE_ID` (SPEC §9): pretrained SAEs from the Hub.

A reference resolves to a *workspace folder* `$JUMPSCOPE_CACHE/hub/OWNER/REPO--PATH` (default ~/.cache/jumpscope):
its `hub.json` names the repo, the resolved commit, the layout (app.sae.hub_layouts) and the SAE's complete metadata
(model_name, hook_name, ...). The weights stay where huggingface_hub put them, in the standard HF cache (HF_HOME /
HF_HUB_CACHE); fetched once with `snapshot_download(allow_patterns=PATH/*)`, offline afterwards (HF_HUB_OFFLINE=1
works once they are there). Everything JumpScope writes beside an SAE (index.db, eval.json) goes into the workspace,
so every command treats a resolved reference like an SAE folder, and the same reference finds them again.

Append `?hook=blocks.L.hook_<kind>` and/or `?model=HF_ID` to a reference to say what the files do not (a params.npz
outside a Gemma Scope repo, a cfg.json without hook_name). `saelens://` looks the release up in the registry of the
installed sae-lens package (imported only for such references) and continues as the matching `hf://` reference.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from app.fsio import atomic_write_json
from app.runtime import cache_dir
from app.sae import hub_layouts as layouts
from app.sae.errors import SAEFormatError
from app.sae.jumprelu import JumpReLUSAE
from app.sae.saelens import saelens_metadata

HUB_FILE = "hub.json"
_SCHEME = re.compile(r"^(hf|saelens):/+(.*)$", re.S)  # Path("hf://a/b") prints as "hf:/a/b": both are accepted
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FILES = ("params.npz", "params.safetensors", "cfg.json", "sae_weights.safetensors")
_QUERY_KEYS = ("hook", "model")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubRef:
    """A parsed reference: which repo folder, at which revision, with what the user or a registry adds."""

    repo_id: str
    path: str  # folder inside the repo, "" for the repo root
    revision: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # model_name / hook_name the files are told
    layout: str | None = None  # known in advance from the sae-lens registry
    defaults: dict[str, Any] = field(default_factory=dict)  # used when nothing else says (the registry's model)

    @property
    def text(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"hf://{self.repo_id}{rev}" + (f"/{self.path}" if self.path else "")


def is_hub_ref(ref: str | os.PathLike) -> bool:
    """Whether `ref` is an `hf://` or `saelens://` reference rather than a local path."""
    return bool(_SCHEME.match(str(ref)))


def resolve_sae_ref(ref: str | os.PathLike) -> Path:
    """The local folder for an `--sae` value: a path as given, a Hub reference as its (fetched) workspace folder."""
    if not is_hub_ref(ref):
        return Path(ref)
    hub = parse_ref(str(ref))
    known = layouts.gemma_scope_metadata(hub.repo_id, hub.path) or {}  # refuses attention/transcoder SAEs early
    folder, commit = _fetch(hub)
    layout = layouts.detect_layout(folder)
    if layout is None:
        have = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise SAEFormatError(f"{hub.text}: not an SAE folder (have {have}); expected cfg.json + "
                             "sae_weights.safetensors (SAELens), params.npz (Gemma Scope) or params.safetensors "
                             "(Gemma Scope 2)")
    if hub.layout and hub.layout != layout:
        log.warning("%s: the registry says %s, the files are %s; reading %s", hub.text, hub.layout, layout, layout)
    metadata = {**hub.defaults, **known, **_file_metadata(folder, layout), **hub.metadata, "hub_ref": hub.text}
    if not metadata.get("hook_name"):
        raise SAEFormatError(f"{hub.text}: cannot tell which hook point this SAE reads (its files do not say); "
                             "add ?hook=blocks.L.hook_<resid_pre|resid_post|attn_out|mlp_out> to the reference")
    workspace = workspace_for(hub)
    record = {"ref": hub.text, "repo_id": hub.repo_id, "revision": hub.revision, "commit": commit,
              "path": hub.path, "layout": layout, "metadata": metadata}
    path = workspace / HUB_FILE
    if not path.is_file() or _read_json(path) != record:
        try:
            atomic_write_json(path, record)
        except OSError as e:
            raise SAEFormatError(f"{hub.text}: cannot write {path} ({e}); set JUMPSCOPE_CACHE to a writable "
                                 "folder") from None
    return workspace


def parse_ref(ref: str) -> HubRef:
    """An `hf://` reference, or a `saelens://` one looked up in the sae-lens registry, as a HubRef."""
    m = _SCHEME.match(ref)
    if not m:
        raise SAEFormatError(f"{ref!r} is not an hf:// or saelens:// reference")
    scheme, rest = m.groups()
    rest, _, query = rest.partition("?")
    extra = _query(ref, query)
    if scheme == "saelens":
        return _from_registry(ref, rest.strip("/"), extra)
    parts = rest.strip("/").split("/")
    if len(parts) < 2:
        raise SAEFormatError(f"{ref!r}: expected hf://OWNER/REPO[@REVISION]/PATH/IN/REPO")
    owner, (repo, _, revision) = parts[0], parts[1].partition("@")
    path = [p for p in parts[2:] if p]
    if not (_NAME.match(owner) and _NAME.match(repo)) or any(p in (".", "..") for p in path):
        raise SAEFormatError(f"{ref!r}: not a valid OWNER/REPO/PATH (letters, digits, '.', '_', '-'; no '..')")
    if path and path[-1] in _FILES:  # a file of the SAE names its folder
        path = path[:-1]
    return HubRef(f"{owner}/{repo}", "/".join(path), revision or None, extra)


def _query(ref: str, query: str) -> dict[str, Any]:
    pairs = parse_qsl(query, keep_blank_values=True) if query else []
    unknown = [k for k, _ in pairs if k not in _QUERY_KEYS]
    if unknown or any(not v for _, v in pairs):
        raise SAEFormatError(f"{ref!r}: the query may set {' and '.join(_QUERY_KEYS)} (e.g. "
                             "?hook=blocks.6.hook_resid_post&model=google/gemma-2-2b), got {query!r}")
    names = {"hook": "hook_name", "model": "model_name"}
    return {names[k]: v for k, v in pairs}


def _from_registry(ref: str, rest: str, extra: dict[str, Any]) -> HubRef:
    """RELEASE/SAE_ID through sae-lens' pretrained-SAE registry (its YAML ships with the package: no network)."""
    release, _, sae_id = rest.partition("/")
    if not release or not sae_id:
        raise SAEFormatError(f"{ref!r}: expected saelens://RELEASE/SAE_ID")
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError:
        raise SAEFormatError(f"{ref}: saelens:// references need the sae-lens package (pip install "
                             "'jumpscope[interop]'); or give the repo folder as hf://OWNER/REPO/PATH") from None
    entry = get_pretrained_saes_directory().get(release)
    if entry is None:
        raise SAEFormatError(f"{ref}: sae-lens has no release {release!r}")
    if sae_id not in entry.saes_map:
        some = ", ".join(list(entry.saes_map)[:5])
        raise SAEFormatError(f"{ref}: release {release!r} has no SAE {sae_id!r} (it has e.g. {some})")
    conversion = entry.conversion_func or "sae_lens"
    layout = {"sae_lens": layouts.SAELENS, "gemma_2": layouts.GEMMA_SCOPE_1, "gemma_3": layouts.GEMMA_SCOPE_2}.get(
        conversion)
    if layout is None:
        raise SAEFormatError(f"{ref}: sae-lens converts release {release!r} with {conversion!r}; JumpScope reads "
                             "SAELens-format, Gemma Scope 1 and Gemma Scope 2 releases")
    overrides = dict(entry.config_overrides or {})
    norm = overrides.get("normalize_activations")
    if norm not in (None, "none") or entry.norm_scaling_factor.get(sae_id) is not None:
        raise SAEFormatError(f"{ref}: sae-lens normalises this SAE's inputs ({norm or 'norm_scaling_factor'}), "
                             "which JumpScope does not apply")
    meta = {k: overrides[k] for k in ("model_name", "hook_name") if overrides.get(k)}
    path = str(entry.saes_map[sae_id]).strip("/")
    return HubRef(entry.repo_id, path, None, {**meta, **extra}, layout, {"model_name": entry.model})


def _fetch(hub: HubRef, local_only: bool = False) -> tuple[Path, str]:
    """(the SAE folder inside the HF cache snapshot, the commit) — downloaded once, from the cache afterwards."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    patterns = [f"{hub.path}/*"] if hub.path else None
    try:
        snapshot = Path(snapshot_download(hub.repo_id, revision=hub.revision, allow_patterns=patterns,
                                          local_files_only=local_only))
    except (OSError, ValueError, EntryNotFoundError) as e:
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        if constants.HF_HUB_OFFLINE:
            raise SAEFormatError(f"{hub.text}: {hub.repo_id} is not in the Hugging Face cache "
                                 f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set; fetch it once with network "
                                 f"access ({why})") from None
        raise SAEFormatError(f"{hub.text}: cannot fetch {hub.repo_id} from the Hub ({why})") from None
    folder = snapshot / hub.path if hub.path else snapshot
    if not folder.is_dir() or not any(folder.iterdir()):
        raise SAEFormatError(f"{hub.text}: {hub.repo_id} has no folder {hub.path!r}"
                             + (" in the Hugging Face cache (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE
                                else ""))
    return folder, snapshot.name


def _file_metadata(folder: Path, layout: str) -> dict[str, Any]:
    """What the SAE's own config says (SAELens cfg.json: metadata + legacy top-level fields)."""
    if layout != layouts.SAELENS:
        return {}
    raw = _read_json(folder / "cfg.json")
    return saelens_metadata(raw) if isinstance(raw, dict) else {}


def workspace_for(hub: HubRef) -> Path:
    """Where JumpScope keeps hub.json, index.db and eval.json of a Hub SAE (one folder per repo, revision, path)."""
    root = cache_dir() / "hub"
    owner, repo = hub.repo_id.split("/", 1)
    name = repo + (f"@{hub.revision}" if hub.revision else "") + "".join(f"--{p}" for p in hub.path.split("/") if p)
    return root / owner / name


def load_workspace(folder: Path) -> JumpReLUSAE:
    """The SAE of a workspace folder, read from the HF cache (offline once fetched) with hub.json's metadata."""
    from app.sae.formats import load_gemma_scope, load_native

    record = read_record(folder)
    hub = HubRef(record["repo_id"], record["path"], record.get("commit") or record.get("revision"))
    try:
        source, _ = _fetch(hub, local_only=True)  # the recorded commit, from the cache: no network call
    except SAEFormatError:  # cleaned from the cache: fetch it again
        source, _ = _fetch(hub)
    layout = record["layout"]
    if layout == layouts.SAELENS:
        sae = load_native(source)
    elif layout == layouts.GEMMA_SCOPE_1:
        sae = load_gemma_scope(source / "params.npz")
    else:
        sae = layouts.load_gemma_scope_2(source)
    sae.cfg.metadata.update(record["metadata"])
    return sae


def read_record(folder: Path) -> dict[str, Any]:
    """hub.json of a workspace folder, checked."""
    raw = _read_json(folder / HUB_FILE)
    ok = isinstance(raw, dict) and all(isinstance(raw.get(k), str) for k in ("repo_id", "path", "layout"))
    if not ok or raw["layout"] not in layouts.LAYOUTS or not isinstance(raw.get("metadata"), dict):
        raise SAEFormatError(f"{folder / HUB_FILE}: not a valid Hub workspace record; resolve the reference again")
    return raw


def sae_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    """An SAE folder's metadata (model_name, hook_name, ...) without reading its weights; {} when unreadable."""
    folder = Path(folder)
    if (folder / HUB_FILE).is_file():
        raw = _read_json(folder / HUB_FILE)
        meta = raw.get("metadata") if isinstance(raw, dict) else None
        return dict(meta) if isinstance(meta, dict) else {}
    raw = _read_json(folder / "cfg.json")
    return saelens_metadata(raw) if isinstance(raw, dict) else {}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
