"""A BGE-M3-shaped model folder, generated locally: BGE-M3's cost and memory, meaningless vectors.

    python -m bench.bge_m3_shape OUT [--layers N]      # writes OUT (a finished OUT is reused)
    python -m bench.bge_m3_shape --cached [--layers N] # the bench's cache folder (see cache_dir)

The shape is BAAI/bge-m3's exactly (XLM-RoBERTa large): 24 layers, hidden 1024, 16 heads, FFN
4096, 8,194 positions, a 250,002-row embedding matrix; random weights from a fixed seed, saved
with ``save_pretrained`` as one float32 ``model.safetensors`` (2.27 GB at 24 layers: 568 M
parameters, the pooler included as in BGE-M3's file; 264 M of them are the embeddings, so fewer
layers save less than one would think: 2 layers still write 1.16 GB). Sentence-transformers files
as BGE-M3 has them: CLS pooling, Normalize, ``max_seq_length`` 8192; and its sparse and ColBERT heads
(``sparse_linear.pt``, ``colbert_linear.pt``).

The tokenizer is a Unigram model (sentencepiece-style: Metaspace pre-tokenizer, ``<s> $A </s>``)
trained with the ``tokenizers`` library on the bench workload sentences plus a few dozen lines
of German, French, Spanish, Russian, Chinese and Japanese written below, so non-Latin text
tokenizes to real pieces. Its vocabulary is about a thousand pieces (the corpus is small); every
id stays below 250,002, so all of them index the full-size embedding matrix. Nothing is
downloaded.

A folder is written under a temporary name next to its destination and renamed into place
once complete, with a marker file (``MARKER``) recording what was built; a folder without a
matching marker (a crashed or older build) is rebuilt.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .cached_folder import build_atomically

MARKER = ".bench-bge-m3-shape.json"
GENERATOR_VERSION = 2  # 2: with sparse_linear.pt and colbert_linear.pt
SEED = 1234
VOCAB_TARGET = 32000  # the Unigram trainer stops earlier on a corpus this small

# BAAI/bge-m3 config.json, minus the layer count (an argument).
CONFIG = dict(
    vocab_size=250002, hidden_size=1024, num_attention_heads=16, intermediate_size=4096,
    max_position_embeddings=8194, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    layer_norm_eps=1e-5, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    initializer_range=0.02, position_embedding_type="absolute",
)
MAX_SEQ_LENGTH = 8192
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in XLM-R

MULTILINGUAL = [
    # German
    "Wie setze ich das Passwort auf dem Firmenlaptop zurück?",
    "Der Bericht über die Brücke wurde gestern vom Ausschuss geprüft und genehmigt.",
    "Im Winter ist der See hinter dem Dorf oft vollständig zugefroren.",
    "Die Ärztin erklärte dem Patienten die Ergebnisse der Untersuchung sehr geduldig.",
    "Unser Zug nach München hatte wegen des Wetters fast eine Stunde Verspätung.",
    "Bitte schicken Sie die Rechnung bis Ende der Woche an die Buchhaltung.",
    # French
    "Comment réinitialiser le mot de passe de l'ordinateur portable de l'entreprise ?",
    "La bibliothèque municipale ouvre ses portes à neuf heures tous les matins.",
    "Les étudiants ont comparé les résultats de l'expérience avec ceux de l'année dernière.",
    "Le marché du village est animé chaque samedi, même quand il pleut.",
    "Nous avons réservé une chambre près de la gare pour le festival de musique.",
    "Le gouvernement a présenté un nouveau budget pour les hôpitaux publics.",
    # Spanish
    "¿Cómo restablezco la contraseña del portátil de la empresa?",
    "El ingeniero revisó el puente antes de abrirlo al tráfico de la ciudad.",
    "Mi familia visitó el museo de historia natural durante las vacaciones de verano.",
    "La reunión del proyecto se trasladó al martes por la tarde.",
    "Los agricultores del valle recogieron una cosecha excelente este año.",
    "El cliente recibió el paquete con dos días de retraso, pero en buen estado.",
    # Russian
    "Как сбросить пароль на рабочем ноутбуке компании?",
    "Учитель объяснил студентам, как работает электрическая батарея.",
    "Вечером мы гуляли вдоль реки и смотрели на огни старого города.",
    "Комитет утвердил новый план строительства библиотеки и больницы.",
    "Зимой в этой северной деревне очень холодно и тихо.",
    "Менеджер отправил клиенту договор и счёт по электронной почте.",
    # Chinese
    "如何重置公司笔记本电脑上的密码？",
    "我们明天早上九点在火车站前面见面。",
    "这座古老的桥梁已经有三百多年的历史了。",
    "医生建议他每天多喝水，早点休息。",
    "图书馆的新系统让学生更容易找到需要的资料。",
    "政府宣布将在明年扩建机场和港口。",
    "这家公司的客户服务非常好，问题很快就解决了。",
    "春天的时候，山上的花都开了，风景特别美。",
    # Japanese
    "会社のノートパソコンのパスワードをリセットするにはどうすればいいですか？",
    "駅の近くに新しい図書館ができました。",
    "昨日の会議では来年の予算について話し合いました。",
    "冬の朝はとても寒いので、温かいお茶を飲みます。",
]


def cache_dir(layers: int = 24) -> Path:
    """``$EMBED_BENCH_CACHE`` or ``~/.cache/embedding-server/bench``, plus ``bge-m3-shape-L{layers}``."""
    root = os.environ.get("EMBED_BENCH_CACHE") or Path.home() / ".cache" / "embedding-server" / "bench"
    return Path(root) / f"bge-m3-shape-L{layers}"


def _spec(layers: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "layers": layers, "seed": SEED, "config": CONFIG,
            "max_seq_length": MAX_SEQ_LENGTH}


def is_complete(folder: Path, layers: int) -> bool:
    try:
        return json.loads((folder / MARKER).read_text())["spec"] == json.loads(json.dumps(_spec(layers)))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def corpus() -> list[str]:
    from . import workload

    return workload.sentences() + [workload.QUERY] + MULTILINGUAL * 5


def _write_tokenizer(path: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus(), trainers.UnigramTrainer(
        vocab_size=VOCAB_TARGET, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False))
    assert [tok.token_to_id(s) for s in SPECIALS] == list(range(len(SPECIALS)))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                                   model_max_length=MAX_SEQ_LENGTH)
    fast.save_pretrained(path)
    return tok.get_vocab_size()


def _write_st_files(path: Path) -> None:
    dim = CONFIG["hidden_size"]
    pooling = {"word_embedding_dimension": dim, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
               "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
               "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False,
               "include_prompt": True}
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    (path / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False}, indent=2) + "\n")
    (path / "config_sentence_transformers.json").write_text(json.dumps(
        {"__version__": {"sentence_transformers": "3.0.0", "transformers": "4.40.0", "pytorch": "2.2.0"},
         "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2) + "\n")


def _write_model(path: Path, layers: int) -> int:
    import torch
    import transformers
    from transformers import XLMRobertaConfig, XLMRobertaModel

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(SEED)
    config = XLMRobertaConfig(num_hidden_layers=layers, **CONFIG)
    # With the pooler (1,049,600 parameters, unused by CLS pooling) as BAAI/bge-m3's checkpoint has it: 567.8 M
    # parameters, 2,271 MB, as its model.safetensors; loaders then report no missing weights.
    model = XLMRobertaModel(config, add_pooling_layer=True).eval()
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path, safe_serialization=True, max_shard_size="100GB")  # one model.safetensors
    del model
    return n_params


def _write_heads(path: Path) -> None:
    """BGE-M3's sparse (hidden -> 1) and ColBERT (hidden -> hidden) heads, random, saved as its state dicts."""
    import torch

    generator = torch.Generator().manual_seed(SEED + 1)
    hidden = CONFIG["hidden_size"]
    for name, out_features in (("sparse_linear.pt", 1), ("colbert_linear.pt", hidden)):
        weight = torch.randn(out_features, hidden, generator=generator) * 0.02
        torch.save({"weight": weight, "bias": torch.zeros(out_features)}, path / name)


def build(folder: Path, layers: int = 24, log=print) -> Path:
    """Write a BGE-M3-shaped folder at ``folder`` (``layers`` layers); reuse it if already complete."""

    def write(tmp: Path) -> dict:
        pieces = _write_tokenizer(tmp)
        log(f"tokenizer: Unigram, {pieces} pieces; initialising {layers} layers of random weights (seed {SEED})")
        n_params = _write_model(tmp, layers)
        _write_st_files(tmp)
        _write_heads(tmp)
        return {"spec": _spec(layers), "parameters": n_params, "tokenizer_pieces": pieces}

    return build_atomically(folder, lambda f: is_complete(f, layers), write, MARKER, log)


def ensure_cached(layers: int = 24, log=print) -> Path:
    """The cache folder for ``layers`` layers, built first if missing or incomplete."""
    return build(cache_dir(layers), layers, log=log)


def check(folder: Path, text: str = "如何重置公司笔记本电脑上的密码？ How do I reset my password?") -> dict:
    """Load ``folder`` with sentence-transformers and with this service's SentenceEncoder; compare one vector."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from embedding_server.model.encoder import SentenceEncoder

    st = SentenceTransformer(str(folder), device="cpu")
    a = st.encode([text], normalize_embeddings=True)[0]
    ids = st.tokenizer(text)["input_ids"]
    unk = st.tokenizer.unk_token_id
    max_len = st.max_seq_length
    del st
    enc = SentenceEncoder(Path(folder))
    b = np.asarray(enc.embed(enc.tokenize([text]))[0])
    return {"st_max_seq_length": max_len, "context_length": enc.context_length, "pooling": enc.pooling,
            "dimension": int(a.shape[0]), "tokens": len(ids), "unk_tokens": ids.count(unk),
            "cosine_st_vs_server_encoder": float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bge_m3_shape", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, help="folder to write (default with --cached: the bench cache)")
    p.add_argument("--cached", action="store_true", help=f"write the bench's cache folder ({cache_dir(24).parent})")
    p.add_argument("--layers", type=int, default=24, help="encoder layers (BGE-M3: 24)")
    p.add_argument("--check", action="store_true",
                   help="then load it with sentence-transformers and SentenceEncoder and compare a vector")
    args = p.parse_args(argv)
    if (args.out is None) == (not args.cached):
        p.error("give OUT or --cached (not both)")
    folder = build(args.out if args.out is not None else cache_dir(args.layers), args.layers)
    print(folder)
    if args.check:
        print(json.dumps(check(folder), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
