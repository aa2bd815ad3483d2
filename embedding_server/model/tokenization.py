"""Text to token ids for one model: special tokens, truncation to the context, huge texts from a prefix.

Thread-compatible: each thread gets its own copy of the tokenizer (see ``TextTokenizer._thread_backend``).
"""

from __future__ import annotations

import copy
import threading


class InputTooLong(Exception):
    """An input exceeds the context length and truncation was not allowed."""

    def __init__(self, index: int, length: int, limit: int):
        super().__init__(f"input {index} has {length} tokens, over the context length {limit}")
        self.index, self.length, self.limit = index, length, limit


class TextTokenizer:
    """A transformers tokenizer bound to a context length (and lower-casing, if the model asks for it)."""

    def __init__(self, tokenizer, context_length: int, do_lower_case: bool = False):
        self.tokenizer, self.context_length, self.do_lower_case = tokenizer, context_length, do_lower_case
        self.clip_chars = max(4096, context_length * 16)  # texts longer than this tokenize from a prefix
        self.template = self._special_template()
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

    def _thread_backend(self, max_length: int, direction: str):
        """This thread's copy of a fast tokenizer's Rust backend, truncating to ``max_length`` from
        ``direction``; None for a slow tokenizer. The same call the transformers wrapper makes, minus its
        ~90 us of Python per call (a tenth of a one-sentence request's event-loop time)."""
        backend = getattr(self._per_thread, "backend", False)
        if backend is False:
            source = getattr(self.tokenizer, "backend_tokenizer", None) if self.tokenizer.is_fast else None
            backend = self._per_thread.backend = copy.deepcopy(source) if source is not None else None
            if backend is not None:
                backend.no_padding()
            self._per_thread.truncation = None
        if backend is not None and self._per_thread.truncation != (max_length, direction):
            backend.enable_truncation(max_length, direction=direction)
            self._per_thread.truncation = (max_length, direction)
        return backend

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

