# The two commands of the README: `make demo` and `make test`.
.PHONY: setup demo test lint protos bench

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/lada demo

test: setup
	./scripts/test-deps.sh
	./scripts/start-postgres.sh
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .

protos: setup
	.venv/bin/python -m lada.common.proto.generate
