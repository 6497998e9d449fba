# Two entry points: `make run` (the quick grid) and `make test`. Both build .venv on first use
# from the pinned requirements.lock; later calls reuse it (the stamp changes only when the lock
# or pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.savfi-installed

.PHONY: run test compare venv clean-venv

# A .venv made in another checkout (copied or moved here) installs savfi_core from there:
# install again when the checkout it was made for is not this one.
ifneq ($(shell cat $(VENV)/.savfi-checkout 2>/dev/null),$(CURDIR))
$(shell rm -f $(STAMP))
endif

venv: $(STAMP)

$(STAMP): requirements.lock requirements-carriers.lock pyproject.toml
	# a .venv whose python does not run (a dangling link, a copy from another machine) is rebuilt
	$(PY) -c '' 2>/dev/null || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	# pip compiles every module one file after another (74 s here); installing without it and
	# compiling with one process per core takes less. Compiled here, not on first import: with
	# PYTHONDONTWRITEBYTECODE set (as on this project's machines) nothing would be cached.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile --no-deps -r requirements-carriers.lock
	# (the three files left out are Python 2 / 3.12 code that nothing imports, which pip skipped too)
	$(PY) -m compileall -q -j 0 -x '(skvideo/measure/(runb|niqe_original)|torch/testing/_internal/py312_intrinsics)\.py$$' $(VENV)/lib >/dev/null
	$(PY) -m compileall -q -j 0 savfi_core >/dev/null
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	echo "$(CURDIR)" > $(VENV)/.savfi-checkout
	touch $(STAMP)

run: $(STAMP)
	$(PY) run_all.py

# the comparison page (notebooks/compare.ipynb in Voila) on 127.0.0.1:8866; RESULTS=<a grid's folder>
compare: $(STAMP)
	$(PY) -m savfi_core.compare_page --results $(or $(RESULTS),results/quick)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
