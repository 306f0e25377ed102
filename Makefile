# The README's two commands: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)
# An interpreter for version $(1): pyenv's install first, then PATH (pyenv shims skipped:
# they fail for versions that are installed but not selected).
find_py = $(firstword $(wildcard $(PYENV_ROOT)/versions/$(1)*/bin/python$(1)) \
                      $(filter-out %/shims/python$(1),$(shell command -v python$(1) 2>/dev/null)))
PY311 := $(call find_py,3.11)
PY313 := $(call find_py,3.13)
PY314 := $(call find_py,3.14)
DEMO_PY := $(or $(PY314),$(PY313))
PY_DIRS := $(subst $(eval) ,:,$(strip $(foreach p,$(PY314) $(PY313) $(PY311),$(patsubst %/,%,$(dir $(p))))))

TOOLS := .venv-tools
DEMO := .venv

.PHONY: help demo test bench matrix clean need-313

help:
	@echo "make demo   set up a venv on Python >= 3.13 and check the example app"
	@echo "make test   run the whole suite through tox (3.13 required; 3.11; 3.14 where present)"
	@echo "make bench  run the benchmarks, write benchmarks/RESULTS.md"
	@echo "make matrix rebuild compat_matrix.md from real PyPI packages (slow, not in CI)"

need-313:
	@if [ -z "$(DEMO_PY)" ]; then \
	  echo "error: no Python >= 3.13 found on PATH or in pyenv ($(PYENV_ROOT)/versions)." >&2; \
	  echo "       install one, e.g. 'pyenv install 3.13', and re-run." >&2; exit 2; fi

$(DEMO)/.done: pyproject.toml | need-313
	$(DEMO_PY) -m venv $(DEMO)
	$(DEMO)/bin/python -m pip install -q --upgrade pip
	$(DEMO)/bin/python -m pip install -q -e '.[test]'
	touch $@

demo: $(DEMO)/.done
	@echo "== subcompat check on examples/shop (a small job app) =="
	cd examples && ../$(DEMO)/bin/subcompat check shop.jobs.reports shop.jobs.serialize shop.jobs.terminal shop.jobs.pricing:quote --no-cache; \
	  code=$$?; echo "(exit code $$code: 1 means some job needs the fallback executor)"

$(TOOLS)/.done: | need-313
	$(DEMO_PY) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --upgrade pip 'tox>=4.11'
	touch $@

test: $(TOOLS)/.done
	@if [ -z "$(PY313)" ]; then echo "error: Python 3.13 is required for 'make test' and was not found" >&2; exit 2; fi
	@echo "interpreters: 3.13=$(PY313) 3.11=$(or $(PY311),absent) 3.14=$(or $(PY314),absent)"
	PATH="$(PY_DIRS):$$PATH" $(TOOLS)/bin/tox run -e py313,py311$(if $(PY314),$(comma)py314)

comma := ,

bench: $(DEMO)/.done
	$(DEMO)/bin/python benchmarks/run.py --out benchmarks/RESULTS.md

matrix: $(DEMO)/.done
	$(DEMO)/bin/python benchmarks/compat_matrix.py -o compat_matrix.md

clean:
	rm -rf $(TOOLS) $(DEMO) .tox build *.egg-info
