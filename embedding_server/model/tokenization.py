"""Text to token ids for one model: special tokens, truncation to the context, huge texts from a prefix;
tokens with their text and byte spans, and ids back to text.

Thread-compatible: each thread gets its own copy of the tokenizer (see ``TextTokenizer._thread_backend``).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np


class InputTooLong(Exception):
    """An input exceeds the context length and truncation was not allowed."""

    def __init__(self, index: int, length: int, limit: int):
        super().__init__(f"input {index} has {length} tokens, over the context length {limit}")
        self.index, self.length, self.limit = index, length, limit


@dataclass(frozen=True, slots=True)
class Token:
    """One token of a text: its id, its text, whether it is special (added by the tokenizer), and the UTF-8 byte
    span it covers in the text (None for special tokens)."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


def _byte_positions(text: str) -> np.ndarray:
    """The UTF-8 byte offset of every character index of ``text``, and of its end."""
    if text.isascii():
        return np.arange(len(text) + 1)
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    widths = 1 + (points >= 0x80).astype(np.int64) + (points >= 0x800) + (points >= 0x10000)
    return np.concatenate(([0], np.cumsum(widths)))


class TextTokenizer:
    """A transformers tokenizer bound to a context length (and lower-casing, if the model asks for it)."""

    def __init__(self, tokenizer, context_length: int, do_lower_case: bool = False):
        self.tokenizer, self.context_length, self.do_lower_case = tokenizer, context_length, do_lower_case
        self.clip_chars = max(4096, context_length * 16)  # texts longer than this tokenize from a prefix
        self.template = self._special_template()
        self.vocab_size = len(tokenizer)  # ids below this decode to a token
        # A fast tokenizer keeps its truncation settings (max_length) as state that every call resets: two
        # threads sharing one can get each other's max_length (257 tokens for a 256 context). Each thread
        # gets its own copy instead (a lock would make one huge input stall everyone's tokenization).
        self._per_thread = threading.local()

    def tokenize(self, texts: list[str], truncate: bool = True, direction: str | None = None,
                 prompt: str | None = None) -> list[list[int]]:
        """Token ids per text, special tokens included, cut to the context length.

        ``direction`` ("right" or "left"; default: the tokenizer's own) says which end of an over-long
        text is cut; ``prompt`` is put before each text (as sentence-transformers does with its prompts).
        With ``truncate=False`` an over-long text raises InputTooLong instead.
        """
        direction = direction or self.tokenizer.truncation_side
        if prompt:
            texts = [prompt + t for t in texts]
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        limit = self.context_length
        out: list[list[int]] = [[] for _ in texts]
        short = [i for i, t in enumerate(texts) if len(t) <= self.clip_chars]
        # One spare position shows whether a text was longer than the limit.
        for i, ids in zip(short, self._encode([texts[i] for i in short], limit + 1, direction)):
            out[i] = ids
        over = [i for i in short if len(out[i]) > limit]
        if over and not truncate:
            raise InputTooLong(over[0], len(out[over[0]]), limit)
        for i, ids in zip(over, self._encode([texts[i] for i in over], limit, direction)):
            out[i] = ids
        for i in (i for i, t in enumerate(texts) if len(t) > self.clip_chars):
            out[i] = self._tokenize_long(texts[i], i, truncate, direction)
        return out

    def pairs(self, first: str, seconds: list[str], truncate: bool = True,
              direction: str | None = None) -> list[tuple[list[int], list[int]]]:
        """(ids, token types) of each (first, second) pair tokenized together, special tokens included, cut
        ``longest_first`` to the context length (the tokenizer's pair encoding, as a cross-encoder is fed).
        With ``truncate=False`` an over-long pair raises InputTooLong instead."""
        direction = direction or self.tokenizer.truncation_side
        if self.do_lower_case:
            first, seconds = first.lower(), [t.lower() for t in seconds]
        limit = self.context_length
        backend = self._thread_backend(limit if truncate else None, direction)
        if backend is not None:
            out = [(e.ids, e.type_ids) for e in backend.encode_batch([(first, t) for t in seconds])]
        else:
            tokenizer = self._thread_tokenizer()
            tokenizer.truncation_side = direction
            encoded = tokenizer([first] * len(seconds), seconds, truncation="longest_first" if truncate else False,
                                max_length=limit if truncate else None, return_attention_mask=False)
            types = encoded.get("token_type_ids") or [[0] * len(ids) for ids in encoded["input_ids"]]
            out = list(zip(encoded["input_ids"], types))
        over = next((i for i, (ids, _) in enumerate(out) if len(ids) > limit), None)
        if over is not None:
            raise InputTooLong(over, len(out[over][0]), limit)
        return out

    def _encode(self, texts: list[str], max_length: int, direction: str) -> list[list[int]]:
        if not texts:
            return []
        backend = self._thread_backend(max_length, direction)
        if backend is not None:
            return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=True)]
        tokenizer = self._thread_tokenizer()
        tokenizer.truncation_side = direction
        return tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length,
                         return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _thread_tokenizer(self):
        """This thread's own copy of the tokenizer."""
        tokenizer = getattr(self._per_thread, "tokenizer", None)
        if tokenizer is None:
            tokenizer = self._per_thread.tokenizer = copy.deepcopy(self.tokenizer)
        return tokenizer

    def _thread_backend(self, max_length: int | None, direction: str):
        """This thread's copy of a fast tokenizer's Rust backend, truncating to ``max_length`` from
        ``direction`` (None: not truncating); None for a slow tokenizer. The same call the transformers wrapper
        makes, minus its ~90 us of Python per call (a tenth of a one-sentence request's event-loop time)."""
        backend = getattr(self._per_thread, "backend", False)
        if backend is False:
            source = getattr(self.tokenizer, "backend_tokenizer", None) if self.tokenizer.is_fast else None
            backend = self._per_thread.backend = copy.deepcopy(source) if source is not None else None
            if backend is not None:
                backend.no_padding()
            self._per_thread.truncation = None
        if backend is not None and self._per_thread.truncation != (max_length, direction):
            if max_length is None:
                backend.no_truncation()
            else:
                backend.enable_truncation(max_length, direction=direction)
            self._per_thread.truncation = (max_length, direction)
        return backend

    def tokens(self, text: str, add_special_tokens: bool = True, prompt: str | None = None) -> list[Token]:
        """Every token of ``prompt + text``, untruncated, with the UTF-8 byte span each covers in it (spans come
        from a fast tokenizer only; a slow one gives the tokens' own strings and no spans)."""
        text = (prompt or "") + text
        source = text.lower() if self.do_lower_case else text
        shown = text if len(source) == len(text) else source  # spans index the text as sent where they can
        backend = self._thread_backend(None, "right")
        if backend is None:
            encoded = self.tokenizer(source, add_special_tokens=add_special_tokens, return_special_tokens_mask=True)
            ids, special = encoded["input_ids"], encoded["special_tokens_mask"]
            return [Token(i, t, bool(s), None, None)
                    for i, t, s in zip(ids, self.tokenizer.convert_ids_to_tokens(ids), special)]
        encoding = backend.encode(source, add_special_tokens=add_special_tokens)
        at = _byte_positions(shown)
        return [Token(i, token, True, None, None) if s else Token(i, shown[a:b], False, int(at[a]), int(at[b]))
                for i, token, s, (a, b) in zip(encoding.ids, encoding.tokens, encoding.special_tokens_mask,
                                               encoding.offsets)]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """The text of model token ids; ids the tokenizer does not know are skipped."""
        known = [i for i in ids if 0 <= i < self.vocab_size]
        backend = self._thread_backend(None, "right")
        if backend is not None:
            return backend.decode(known, skip_special_tokens=skip_special_tokens)
        return self.tokenizer.decode(known, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)

    def _tokenize_long(self, text: str, index: int, truncate: bool, direction: str) -> list[int]:
        """Tokenize a huge text from the end that is kept (its start, or its end when cutting from the left):
        once that part alone overflows the context and doubling it leaves the truncated ids unchanged, the
        rest of the text cannot matter (megabyte inputs cost milliseconds instead of seconds)."""
        limit, width = self.context_length, self.clip_chars

        def part(n: int) -> str:
            return text[:n] if direction == "right" else text[-n:]

        while width < len(text):
            head = self._encode([part(width)], limit + 1, direction)[0]
            if len(head) > limit:
                if not truncate:
                    raise InputTooLong(index, len(head), limit)
                cut, check = self._encode([part(width), part(2 * width)], limit, direction)
                if cut == check:
                    return cut
                width *= 2
            else:  # too few tokens yet: grow in proportion (few tokens per char, e.g. one giant "word")
                width = int(width * max(2.0, 2.0 * (limit + 1) / max(len(head), 1)))
        ids = self._encode([text], limit + 1, direction)[0]
        if len(ids) > limit and not truncate:
            raise InputTooLong(index, len(ids), limit)
        return ids if len(ids) <= limit else self._encode([text], limit, direction)[0]

    def _special_template(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a single sequence (e.g. [CLS] ... [SEP])."""
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        start = next(i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare)
        return full[:start], full[start + len(bare):]

    def with_special_tokens(self, ids: list[int], truncate: bool = True) -> list[int]:
        """Wrap raw model-vocabulary ids in the model's special tokens, cut to the context length.

        With ``truncate=False`` an over-long input raises InputTooLong instead.
        """
        prefix, suffix = self.template
        room = self.context_length - len(prefix) - len(suffix)
        if len(ids) > room and not truncate:
            raise InputTooLong(0, len(ids) + len(prefix) + len(suffix), self.context_length)
        return prefix + list(ids[:room]) + suffix

