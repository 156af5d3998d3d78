"""Deterministic "generation": words derived from a hash of the prompt."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber",
    "basalt", "cobalt", "dune", "ember", "fjord", "glacier", "harbor", "island", "jade",
    "karst", "lagoon", "meadow", "nebula", "orchid", "prairie", "quartz", "river", "summit",
    "tundra", "umber", "valley", "willow", "zephyr", "anchor", "beacon", "canyon", "drift",
    "estuary", "forest", "grove", "horizon", "inlet", "jetty", "kelp", "lantern", "mesa",
    "north",
)
_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Stand-in tokenizer: words and punctuation marks (at least one token)."""
    return max(1, len(_TOKEN.findall(text)))


@dataclass(frozen=True)
class Generation:
    tokens: list[str]
    logprobs: list[float]
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def _digest(seed: str, i: int) -> bytes:
    return hashlib.sha256(f"{seed}\0{i}".encode()).digest()


def generate(prompt: str, max_tokens: int, index: int = 0,
             stop: list[str] | None = None) -> Generation:
    """Tokens " word" chosen by sha256(index, prompt, position); cut at the first stop string."""
    seed = f"{index}\0{prompt}"
    tokens: list[str] = []
    logprobs: list[float] = []
    text = ""
    for i in range(max_tokens):
        d = _digest(seed, i)
        token = " " + WORDS[d[0] % len(WORDS)]
        tokens.append(token)
        logprobs.append(-round(d[1] / 64, 4))
        text += token
        for s in stop or ():
            cut = text.find(s)
            if s and cut >= 0:
                kept = _cut(tokens, cut)
                return Generation(kept, logprobs[: len(kept)], "stop")
    return Generation(tokens, logprobs, "length")


def _cut(tokens: list[str], length: int) -> list[str]:
    """Tokens truncated so that their concatenation has `length` characters."""
    out: list[str] = []
    used = 0
    for token in tokens:
        if used >= length:
            break
        piece = token[: length - used]
        out.append(piece)
        used += len(piece)
    return out


def top_alternatives(token: str, logprob: float, k: int) -> dict[str, float]:
    """k deterministic alternatives for logprobs output, the chosen token first."""
    alts = {token: logprob}
    d = hashlib.sha256(token.encode()).digest()
    for j in range(len(WORDS)):
        if len(alts) >= k:
            break
        alt = " " + WORDS[(d[j % len(d)] + j) % len(WORDS)]
        alts.setdefault(alt, round(logprob - 0.5 - j / 10, 4))
    return alts
