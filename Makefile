.PHONY: install test lint fmt typecheck bench binary binary-smoke binary-bench

install:
	python -m pip install -e '.[test,dev]'

test:
	python -m pytest -q

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
