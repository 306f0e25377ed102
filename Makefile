# The README's two commands: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)
# An interpreter for version $(1): pyenv's install first, then PATH (pyenv shims skipped:
# they fail for versions that are installed but not selected).
find_py = $(firstword $(wildcard $(PYENV_ROOT)/versions/$(1)*/bin/python$(1)) \
                      $(filter-out %/shims/python$(1),$(shell command -v python$(1) 2>/dev/null)))

# Debian's CPython builds of the latest 3.13, 3.14 and 3.15, unpacked by shared/tools/pythons
# (beside the repo: ../shared). `pythons path` only looks; `pythons install` fetches.
PYTHONS_TOOL ?= $(abspath $(CURDIR)/../shared/tools/pythons)
PYTHONS_ROOT := $(or $(SUBCOMPAT_PYTHONS),$(HOME)/.cache/subcompat-pythons)
tool_py = $(or $(shell [ -f "$(PYTHONS_TOOL)" ] && bash "$(PYTHONS_TOOL)" path $(1) 2>/dev/null), \
               $(wildcard $(PYTHONS_ROOT)/$(1)/usr/bin/python$(1)))

# `make test` runs the suite on each of these tox envs (with py313, also `typecheck`:
# mypy --strict, a few seconds). Each interpreter may be given explicitly
# (SUBCOMPAT_PY3130=/path/to/python3.13 make test; .ci/run exports them);
# otherwise it is looked up. TEST_ENVS="py314 py315" runs a subset.
ALL_TEST_ENVS := py3130 py313 py314 py315 py311
TEST_ENVS ?= $(ALL_TEST_ENVS)
SUBCOMPAT_PY3130 := $(or $(SUBCOMPAT_PY3130),$(wildcard $(PYENV_ROOT)/versions/3.13.0/bin/python3.13))
SUBCOMPAT_PY313 := $(or $(SUBCOMPAT_PY313),$(call tool_py,3.13))
SUBCOMPAT_PY314 := $(or $(SUBCOMPAT_PY314),$(call tool_py,3.14),$(call find_py,3.14))
SUBCOMPAT_PY315 := $(or $(SUBCOMPAT_PY315),$(call tool_py,3.15),$(call find_py,3.15))
SUBCOMPAT_PY311 := $(or $(SUBCOMPAT_PY311),$(call find_py,3.11))
# an interpreter given or found must run: an absent path counts as missing
resolve = $(if $(1),$(shell command -v '$(1)' 2>/dev/null))
PYTHONS_HINT := $(patsubst $(CURDIR)/%,%,$(patsubst $(abspath $(CURDIR)/..)/%,../%,$(PYTHONS_TOOL)))
PY_py3130 := $(call resolve,$(SUBCOMPAT_PY3130))
WHAT_py3130 := Python 3.13.0 (the oldest 3.13 supported)
HOW_py3130 := pyenv install 3.13.0
PY_py313 := $(call resolve,$(SUBCOMPAT_PY313))
WHAT_py313 := the latest Python 3.13
HOW_py313 := $(PYTHONS_HINT) install 3.13
PY_py314 := $(call resolve,$(SUBCOMPAT_PY314))
WHAT_py314 := Python 3.14
HOW_py314 := $(PYTHONS_HINT) install 3.14
PY_py315 := $(call resolve,$(SUBCOMPAT_PY315))
WHAT_py315 := Python 3.15
HOW_py315 := $(PYTHONS_HINT) install 3.15
PY_py311 := $(call resolve,$(SUBCOMPAT_PY311))
WHAT_py311 := Python 3.11 (the 'unsupported' path)
HOW_py311 := pyenv install 3.11 (or apt-get install python3.11)
FOUND_ENVS := $(strip $(foreach e,$(TEST_ENVS),$(if $(PY_$(e)),$(e))))
MISSING_ENVS := $(filter-out $(FOUND_ENVS),$(TEST_ENVS))
# CI=true (as .ci/run sets it): every Python is mandatory, as in tests/_req.py
IN_CI := $(filter true,$(shell printf %s '$(CI)' | tr A-Z a-z))
comma := ,
empty :=
space := $(empty) $(empty)

# Tools (tox, virtualenv) live in a venv of a Python whose `-m venv` brings pip (Debian's
# builds from the pythons tool need `--without-pip`); tox/virtualenv bring their own pip.
TOOLS_PY := $(or $(PY_py3130),$(PY_py311),$(call find_py,3.12),python3)
DEMO_PY := $(or $(call find_py,3.14),$(call find_py,3.13))

TOOLS := .venv-tools
DEMO := .venv

.PHONY: help demo test bench matrix clean need-313

help:
	@echo "make demo   set up a venv on Python >= 3.13 and check the example app"
	@echo "make test   run the whole suite through tox on 3.13.0, the latest 3.13, 3.14, 3.15 and 3.11"
	@echo "            (CI=true: all mandatory; else absent ones are skipped; TEST_ENVS=\"py314 py315\": a subset)"
	@echo "make bench  run the benchmarks, write benchmarks/RESULTS.md"
	@echo "make matrix rebuild compat_matrix.md from real PyPI packages (slow, not in CI)"

need-313:
	@if [ -z "$(DEMO_PY)" ]; then \
	  echo "error: no Python >= 3.13 found on PATH or in pyenv ($(PYENV_ROOT)/versions)." >&2; \
	  echo "       install one, e.g. 'pyenv install 3.13', and re-run." >&2; exit 2; fi

$(DEMO)/.done: pyproject.toml $(TOOLS)/.done | need-313
	$(TOOLS)/bin/virtualenv -q -p $(DEMO_PY) $(DEMO)
	$(DEMO)/bin/python -m pip install -q --upgrade pip
	$(DEMO)/bin/python -m pip install -q -e '.[test]'
	touch $@

demo: $(DEMO)/.done
	@echo "== subcompat check on examples/shop (a small job app) =="
	cd examples && ../$(DEMO)/bin/subcompat check shop.jobs.reports shop.jobs.serialize shop.jobs.terminal shop.jobs.pricing:quote --no-cache; \
	  code=$$?; echo "(exit code $$code: 1 means some job needs the fallback executor)"

$(TOOLS)/.done:
	$(TOOLS_PY) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --upgrade pip 'tox>=4.11' virtualenv
	touch $@

test: $(TOOLS)/.done
	@$(if $(filter-out $(ALL_TEST_ENVS),$(TEST_ENVS)),echo "error: unknown TEST_ENVS: $(filter-out $(ALL_TEST_ENVS),$(TEST_ENVS)) (known: $(ALL_TEST_ENVS))" >&2; exit 2)
	@$(foreach e,$(MISSING_ENVS),echo "$(if $(IN_CI),error,note): $(e): $(WHAT_$(e)) not found, get it with: $(HOW_$(e))$(if $(IN_CI),, (skipped))" >&2;)
	@$(if $(and $(IN_CI),$(MISSING_ENVS)),echo "error: CI=true: every Python is mandatory; missing: $(MISSING_ENVS)" >&2; exit 2)
	@$(if $(and $(filter-out py311,$(TEST_ENVS)),$(if $(filter-out py311,$(FOUND_ENVS)),,x)),echo "error: no Python >= 3.13 found for any of: $(filter-out py311,$(TEST_ENVS))" >&2; exit 2)
	@$(if $(FOUND_ENVS),,echo "error: no Python found for any of: $(TEST_ENVS)" >&2; exit 2)
	@$(foreach e,$(FOUND_ENVS),echo "$(e): $(PY_$(e))";)
	$(foreach e,$(FOUND_ENVS),SUBCOMPAT_$(subst py,PY,$(e))=$(PY_$(e))) \
	  $(TOOLS)/bin/tox run $(if $(IN_CI),--skip-missing-interpreters false) -e $(subst $(space),$(comma),$(FOUND_ENVS))$(if $(filter py313,$(FOUND_ENVS)),$(comma)typecheck) $(if $(PYTEST_ARGS),-- $(PYTEST_ARGS))

bench: $(DEMO)/.done
	$(DEMO)/bin/python benchmarks/run.py --out benchmarks/RESULTS.md

# resumable (results kept under benchmarks/.work/matrix); MATRIX_ARGS="--refresh", "--only numpy lxml"...
matrix: $(TOOLS)/.done
	$(TOOLS)/bin/python benchmarks/compat_matrix.py -o compat_matrix.md \
	  $(foreach v,313 314 315,$(if $(PY_py$(v)),--python $(PY_py$(v)))) $(MATRIX_ARGS)

clean:
	rm -rf $(TOOLS) $(DEMO) .tox build *.egg-info
