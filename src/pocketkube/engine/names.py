"""Readable random container names (`brave_lovelace`), as Docker gives containers started without --name."""

from __future__ import annotations

import random
from collections.abc import Callable

_ADJECTIVES = (
    "agile", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "eager", "fair", "fond", "gentle",
    "happy", "jolly", "keen", "kind", "lively", "lucid", "merry", "nimble", "noble", "proud", "quick", "quiet",
    "sharp", "shy", "steady", "sunny", "swift", "tender", "vivid", "warm", "wise", "witty", "zen",
)
_SCIENTISTS = (
    "babbage", "bell", "bohr", "curie", "darwin", "dijkstra", "einstein", "euler", "faraday", "fermi", "gauss",
    "goodall", "hamilton", "hopper", "hypatia", "johnson", "kepler", "knuth", "lamport", "lovelace", "maxwell",
    "meitner", "newton", "noether", "pascal", "ritchie", "shannon", "tesla", "thompson", "turing", "wozniak",
)


def generate(in_use: Callable[[str], bool]) -> str:
    """A name `in_use` says is free; a numeric suffix once the plain pairs run out, as Docker does on retry."""
    for attempt in range(100):
        name = f"{random.choice(_ADJECTIVES)}_{random.choice(_SCIENTISTS)}"
        if attempt >= 10:
            name += str(random.randint(0, 99))
        if not in_use(name):
            return name
    raise RuntimeError("could not find a free container name")
