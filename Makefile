.PHONY: install test test-fast lint fmt typecheck bench binary binary-smoke binary-bench

install:
	python -m pip install -e '.[test,dev]'

test:
	python -m pytest -q

# The inner loop: everything but the slow tests (real servers, subprocesses,
# signals, the binary) and the browser journeys.
# Everything but the real-server, signal, binary and browser tests, on both cores;
# byte-code caching on (some environments turn it off, which costs seconds here).
test-fast:
	PYTHONDONTWRITEBYTECODE= python -m pytest -q -n 2 -m "not slow and not browser"

lint:
	ruff check localgate tests bench build
	ruff format --check localgate tests bench build

fmt:
	ruff format localgate tests bench build
	ruff check --fix localgate tests bench build

typecheck:
	mypy

bench:
	python -m bench

binary:
	python build/binary.py

binary-smoke:
	python build/smoke.py dist/localgate

binary-bench:
	python bench/binary.py --breakdown
