"""A request's inputs as the model's token ids: texts tokenized (with a prompt, truncated from either end),
OpenAI token arrays decoded, model token ids wrapped (or taken whole), and every id checked against the
embedding matrix."""

from __future__ import annotations

import dataclasses
import re

from ..model.encoder import InputTooLong, SentenceEncoder
from ..model.heads import DENSE, HEAD_FILES
from .errors import ContextLengthExceeded, InvalidInput
from .token_ids import decode_cl100k
from .types import EmbedRequest

# JSON allows "\ud800" escapes; Python keeps such lone surrogates in str, and no tokenizer can encode them.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# Requests at most this large are tokenized on the event loop (~0.1 ms of tokenizer work); larger ones
# go to the tokenizer threads so that the loop never stalls behind a bulk request's tokenization.
INLINE_INPUTS, INLINE_CHARS = 8, 2048


def tokenize_inline(request: EmbedRequest) -> bool:
    """Whether ``request`` is small enough to tokenize on the event loop."""
    return small(request.inputs)


def small(inputs: list) -> bool:
    """Whether tokenizer work on ``inputs`` (texts or id lists) is cheap enough for the event loop."""
    return len(inputs) <= INLINE_INPUTS and sum(len(x) for x in inputs) <= INLINE_CHARS


def check_text(texts: list[str]) -> None:
    """InvalidInput for a text no tokenizer can encode (one holding a lone UTF-16 surrogate)."""
    bad = next((i for i, text in enumerate(texts) if not text.isascii() and _LONE_SURROGATE.search(text)), None)
    if bad is not None:
        raise InvalidInput(f"input {bad} is not valid Unicode text (it holds a lone UTF-16 surrogate)", param="input")


def check_outputs(name: str, encoder, wanted: frozenset[str]) -> None:
    """InvalidInput naming the missing head file when the model cannot give one of the ``wanted`` outputs."""
    available = getattr(encoder, "outputs", frozenset({DENSE}))
    for output in sorted(wanted - available):
        file = HEAD_FILES.get(output)
        why = f"its folder has no {file} (BGE-M3's {output} head)" if file else "it has no such output"
        raise InvalidInput(f"model '{name}' cannot give {output} outputs: {why}", param="outputs")


def prompt_text(encoder, name: str | None) -> str | None:
    """The text of the model's prompt ``name`` (config_sentence_transformers.json); InvalidInput if unknown."""
    if name is None:
        return None
    prompts = getattr(encoder, "prompts", None) or {}
    if name not in prompts:
        known = ", ".join(f'"{p}"' for p in sorted(prompts))  # TEI's words end so: clients parse the names out
        raise InvalidInput(f"prompt_name '{name}' is not one of the model's prompts. Available prompts: [{known}]",
                           param="prompt_name")
    return prompts[name]


def token_ids(encoder: SentenceEncoder, request: EmbedRequest, mode: str, prompt: str | None) -> list[list[int]]:
    """Model token ids per input (on a tokenizer thread, or on the event loop for a query).

    ``mode`` says how token-id inputs are read: "text" (they are texts), "openai" (cl100k_base ids),
    "model" (the model's own ids), "model_full" (whole model sequences, see ``_full_sequences``), "reject".
    """
    inputs = request.inputs
    if mode == "reject":
        raise InvalidInput("token-id inputs are disabled on this server (EMBED_TOKEN_IDS=reject); send text",
                           param="input")
    if mode == "openai":
        inputs = [decode_cl100k(ids) for ids in inputs]
    elif mode == "model":
        return [_model_ids(encoder, ids, i, request.truncate) for i, ids in enumerate(inputs)]
    elif mode == "model_full":
        return _full_sequences(encoder, request, prompt)
    check_text(inputs)
    try:
        return encoder.tokenize(list(inputs), truncate=request.truncate, direction=request.truncation_direction,
                                prompt=prompt)
    except InputTooLong as exc:
        raise ContextLengthExceeded("the input length exceeds the context length", param="input") from exc


def _check_vocab(encoder, ids: list[int], index: int) -> None:
    vocab = rows(encoder)
    bad = next((i for i in ids if not 0 <= i < vocab), None)
    if bad is not None:
        raise InvalidInput(f"token id {bad} in input {index} is outside the model's vocabulary (size {vocab})",
                           param="input")


def _full_sequences(encoder, request: EmbedRequest, prompt: str | None) -> list[list[int]]:
    """Id inputs that are whole model sequences (special tokens included, as a tokenizer gives them), cut to the
    context from the request's truncation side; texts among them are tokenized as texts. With a prompt, id inputs
    are decoded to text (special tokens dropped) and tokenized after it: TEI's reading of token ids."""
    inputs = list(request.inputs)
    for index, item in enumerate(inputs):
        if not isinstance(item, str):
            _check_vocab(encoder, item, index)
    if prompt is not None:
        inputs = [x if isinstance(x, str) else encoder.decode(x, skip_special_tokens=True) for x in inputs]
    out = [[] if isinstance(x, str) else _cut(encoder, x, request) for x in inputs]
    texts = [i for i, x in enumerate(inputs) if isinstance(x, str)]
    if texts:
        tokenized = token_ids(encoder, dataclasses.replace(request, inputs=[inputs[i] for i in texts]), "text", prompt)
        for i, ids in zip(texts, tokenized):
            out[i] = ids
    return out


def _cut(encoder, ids: list[int], request: EmbedRequest) -> list[int]:
    limit = encoder.details.context_length
    if len(ids) <= limit:
        return list(ids)
    if not request.truncate:
        raise ContextLengthExceeded("the input length exceeds the context length", param="input")
    return list(ids[:limit] if request.truncation_direction == "right" else ids[-limit:])


def _model_ids(encoder: SentenceEncoder, ids: list[int], index: int, truncate: bool) -> list[int]:
    _check_vocab(encoder, ids, index)
    try:
        return encoder.with_special_tokens(ids, truncate)
    except InputTooLong as exc:
        raise ContextLengthExceeded("the input length exceeds the context length", param="input") from exc


def rows(encoder) -> int:
    """Valid token ids are below this: the embedding matrix's rows (the tokenizer may know more tokens)."""
    details = encoder.details
    return getattr(details, "embedding_rows", 0) or details.vocab_size


def check_rows(encoder, ids: list[list[int]]) -> None:
    """Refuse a request holding a token id the model has no embedding for (a tokenizer with added tokens
    beyond the matrix): that input cannot run, and would otherwise fail the batch it shares."""
    matrix_rows = getattr(encoder.details, "embedding_rows", 0)
    if not matrix_rows or getattr(encoder.details, "vocab_size", 0) <= matrix_rows:
        return
    for index, seq in enumerate(ids):
        if seq and max(seq) >= matrix_rows:
            raise InvalidInput(f"input {index} holds token id {max(seq)}, which the model has no embedding for "
                               f"(its vocabulary has {matrix_rows} rows)", param="input")
