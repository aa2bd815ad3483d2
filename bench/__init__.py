"""Benchmark harness for embedding_server (`make bench` / `python -m bench.run`).

Everything runs in one process run: in-process references first (raw transformers and
sentence-transformers), then the server on loopback under the client scenarios, so that the
target ratios come from one run on one machine and the machine's noise cancels out.
"""
