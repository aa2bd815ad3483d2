"""Deterministic benchmark workload: English-like sentences from a fixed seed, no downloads.

`sentences()` returns the same 2,000 sentences of 12-80 words on every machine and Python
version (only `random.Random` with an int seed, whose sequence is stable across versions).
"""
from __future__ import annotations

import random

SEED = 20240611
N_SENTENCES = 2000
MIN_WORDS, MAX_WORDS = 12, 80
QUERY = "How do I reset my password on the company laptop?"

_WORDS = {
    "det": "the a this that every each some another our their my your its".split(),
    "adj": (
        "quick small large early late green quiet bright careful simple modern ancient local "
        "public private heavy light strong weak happy tired busy empty full narrow wide deep "
        "warm cold fresh old young new important different similar useful difficult common "
        "rare famous hidden northern southern international technical financial medical "
        "digital musical natural political historical scientific economic practical"
    ).split(),
    "noun": (
        "city river teacher student doctor engineer farmer village market window garden "
        "kitchen library museum station bridge road mountain forest lake island company "
        "report system network server database question answer problem solution meeting "
        "project budget customer product service contract letter message journey weather "
        "morning evening summer winter language history science music painting festival "
        "government committee hospital laboratory experiment computer battery vehicle "
        "airport harbour ticket passport password laptop manager policy schedule invoice "
        "recipe neighbour child family friend dog horse bicycle camera telephone"
    ).split(),
    "verb": (
        "opened closed visited described explained built repaired crossed followed watched "
        "studied measured delivered approved rejected discussed planned cleaned painted "
        "reviewed updated checked signed shared received protected improved moved found "
        "changed prepared organised recorded replaced tested compared collected"
    ).split(),
    "prep": "near behind after before during without across through under above beside".split(),
    "conj": "and but while because although so yet whereas".split(),
}
# One clause; sentences chain clauses with a conjunction until the word budget is spent.
_CLAUSE = ("det", "adj", "noun", "verb", "det", "noun", "prep", "det", "adj", "noun")


def _sentence(rng: random.Random, n_words: int) -> str:
    words: list[str] = []
    while len(words) < n_words:
        if words:
            words[-1] += ","
            words.append(rng.choice(_WORDS["conj"]))
        for kind in _CLAUSE:
            if kind == "adj" and rng.random() < 0.4:
                continue
            words.append(rng.choice(_WORDS[kind]))
    words = words[:n_words]
    words[-1] = words[-1].rstrip(",")
    return " ".join(words).capitalize() + "."


def sentences(n: int = N_SENTENCES, seed: int = SEED) -> list[str]:
    """`n` sentences of MIN_WORDS..MAX_WORDS words (uniform length), same for a given seed."""
    rng = random.Random(seed)
    return [_sentence(rng, rng.randint(MIN_WORDS, MAX_WORDS)) for _ in range(n)]


def bulk_request(texts: list[str], n: int = 2048) -> list[str]:
    """An `n`-input request body built by cycling through `texts` (2,000 + 48 repeats)."""
    return [texts[i % len(texts)] for i in range(n)]


def chunks(texts: list[str], size: int = 32) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


if __name__ == "__main__":  # quick look: python -m bench.workload
    s = sentences()
    lens = sorted(len(x.split()) for x in s)
    print(len(s), "sentences; words min/median/max:", lens[0], lens[len(lens) // 2], lens[-1])
    print(s[0], "\n", s[1], "\nquery:", QUERY)
