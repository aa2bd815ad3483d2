"""decode_cl100k against tiktoken's cl100k_base, built offline from the same vocabulary file."""

from __future__ import annotations

import base64
import gzip
import hashlib
import random
from importlib import resources

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public

from embedding_server.engine.errors import InvalidInput
from embedding_server.engine.token_ids import cl100k_vocabulary, decode_cl100k

TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "naïve café — Größe, élève, ñandú",
    "日本語のテキストと中文文本, 한국어",
    "emoji 👍🏽🎉 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "  leading spaces,\ttabs\nnewlines\r\n and trailing   ",
    "code: def f(x):\n    return x ** 2  # 1234567890",
    "",
]


@pytest.fixture(scope="module")
def cl100k_file() -> bytes:
    """The decompressed cl100k_base.tiktoken shipped in the bpe-openai wheel."""
    raw = resources.files("bpe_openai.data").joinpath("cl100k_base.tiktoken.gz").read_bytes()
    return gzip.decompress(raw)


@pytest.fixture(scope="module")
def encoding(cl100k_file) -> tiktoken.Encoding:
    """tiktoken's own cl100k_base definition (pat_str, special tokens), ranks from the local file."""
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in cl100k_file.splitlines() if line)
    }
    seen = {}

    def local_ranks(url, expected_hash=None):
        seen["expected_hash"] = expected_hash
        return ranks

    original = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = local_ranks  # no network: hand tiktoken the local ranks
    try:
        params = openai_public.cl100k_base()
    finally:
        openai_public.load_tiktoken_bpe = original
    # The local file is the genuine one tiktoken would have downloaded.
    if seen["expected_hash"]:
        assert hashlib.sha256(cl100k_file).hexdigest() == seen["expected_hash"]
    return tiktoken.Encoding(
        name="cl100k_base_offline",
        pat_str=params["pat_str"],
        mergeable_ranks=params["mergeable_ranks"],
        special_tokens=params["special_tokens"],
    )


def test_special_tokens_match_tiktoken(encoding):
    vocab = cl100k_vocabulary()
    for token, rank in encoding._special_tokens.items():
        assert vocab[rank] == token.encode()


def test_vocabulary_ids_match_tiktoken(encoding):
    expected = set(encoding._mergeable_ranks.values()) | set(encoding._special_tokens.values())
    assert set(cl100k_vocabulary()) == expected
    assert max(cl100k_vocabulary()) == encoding.max_token_value
    for rank in (0, 1000, 50000, 100255):
        assert cl100k_vocabulary()[rank] == encoding.decode_single_token_bytes(rank)


@pytest.mark.parametrize("text", TEXTS)
def test_roundtrip_equals_tiktoken(encoding, text):
    ids = encoding.encode(text)
    assert decode_cl100k(ids) == encoding.decode(ids) == text


def test_special_token_ids(encoding):
    ids = encoding.encode("a<|endoftext|>b<|endofprompt|>", allowed_special="all")
    assert 100257 in ids and 100276 in ids
    assert decode_cl100k(ids) == encoding.decode(ids) == "a<|endoftext|>b<|endofprompt|>"


@pytest.mark.parametrize("text", ["👍🏽🎉", "日本語", "Größe"])
def test_partial_multibyte_sequences_decode_like_tiktoken(encoding, text):
    """Cutting ids mid-character gives the same replacement characters as tiktoken."""
    ids = encoding.encode(text)
    for cut in range(len(ids) + 1):
        for part in (ids[:cut], ids[cut:]):
            assert decode_cl100k(part) == encoding.decode(part)


def test_random_id_sequences_decode_like_tiktoken(encoding):
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(100256) for _ in range(rng.randint(1, 12))]
        assert decode_cl100k(ids) == encoding.decode(ids)


def test_empty_list():
    assert decode_cl100k([]) == ""


@pytest.mark.parametrize("bad", [100261, 100275, 100277, 200000, -1])
def test_out_of_range_id(bad):
    with pytest.raises(InvalidInput) as info:
        decode_cl100k([15339, bad, 1917])
    assert str(bad) in info.value.message
    assert "cl100k_base" in info.value.message
    assert info.value.param == "input"
