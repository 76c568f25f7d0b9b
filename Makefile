# The two commands of the README: `make demo` and `make test`.
.PHONY: setup demo test lint protos bench real-models

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/lada demo

test: setup
	./scripts/test-deps.sh
	./scripts/real-models.sh
	./scripts/start-postgres.sh
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

real-models: setup
	./scripts/real-models.sh

lint: setup
	.venv/bin/ruff check .

protos: setup
	.venv/bin/python -m lada.common.proto.generate
