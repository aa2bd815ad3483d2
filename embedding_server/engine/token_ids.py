"""Decoding OpenAI token-array inputs (cl100k_base ids) to text, fully offline.

The vocabulary comes from the ``cl100k_base.tiktoken.gz`` file shipped inside the
``bpe-openai`` wheel; nothing is downloaded. Decoding joins each id's bytes and reads
them as UTF-8 with replacement, exactly as ``tiktoken``'s ``decode`` does.
"""

from __future__ import annotations

import base64
import functools
import gzip
from importlib import resources

from .errors import InvalidInput

# cl100k_base's special tokens (tiktoken_ext.openai_public).
_SPECIAL = {
    100257: b"<|endoftext|>",
    100258: b"<|fim_prefix|>",
    100259: b"<|fim_middle|>",
    100260: b"<|fim_suffix|>",
    100276: b"<|endofprompt|>",
}


@functools.lru_cache(maxsize=1)
def cl100k_vocabulary() -> dict[int, bytes]:
    """id -> token bytes for cl100k_base, special tokens included."""
    raw = resources.files("bpe_openai.data").joinpath("cl100k_base.tiktoken.gz").read_bytes()
    vocab: dict[int, bytes] = {}
    for line in gzip.decompress(raw).splitlines():
        if line:
            token, rank = line.split()
            vocab[int(rank)] = base64.b64decode(token)
    vocab.update(_SPECIAL)
    return vocab


def decode_cl100k(ids: list[int]) -> str:
    """Text of a cl100k_base id list; an id the vocabulary lacks is an InvalidInput."""
    vocab = cl100k_vocabulary()
    text = bytearray()
    try:
        # In slices: bytes.join keeps an 80-byte buffer record per item, ~700 MB for 8M ids at once.
        for start in range(0, len(ids), 65536):
            text += b"".join([vocab[i] for i in ids[start:start + 65536]])
    except KeyError as exc:
        raise InvalidInput(f"token id {exc.args[0]} is out of range for the cl100k_base vocabulary", param="input") from None
    return text.decode("utf-8", errors="replace")
