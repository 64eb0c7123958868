# Two commands on a fresh machine: `make serve` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU installs take the local CPU torch wheel (never a multi-GB CUDA build); see constraints-cpu.txt.
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check -q -c constraints-cpu.txt $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: install serve test lint bench clean

$(VENV)/.installed: pyproject.toml constraints-cpu.txt package.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PIP_INSTALL) -e ".[web,test]"
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed

serve: install
	$(VENV)/bin/jumpscope serve

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check app tests benchmarks

clean:
	rm -rf $(VENV) node_modules .pytest_cache
