"""TextTokenizer.tokens (ids with their text, special flag and UTF-8 byte spans, untruncated) and decode."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, BertTokenizer

from embedding_server.model.tokenization import TextTokenizer, Token, _byte_positions
from tests.support.checkpoints import minilm_path


@pytest.fixture(scope="module")
def minilm() -> TextTokenizer:
    return TextTokenizer(AutoTokenizer.from_pretrained(str(minilm_path())), 256)


@pytest.fixture(scope="module")
def xlmr(tiny_models_dir) -> TextTokenizer:
    return TextTokenizer(AutoTokenizer.from_pretrained(str(tiny_models_dir / "tiny-xlmr")), 48)


def test_byte_positions():
    assert _byte_positions("abc").tolist() == [0, 1, 2, 3]
    assert _byte_positions("aé€🚀b").tolist() == [0, 1, 3, 6, 10, 11]
    assert _byte_positions("").tolist() == [0]


def test_tokens_carry_utf8_byte_spans_of_the_text(minilm):
    text = "Héllo wörld 🚀 x"
    tokens = minilm.tokens(text)
    assert tokens[0] == Token(101, "[CLS]", True, None, None)
    assert tokens[-1] == Token(102, "[SEP]", True, None, None)
    raw = text.encode()
    for t in tokens[1:-1]:
        assert not t.special and raw[t.start:t.stop].decode() == t.text
    assert [t.text for t in tokens[1:-1]] == ["Héllo", "wörld", "🚀", "x"]  # as sent, not normalised
    assert [(t.start, t.stop) for t in tokens[1:-1]] == [(0, 6), (7, 13), (14, 18), (19, 20)]
    assert [t.id for t in tokens] == minilm.tokenize([text])[0]


def test_tokens_without_special_tokens_and_with_a_prompt(minilm):
    bare = minilm.tokens("hello world", add_special_tokens=False)
    assert [t.text for t in bare] == ["hello", "world"] and not any(t.special for t in bare)
    prompted = minilm.tokens("hello", prompt="query: ")
    assert [(t.text, t.start, t.stop) for t in prompted[1:-1]] == [("query", 0, 5), (":", 5, 6), ("hello", 7, 12)]


def test_tokens_are_not_truncated_and_leave_truncation_as_it_was(minilm):
    long = "word " * 600
    assert len(minilm.tokens(long)) == 602
    assert len(minilm.tokenize([long])[0]) == 256  # the same thread's backend truncates again
    assert len(minilm.tokens(long)) == 602


def test_metaspace_tokens(xlmr):
    tokens = xlmr.tokens("vector search")
    assert tokens[0].special and tokens[-1].special
    assert "".join(t.text for t in tokens[1:-1]).replace(" ", "") == "vectorsearch"
    assert [t.id for t in tokens] == xlmr.tokenize(["vector search"])[0]


def test_decode(minilm):
    ids = minilm.tokenize(["Hello, world!"])[0]
    assert minilm.decode(ids) == "hello, world!"
    assert minilm.decode(ids, skip_special_tokens=False) == "[CLS] hello, world! [SEP]"
    assert minilm.decode([ids[1], 10**9, -5, ids[2]]) == minilm.decode(ids[1:3])  # unknown ids skipped
    assert minilm.decode([]) == ""


class _Slow:
    """A tokenizer without a Rust backend (transformers 4's slow tokenizers; version 5 has none left)."""

    is_fast = False

    def __init__(self, fast):
        self._fast = fast

    def __getattr__(self, name):
        return getattr(self._fast, name)

    def __len__(self):
        return len(self._fast)

    def __call__(self, *args, **kwargs):
        return self._fast(*args, **kwargs)


def test_slow_tokenizer_gives_tokens_without_spans():
    slow = TextTokenizer(_Slow(BertTokenizer(str(minilm_path() / "vocab.txt"))), 256)
    tokens = slow.tokens("hello world")
    assert [(t.text, t.special, t.start) for t in tokens] == [("[CLS]", True, None), ("hello", False, None),
                                                             ("world", False, None), ("[SEP]", True, None)]
    assert slow.decode([t.id for t in tokens]) == "hello world"
