# Two entry points (see README.md): `make demo` (main job) and `make test` (whole test suite).
PY := .venv/bin/python

.PHONY: setup demo test test-fast lint clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/sepit demo

# The whole suite: fast tests, the slow ones that use the real default models and tools, and the multi-process
# (`dist`) ones; no GPU tests; ruff over the code first. The 15 slowest tests are listed at the end.
test: setup
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m pytest -m "not gpu" -q --durations=15

# Only the fast tiny-config tests (a few minutes on 2 cores).
test-fast: setup
	$(PY) -m pytest -m "not slow and not gpu and not dist" -q --durations=15

lint: setup
	$(PY) -m ruff check src tests benchmarks scripts

clean:
	rm -rf .venv build dist src/*.egg-info .pytest_cache
