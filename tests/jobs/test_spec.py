"""JobSpec validation and path confinement (.., absolute paths outside the root, symlink escapes)."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from app.jobs.spec import HOOK_KINDS, JobSpec, JobSpecError, confine_path


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "corpora"
    (r / "sub").mkdir(parents=True)
    (r / "sub" / "text.txt").write_text("hello")
    (r / "acts.safetensors").write_bytes(b"x")
    (r / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("no")
    return r


def test_hook_kinds_match_the_lm_adapter():
    from app.lm.hooks import HOOK_KINDS as LM_KINDS

    assert set(HOOK_KINDS) == set(LM_KINDS)


def test_confine_accepts_paths_inside(root):
    assert confine_path("sub/text.txt", root) == (root / "sub" / "text.txt").resolve()
    assert confine_path(str(root / "sub"), root) == (root / "sub").resolve()


@pytest.mark.parametrize("bad", ["../secret.txt", "sub/../../secret.txt", "sub/../text.txt", "", "a\x00b"])
def test_confine_refuses_dotdot_and_junk(root, bad):
    with pytest.raises(JobSpecError):
        confine_path(bad, root)


def test_confine_refuses_absolute_outside_and_missing(root, tmp_path):
    with pytest.raises(JobSpecError, match="outside"):
        confine_path(str(tmp_path / "secret.txt"), root)
    with pytest.raises(JobSpecError, match="outside"):
        confine_path("/etc/passwd", root)
    with pytest.raises(JobSpecError, match="does not exist"):
        confine_path("sub/missing.txt", root)


def test_confine_refuses_symlink_escape(root, tmp_path):
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path, root / "linkdir")
    with pytest.raises(JobSpecError, match="outside"):
        confine_path("link.txt", root)
    with pytest.raises(JobSpecError, match="outside"):
        confine_path("linkdir/secret.txt", root)
    os.symlink(root / "sub" / "text.txt", root / "inside-link.txt")
    assert confine_path("inside-link.txt", root) == (root / "sub" / "text.txt").resolve()


def test_spec_shapes():
    JobSpec(d_sae=8, tokens=100, activations="a.safetensors")
    JobSpec(d_sae=64, tokens=100, model="gpt2", corpus="c.txt", hook="mlp_out", layer=3, target_l0=40)
    assert JobSpec(d_sae=8, tokens=100, activations="a").target_l0 == 1  # default: min(32, d_sae / 8)
    assert JobSpec(d_sae=4096, tokens=100, activations="a").target_l0 == 32
    for bad in [
        dict(d_sae=8, tokens=100),  # no source
        dict(d_sae=8, tokens=100, activations="a", target_l0=8),  # target L0 not below d_sae
        dict(d_sae=8, tokens=100, activations="a", corpus="c", model="m"),  # both sources
        dict(d_sae=8, tokens=100, corpus="c"),  # corpus without a model
        dict(d_sae=8, tokens=100, activations="a", l0_coefficient=1.0, target_l0=10),
        dict(d_sae=0, tokens=100, activations="a"),
        dict(d_sae=8, tokens=-1, activations="a"),
        dict(d_sae=8, tokens=100, activations="a", hook="resid_middle"),
        dict(d_sae=8, tokens=100, activations="a", name="../evil"),
        dict(d_sae=8, tokens=100, activations="a", surprise=1),
    ]:
        with pytest.raises(ValidationError):
            JobSpec(**bad)


def test_spec_confined_resolves_and_refuses(root, tmp_path):
    s = JobSpec(d_sae=8, tokens=100, activations="acts.safetensors").confined(root)
    assert s.activations == str((root / "acts.safetensors").resolve())
    with pytest.raises(JobSpecError):
        JobSpec(d_sae=8, tokens=100, activations="sub").confined(root)  # a folder, not a file
    c = JobSpec(d_sae=8, tokens=1, model="models/tiny", corpus="sub").confined(root)
    assert c.model == str((root / "models" / "tiny").resolve()) and c.corpus == str((root / "sub").resolve())
    assert JobSpec(d_sae=8, tokens=1, model="google/gemma-2-2b", corpus="sub").confined(root).model == (
        "google/gemma-2-2b"
    )
    for model in ["/etc", "../x", "./../x", "a/../../b", "bad model!"]:
        with pytest.raises(JobSpecError):
            JobSpec(d_sae=8, tokens=1, model=model, corpus="sub").confined(root)
    os.symlink(tmp_path, root / "evilmodel")
    with pytest.raises(JobSpecError, match="outside"):
        JobSpec(d_sae=8, tokens=1, model="evilmodel", corpus="sub").confined(root)
