# Two entry points (see README.md): `make demo` (main job) and `make test` (whole test suite).
PY := .venv/bin/python

.PHONY: setup demo test test-fast clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/sepit demo

# The whole suite: fast tests plus the slow ones that use the real default models and tools (no GPU tests).
test: setup
	$(PY) -m pytest -m "not gpu" -q

# Only the fast tiny-config tests (a few minutes on 2 cores).
test-fast: setup
	$(PY) -m pytest -m "not slow and not gpu" -q

clean:
	rm -rf .venv build dist src/*.egg-info .pytest_cache
