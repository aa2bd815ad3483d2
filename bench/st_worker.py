"""sentence-transformers in a process of its own, driven by JSON lines on stdin/stdout.

The long-context bench (`long_context.py`) compares the server with sentence-transformers
in-process on the same folder. Run in its own process, the reference's resident memory after
loading and its peak during one input are read from /proc exactly as the server's are
(`STWorker` below uses the same `ProcessMemory` as `server.Server`), and its CPU is told apart
from the benchmark client's.

Protocol: the worker prints one line ``{"ready": ..., "import_s", "construct_s", ...}`` once the
model is loaded, then answers each request line with one reply line:

* ``{"op": "single", "text": T, "n": N}`` -> ``{"ms": [N latencies of encode([T])]}``
* ``{"op": "encode", "texts": [...], "batch_size": B, "vectors": false}`` -> ``{"s": seconds}``
  (and ``"vectors"`` when asked)
* ``{"op": "tokens", "texts": [...]}`` -> ``{"tokens": [token count after ST's truncation]}``
* ``{"op": "quit"}``

Everything the libraries print goes to stderr (the worker's log), never into the protocol.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

from .server import ProcessMemory


class STWorker(ProcessMemory):
    """The worker subprocess (bench side); use as a context manager."""

    def __init__(self, folder: str | Path, threads: int, log_path: Path):
        super().__init__()
        self.folder, self.threads, self.log_path = str(folder), threads, log_path
        self.ready: dict = {}

    def start(self) -> "STWorker":
        """Spawn and wait until the model is loaded; ``ready["process_s"]`` = spawn -> loaded."""
        self._log = open(self.log_path, "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.st_worker", self.folder, str(self.threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     cwd=Path(__file__).resolve().parents[1])
        self.ready = self._read()
        self.ready["process_s"] = time.perf_counter() - t0
        return self

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"sentence-transformers worker exited with {self.proc.returncode}:\n{self.log_tail()}")
        return orjson.loads(line)

    def call(self, op: str, **kw) -> dict:
        self.proc.stdin.write(orjson.dumps(dict(kw, op=op)) + b"\n")
        self.proc.stdin.flush()
        return self._read()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        self._stop.set()
        if self.proc and self.proc.poll() is None:
            try:
                self.call("quit")
                self.proc.wait(timeout=20)
            except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "STWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _serve(folder: str, threads: int, out) -> None:
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    from sentence_transformers import SentenceTransformer

    t1 = time.perf_counter()
    st = SentenceTransformer(folder, device="cpu")
    t2 = time.perf_counter()

    def reply(obj: dict) -> None:
        out.write(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        out.flush()

    reply({"ready": True, "import_s": t1 - t0, "construct_s": t2 - t1, "max_seq_length": st.max_seq_length,
           "torch_threads": torch.get_num_threads()})
    for line in sys.stdin.buffer:
        cmd = orjson.loads(line)
        op = cmd["op"]
        if op == "quit":
            return
        if op == "single":
            ms = []
            for _ in range(cmd["n"]):
                s = time.perf_counter()
                st.encode([cmd["text"]], show_progress_bar=False)
                ms.append((time.perf_counter() - s) * 1e3)
            reply({"ms": ms})
        elif op == "encode":
            s = time.perf_counter()
            vecs = st.encode(cmd["texts"], batch_size=cmd.get("batch_size", 32), show_progress_bar=False)
            res = {"s": time.perf_counter() - s}
            if cmd.get("vectors"):
                res["vectors"] = vecs
            reply(res)
        elif op == "tokens":
            feats = st.tokenize(cmd["texts"])
            reply({"tokens": [int(n) for n in feats["attention_mask"].sum(1)]})
        else:
            reply({"error": f"unknown op {op!r}"})


def main() -> None:
    folder, threads = sys.argv[1], int(sys.argv[2])
    out = os.fdopen(os.dup(1), "wb")  # the protocol's own stdout
    os.dup2(2, 1)  # whatever the libraries print lands in the log
    sys.stdout = sys.stderr
    _serve(folder, threads, out)


if __name__ == "__main__":
    main()
