"""Records FlagEmbedding's BGE-M3 outputs on a generated tiny checkpoint, as the parity fixture.

FlagEmbedding 1.4.2 (the reference implementation of BGE-M3's dense, sparse and ColBERT outputs) needs
transformers < 5 and datasets < 4, so it cannot share the test environment. Run this in an environment
that has it, from the repository root; it writes the checkpoint and the fixture the tests compare with:

    pip install --target /tmp/flag-env --no-deps FlagEmbedding==1.4.2 transformers==4.57.6 \\
        'tokenizers>=0.22,<0.23' 'huggingface-hub>=0.34,<1.0' 'datasets<4' pandas pyarrow multiprocess dill \\
        peft accelerate
    PYTHONPATH=/tmp/flag-env:. python -m tests.support.flag_reference

(The checkpoint is written by that transformers 4.x, whose tokenizer files transformers 5 also reads; one
saved by transformers 5 names a tokenizer class that 4.x cannot load.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FOLDER = FIXTURES / "tiny-bge-m3"
RESULT = FIXTURES / "tiny-bge-m3.flagembedding.json"

TEXTS = [
    "the quick brown fox",
    "vector search engines rank documents by cosine similarity",
    "embedding embedding embedding models map sentences",  # repeated tokens: the maximum weight per token id
    "air gapped networks",
    "zzzz ÿ qqq",  # unknown pieces: <unk> ids are dropped from the lexical weights
    "retrieval augmented generation needs fast embeddings on a cpu " * 30,  # truncated at MAX_LENGTH
    "a",
]
MAX_LENGTH = 64


def main() -> None:
    import FlagEmbedding
    import numpy as np
    import transformers
    from FlagEmbedding import BGEM3FlagModel

    from tests.support.checkpoints import make_tiny_bge_m3

    if FOLDER.exists():
        shutil.rmtree(FOLDER)
    make_tiny_bge_m3(FOLDER)
    model = BGEM3FlagModel(str(FOLDER), use_fp16=False, devices="cpu")
    out = model.encode(TEXTS, batch_size=4, max_length=MAX_LENGTH, return_dense=True, return_sparse=True,
                       return_colbert_vecs=True)
    sparse = [{k: float(v) for k, v in weights.items()} for weights in out["lexical_weights"]]
    colbert = [np.asarray(v).tolist() for v in out["colbert_vecs"]]
    lexical_scores = np.asarray(model.compute_lexical_matching_score(out["lexical_weights"][:3],
                                                                     out["lexical_weights"][:3])).tolist()
    colbert_scores = [[float(model.colbert_score(out["colbert_vecs"][i], out["colbert_vecs"][j])) for j in range(3)]
                      for i in range(3)]
    tokens = [{model.tokenizer.decode([int(k)]): float(v) for k, v in weights.items()} for weights in sparse[:2]]
    RESULT.write_text(json.dumps({
        "flagembedding": FlagEmbedding.__version__ if hasattr(FlagEmbedding, "__version__") else "1.4.2",
        "transformers": transformers.__version__, "texts": TEXTS, "max_length": MAX_LENGTH,
        "dense": np.asarray(out["dense_vecs"]).tolist(), "sparse": sparse, "colbert": colbert,
        "lexical_matching_scores": lexical_scores, "colbert_scores": colbert_scores, "sparse_tokens": tokens,
    }, indent=1) + "\n")
    print(f"wrote {FOLDER} and {RESULT}")


if __name__ == "__main__":
    main()
