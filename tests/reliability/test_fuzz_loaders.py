"""Property tests: whatever bytes sit in an SAE folder or a params.npz, `load_sae` either loads an SAE or
raises `SAEFormatError` with a message naming the file — never another exception type, never a crash.

The server loads SAEs at start-up and on job completion; a clear `SAEFormatError` is what lets it report the
bad SAE and keep serving the others.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from app.sae import JumpReLUSAE, load_sae
from app.sae.formats import CFG_FILE, WEIGHTS_FILE, SAEFormatError

D_IN, D_SAE = 4, 6
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
CFG_KEYS = ["architecture", "d_in", "d_sae", "dtype", "bandwidth", "apply_b_dec_to_input", "metadata",
            "normalize_activations", "model_name", "hook_name", "context_size"]


def _good_sae() -> JumpReLUSAE:
    return JumpReLUSAE.create(D_IN, D_SAE, threshold=0.05, seed=0)


def _good_folder(root: Path) -> Path:
    folder = root / "sae"
    _good_sae().save(folder)
    return folder


def _check(path: Path) -> None:
    """The property: a JumpReLUSAE or a SAEFormatError whose message names what is wrong and where."""
    try:
        sae = load_sae(path)
    except SAEFormatError as e:
        msg = str(e)
        assert msg.strip(), "SAEFormatError without a message"
        assert str(path) in msg or path.name in msg, f"message does not say where: {msg!r}"
        assert len(msg) < 2000, "message is a dump, not a readable sentence"
        return
    assert isinstance(sae, JumpReLUSAE)
    assert torch.isfinite(sae.W_enc).all() and (sae.threshold >= 0).all()  # θ = 0: a ReLU latent


# --- cfg.json ----------------------------------------------------------------------------------------
@FUZZ
@given(data=st.binary(max_size=300))
def test_random_cfg_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        folder = _good_folder(Path(d))
        (folder / CFG_FILE).write_bytes(data)
        _check(folder)


@FUZZ
@given(key=st.sampled_from(CFG_KEYS), value=json_values)
def test_cfg_field_replaced_by_any_json(key, value):
    with tempfile.TemporaryDirectory() as d:
        folder = _good_folder(Path(d))
        cfg = json.loads((folder / CFG_FILE).read_text())
        cfg[key] = value
        (folder / CFG_FILE).write_text(json.dumps(cfg))
        _check(folder)


@FUZZ
@given(value=json_values)
def test_cfg_any_json_document(value):
    with tempfile.TemporaryDirectory() as d:
        folder = _good_folder(Path(d))
        (folder / CFG_FILE).write_text(json.dumps(value))
        _check(folder)


def test_cfg_deeply_nested_json(tmp_path):
    folder = _good_folder(tmp_path)
    (folder / CFG_FILE).write_text("[" * 100_000 + "]" * 100_000)  # json recursion limit
    _check(folder)
    with pytest.raises(SAEFormatError):
        load_sae(folder)


# --- sae_weights.safetensors -------------------------------------------------------------------------
@FUZZ
@given(frac=st.floats(0, 1, exclude_max=True))
def test_truncated_safetensors(frac):
    with tempfile.TemporaryDirectory() as d:
        folder = _good_folder(Path(d))
        w = folder / WEIGHTS_FILE
        raw = w.read_bytes()
        w.write_bytes(raw[: int(len(raw) * frac)])
        with pytest.raises(SAEFormatError):
            load_sae(folder)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_safetensors_bytes(flips):
    with tempfile.TemporaryDirectory() as d:
        folder = _good_folder(Path(d))
        w = folder / WEIGHTS_FILE
        raw = bytearray(w.read_bytes())
        for pos, byte in flips:
            raw[pos % len(raw)] = byte
        w.write_bytes(bytes(raw))
        _check(folder)


@FUZZ
@given(header_len=st.integers(0, 2**64 - 1), body=st.binary(max_size=200))
def test_safetensors_huge_or_lying_header_length(header_len, body):
    with tempfile.TemporaryDirectory() as d:
        folder = _good_folder(Path(d))
        (folder / WEIGHTS_FILE).write_bytes(struct.pack("<Q", header_len) + body)
        _check(folder)


SAFE_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "XX"]


@FUZZ
@given(
    entries=st.dictionaries(
        st.sampled_from(["W_enc", "W_dec", "b_enc", "b_dec", "threshold", "log_threshold", "__metadata__", "x"]),
        st.fixed_dictionaries({
            "dtype": st.sampled_from(SAFE_DTYPES),
            "shape": st.lists(st.integers(-1, 2**40), max_size=3),
            "data_offsets": st.lists(st.integers(-1, 2**40), min_size=0, max_size=3),
        }),
        max_size=6,
    ),
    body=st.binary(max_size=256),
)
def test_safetensors_random_header(entries, body):
    """A well-framed header describing impossible tensors (bad dtypes, shapes, offsets past the end)."""
    header = json.dumps(entries).encode()
    with tempfile.TemporaryDirectory() as d:
        folder = _good_folder(Path(d))
        (folder / WEIGHTS_FILE).write_bytes(struct.pack("<Q", len(header)) + header + body)
        _check(folder)


TORCH_DTYPES = [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.uint8, torch.bool]


@FUZZ
@given(
    dtype=st.sampled_from(TORCH_DTYPES),
    poison=st.sampled_from([None, float("nan"), float("inf"), -1.0, 0.0]),
    key=st.sampled_from(["W_enc", "W_dec", "b_enc", "b_dec", "threshold"]),
    drop=st.booleans(),
)
def test_safetensors_wrong_dtype_nan_or_missing(dtype, poison, key, drop):
    sae = _good_sae()
    tensors = {k: getattr(sae, k).detach().clone().contiguous() for k in ("W_enc", "W_dec", "b_enc", "b_dec")}
    tensors["threshold"] = sae.threshold.detach().clone()
    if poison is not None:
        tensors[key].view(-1)[0] = poison
    tensors[key] = tensors[key].to(dtype)
    if drop:
        del tensors[key]
    with tempfile.TemporaryDirectory() as d:
        folder = _good_folder(Path(d))
        save_file(tensors, str(folder / WEIGHTS_FILE))
        _check(folder)
        if drop or (poison is not None and key == "threshold" and dtype.is_floating_point and poison != poison):
            with pytest.raises(SAEFormatError):
                load_sae(folder)


# --- Gemma Scope params.npz ----------------------------------------------------------------------------
def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # object arrays get pickled here; the loader must refuse them
    return buf.getvalue()


def _good_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "W_enc": rng.normal(size=(D_IN, D_SAE)).astype(np.float32),
        "W_dec": rng.normal(size=(D_SAE, D_IN)).astype(np.float32),
        "b_enc": np.zeros(D_SAE, np.float32),
        "b_dec": np.zeros(D_IN, np.float32),
        "threshold": np.full(D_SAE, 0.1, np.float32),
    }


NP_ODD = st.sampled_from(["object", "str", "bytes", "complex", "bool", "int8", "float16", "structured", "nan",
                          "scalar", "3d", "empty"])


def _odd_array(kind: str, like: np.ndarray) -> np.ndarray:
    if kind == "object":
        return np.array([{"evil": 1}, None], dtype=object)
    if kind == "str":
        return like.astype(str)
    if kind == "bytes":
        return like.astype("S8")
    if kind == "complex":
        return like.astype(np.complex64)
    if kind == "structured":
        return np.zeros(like.shape[0], dtype=[("a", "f4"), ("b", "i4")])
    if kind == "nan":
        out = like.copy()
        out.flat[0] = np.nan
        return out
    if kind == "scalar":
        return np.float32(3.0).reshape(())
    if kind == "3d":
        return np.zeros((2, 2, 2), np.float32)
    if kind == "empty":
        return np.zeros((0,), np.float32)
    return like.astype(kind)


@FUZZ
@given(key=st.sampled_from(list(_good_params())), kind=NP_ODD)
def test_npz_odd_arrays(key, kind):
    params = _good_params()
    params[key] = _odd_array(kind, params[key])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "params.npz"
        path.write_bytes(_npz_bytes(params))
        _check(path)
        if kind in ("object", "str", "bytes", "structured", "nan", "3d", "empty", "scalar"):
            with pytest.raises(SAEFormatError):
                load_sae(path)


@FUZZ
@given(frac=st.floats(0, 1, exclude_max=True), flips=st.lists(st.tuples(st.integers(0, 10**6),
                                                                         st.integers(0, 255)), max_size=6))
@example(frac=0.0, flips=[(677715, 4)])  # a zip member name ≠ its local header: zipfile's message quotes raw bytes
def test_npz_truncated_or_corrupted(frac, flips):
    raw = bytearray(_npz_bytes(_good_params()))
    for pos, byte in flips:
        raw[pos % len(raw)] = byte
    raw = raw[: max(1, int(len(raw) * frac))] if frac > 0 else raw
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "params.npz"
        path.write_bytes(bytes(raw))
        _check(path)


@FUZZ
@given(data=st.binary(max_size=400))
def test_npz_random_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "params.npz"
        path.write_bytes(data)
        _check(path)


@FUZZ
@given(member=st.sampled_from(list(_good_params())), header=st.binary(max_size=120))
def test_npz_member_with_garbage_npy_header(member, header):
    """A valid zip whose .npy member has a random (or huge-claiming) header."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in _good_params().items():
            if k == member:
                zf.writestr(f"{k}.npy", b"\x93NUMPY\x01\x00" + header)
            else:
                npy = io.BytesIO()
                np.save(npy, v)
                zf.writestr(f"{k}.npy", npy.getvalue())
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "params.npz"
        path.write_bytes(buf.getvalue())
        _check(path)


def test_npz_claiming_a_huge_array_is_refused_without_allocating(tmp_path):
    """A .npy header claiming a terabyte array with no data behind it must fail fast, not allocate."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in _good_params().items():
            npy = io.BytesIO()
            np.save(npy, v)
            raw = npy.getvalue()
            if k == "W_enc":
                hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
                hdr = hdr + " " * (118 - len(hdr)) + "\n"
                raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + b"\x00" * 16
            zf.writestr(f"{k}.npy", raw)
    (tmp_path / "params.npz").write_bytes(buf.getvalue())
    with pytest.raises(SAEFormatError, match="params.npz"):
        load_sae(tmp_path / "params.npz")


def test_missing_and_wrong_kind_of_path(tmp_path):
    with pytest.raises(SAEFormatError, match="no such"):
        load_sae(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAEFormatError, match="expected"):
        load_sae(tmp_path / "empty")
    (tmp_path / "x.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(SAEFormatError, match="not an SAE"):
        load_sae(tmp_path / "x.bin")
    folder = _good_folder(tmp_path)
    (folder / WEIGHTS_FILE).unlink()
    (folder / WEIGHTS_FILE).mkdir()  # a folder where the weights file should be
    _check(folder)
    with pytest.raises(SAEFormatError):
        load_sae(folder)
