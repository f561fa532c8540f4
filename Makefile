# The two commands of the README live here: `make report` and `make test`.
# Each creates the virtual environment idempotently. torch 2.13.0 is installed
# before anything else so that no multi-GB CUDA build is pulled on a CPU machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mvbook-installed
PROFILE ?= quick
JOBS ?= 2
# Where torch comes from: empty = the default index (on Linux, the build with CUDA libraries);
# a CPU-only machine may pass PyTorch's CPU wheel index (see the README). Never the default.
TORCH_INDEX_URL ?=

.PHONY: env report test smoke lint bench book clean-venv

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade-strategy only-if-needed \
		$(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "torch==2.13.0"
	$(PY) -m pip install --quiet --upgrade-strategy only-if-needed -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The main job: the whole book in its quick profile on the studio, into reports/<UTC time>-quick/.
report: $(STAMP)
	$(VENV)/bin/mvbook report --profile $(PROFILE)

# The tests: ruff, then the library tests and every notebook under nbval in the `smoke` profile.
# Two pytest workers with one thread each fill the 2 cores of the reference machine.
# pytest's exit code 5 ("no tests collected") means the suite is broken: it fails loudly.
test: $(STAMP)
	$(VENV)/bin/ruff check mvbook tests bench data_scripts notebooks
	MVBOOK_PROFILE=smoke OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadfile --nbval-lax \
		--nbval-sanitize-with configs/nbval_sanitize.cfg --nbval-kernel-name python3 \
		--nbval-cell-timeout 600 tests notebooks; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the test suite is broken" >&2; exit 1; fi; exit $$rc

# The book as a static site from a report run: make book RUN=reports/<run> -> reports/<run>/book/index.html
book: $(STAMP)
	@test -n "$(RUN)" || { echo "make book: give the report run, e.g. make book RUN=reports/<run>" >&2; exit 2; }
	$(VENV)/bin/mvbook book $(RUN)

lint: $(STAMP)
	$(VENV)/bin/ruff check mvbook tests bench data_scripts notebooks

bench: $(STAMP)
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
