"""`--model file.gguf`: a GGUF file converted once into a cached Hugging Face folder, keyed by the file's hash.

transformers reads GGUF files (`gguf_file=`, needs the `gguf` package) and dequantises every tensor to float.
The result refuses `save_pretrained` (it still carries the GGUF quantizer), so the conversion copies its weights
into a fresh model built from the same config and saves that, float32, with the tokenizer, under

    $JUMPSCOPE_CACHE/gguf/<sha256 of the file>/     (default ~/.cache/jumpscope/gguf/<sha256>/)

`load_lm` then loads the folder at the chosen dtype like any other local model. The folder appears atomically
(written beside it, then renamed), so an interrupted conversion leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from app.fsio import atomic_write_json
from app.runtime import cache_dir

log = logging.getLogger(__name__)

SUFFIX = ".gguf"
SOURCE_FILE = "gguf_source.json"  # what a converted folder was made from
_HASH_CHUNK = 1 << 20
_hash_memo: dict[tuple[str, int, int], str] = {}


def is_gguf(name: str | os.PathLike) -> bool:
    """Whether a model name is a GGUF file (by its suffix; the file need not exist yet)."""
    return str(name).lower().endswith(SUFFIX)


def cache_root() -> Path:
    """Where converted GGUF models live: $JUMPSCOPE_CACHE/gguf, else ~/.cache/jumpscope/gguf."""
    return cache_dir() / "gguf"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (memoised per path, size and modification time within the process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hash_memo:
        digest = hashlib.sha256()
        with open(p, "rb") as fh:
            while block := fh.read(_HASH_CHUNK):
                digest.update(block)
        _hash_memo[key] = digest.hexdigest()
    return _hash_memo[key]


def converted_folder(path: str | os.PathLike) -> Path:
    """The cached Hugging Face folder of a GGUF file, converting it first when it is not there yet.

    Raises ValueError when the file is missing or transformers cannot read it (message says what to fix).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{p}: GGUF file not found")
    digest = file_sha256(p)
    folder = cache_root() / digest
    if (folder / SOURCE_FILE).is_file():
        log.info("%s: using the converted model cached in %s", p.name, folder)
        return folder
    log.info("%s: converting GGUF to a float32 Hugging Face folder (once; cached in %s)", p.name, folder)
    tmp = folder.with_name(f".{digest}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert(p, tmp)
        atomic_write_json(tmp / SOURCE_FILE, {"gguf_file": str(p.resolve()), "sha256": digest,
                                              "size": p.stat().st_size})
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same conversion first
            if not (folder / SOURCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: converted into %s", p.name, folder)
    return folder


def _convert(path: Path, out: Path) -> None:
    """Dequantise `path` with transformers (it shows a progress bar per tensor) and save a plain copy in `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except ImportError as e:
        raise ValueError(f"{path}: reading GGUF files needs the 'gguf' package (pip install 'jumpscope[gguf]'): "
                         f"{e}") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ValueError(f"{path}: transformers cannot read this GGUF file ({e})") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(fresh, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise ValueError(f"{path}: converted weights do not fit the model (missing {missing}, "
                         f"unexpected {unexpected})")
    fresh.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    del loaded, fresh
