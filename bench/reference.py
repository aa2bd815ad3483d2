"""In-process references: what this machine can compute without any server in the way.

* `raw_bulk`: raw transformers AutoTokenizer/AutoModel under torch.inference_mode():
  tokenise all texts, sort by token length, batches of 32 -> pad, forward, masked mean pool,
  L2 normalise. This is the compute limit the server's bulk throughput is compared with.
* `raw_single`: the same pipeline on one sentence, repeated (p50/p95 ms).
* `st_bulk`: sentence-transformers `encode(batch_size=32, normalize_embeddings=True)`.
* `engine_references` (diagnostic): this service's own model layer (`SentenceEncoder`, the
  padding-free forward) in-process, so the server's own overhead can be read apart from
  the forward's speed.

Run these while no server is computing: they share the CPU cores with it.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

MAX_SEQ_LEN = 256


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank-interpolated percentile (q in 0..100) of a non-empty list."""
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def bulk_result(n_texts: int, elapsed: float, batch_ms: list[float], batch_size: int = 32) -> dict:
    """Throughput and full-batch times (the last, partial batch left out) of a bulk reference run."""
    full = batch_ms[:-1] if n_texts % batch_size and len(batch_ms) > 1 else batch_ms
    return {
        "sentences_per_s": n_texts / elapsed,
        "elapsed_s": elapsed,
        "batch_ms_median": statistics.median(full),
        "batch_ms_max": max(full),
    }


class RawModel:
    """AutoTokenizer + AutoModel from a local folder, mean pooling + L2 (MiniLM recipe)."""

    def __init__(self, folder: str | Path, threads: int):
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder)).eval()

    @torch.inference_mode()
    def _forward_pool(self, enc) -> torch.Tensor:
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        mask = enc["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
        summed = (out.last_hidden_state * mask).sum(1)
        pooled = summed / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    def embed(self, texts: list[str]) -> torch.Tensor:
        enc = self.tok(texts, padding=True, truncation=True, max_length=MAX_SEQ_LEN,
                       return_tensors="pt")
        return self._forward_pool(enc)

    def batches(self, texts: list[str], batch_size: int = 32, sort: bool = True) -> tuple[float, list]:
        """Tokenise all texts and cut their ids into batches (length-sorted unless `sort=False`).

        Returns (seconds it took, batches): the tokenising is part of the reference's time."""
        t0 = time.perf_counter()
        ids = self.tok(texts, truncation=True, max_length=MAX_SEQ_LEN)["input_ids"]
        order = list(range(len(ids)))
        if sort:
            order.sort(key=lambda i: len(ids[i]))
        batches = [[ids[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
        return time.perf_counter() - t0, batches

    def run_batch(self, ids: list[list[int]]) -> float:
        """Pad, forward, pool and normalise one batch of ids; its time in ms."""
        b0 = time.perf_counter()
        enc = self.tok.pad({"input_ids": ids}, return_tensors="pt", return_attention_mask=True)
        self._forward_pool(enc)
        return (time.perf_counter() - b0) * 1e3

    def bulk(self, texts: list[str], batch_size: int = 32, sort: bool = True) -> dict:
        """Batched embedding of all texts (length-sorted unless `sort=False`), whole pipeline."""
        t0 = time.perf_counter()
        _, batches = self.batches(texts, batch_size, sort)
        batch_ms = [self.run_batch(b) for b in batches]
        return bulk_result(len(texts), time.perf_counter() - t0, batch_ms, batch_size)

    def single(self, text: str, reps: int = 200, warmup: int = 10) -> dict:
        """Tokenise + forward + pool + normalise one sentence, `reps` times (ms)."""
        for _ in range(warmup):
            self.embed([text])
        lat = []
        for _ in range(reps):
            t0 = time.perf_counter()
            self.embed([text])
            lat.append((time.perf_counter() - t0) * 1e3)
        return {"p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95), "n": reps}


def _plain(fn):
    return fn()


def engine_references(folder: str | Path, texts: list[str], query: str, threads: int,
                      single_reps: int = 200, measure=_plain) -> dict:
    """SentenceEncoder in-process: batches of 32 in request order, and one sentence (p50/p95)."""
    from embedding_server.model.encoder import SentenceEncoder
    from embedding_server.settings import Settings

    defaults = Settings()  # the server's defaults (and EMBED_* overrides, like the server)
    enc = SentenceEncoder(Path(folder), num_threads=threads, padding_free=defaults.padding_free,
                          short_batch_copy_mb=defaults.short_batch_copy_mb)
    enc.embed(enc.tokenize(texts[:32]))  # warm-up

    def bulk() -> dict:
        t0 = time.perf_counter()
        for s in range(0, len(texts), 32):
            enc.embed(sorted(enc.tokenize(texts[s : s + 32]), key=len))
        return {"sentences_per_s": len(texts) / (time.perf_counter() - t0)}

    def single() -> dict:
        for _ in range(10):
            enc.embed(enc.tokenize([query]))
        lat = []
        for _ in range(single_reps):
            t0 = time.perf_counter()
            enc.embed(enc.tokenize([query]))
            lat.append((time.perf_counter() - t0) * 1e3)
        return {"p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95), "n": single_reps}

    return {"forward": enc.forward_kind, "bulk": measure(bulk), "single": measure(single)}


class ModelLayer:
    """This service's model layer in-process (SentenceEncoder with the server's defaults), for the small-request
    targets: one query (tokenise + forward + pool + L2), and a batch of eight copies of it (what eight concurrent
    single-query clients amount to when their requests share a forward)."""

    def __init__(self, folder: str | Path, threads: int):
        from embedding_server.model.encoder import SentenceEncoder
        from embedding_server.settings import Settings

        defaults = Settings()
        self.enc = SentenceEncoder(Path(folder), num_threads=threads, padding_free=defaults.padding_free,
                                   short_batch_copy_mb=defaults.short_batch_copy_mb)

    def _timed(self, texts: list[str], reps: int) -> list[float]:
        for _ in range(10):
            self.enc.embed(self.enc.tokenize(texts))
        lat = []
        for _ in range(reps):
            t0 = time.perf_counter()
            self.enc.embed(self.enc.tokenize(texts))
            lat.append((time.perf_counter() - t0) * 1e3)
        return lat

    def single(self, query: str, reps: int = 200) -> dict:
        lat = self._timed([query], reps)
        return {"p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95), "n": reps}

    def batch(self, query: str, size: int = 8, reps: int = 100) -> dict:
        lat = self._timed([query] * size, reps)
        return {"size": size, "p50_ms": percentile(lat, 50), "sentences_per_s": size * 1e3 / percentile(lat, 50)}


def st_reference(folder: str | Path, texts: list[str], threads: int, measure=_plain) -> dict:
    """sentence-transformers encode(batch_size=32, normalize_embeddings=True) -> sentences/s."""
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    st = SentenceTransformer(str(folder), device="cpu")
    kw = dict(batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    st.encode(texts[:128], **kw)  # warm-up

    def once() -> dict:
        t0 = time.perf_counter()
        st.encode(texts, **kw)
        return {"sentences_per_s": len(texts) / (time.perf_counter() - t0)}

    return measure(once)
