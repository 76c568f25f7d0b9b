# The two commands of the README: `make demo` and `make test`.
.PHONY: setup demo test lint protos bench real-models results

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

# The premise scenario's matrix (issue 13) from its committed runs: table with significance marks and
# plots in results/premise-matrix and in docs/results.md (no run; `lada experiment --config
# benchmarks/premise.yaml` makes runs).
PREMISE_RUNS = results/premise-aligned-all,results/premise-more,results/premise-noexplore,results/premise-s9-rest
results: setup
	.venv/bin/lada experiment --join $(PREMISE_RUNS) --out results/premise-matrix --doc docs/results.md
