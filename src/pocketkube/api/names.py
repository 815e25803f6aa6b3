"""Generated name parts, as upstream's rand.String/SafeEncodeString make them."""

from __future__ import annotations

import random

# No vowels (no words) and no easily confused characters.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(length: int = 5) -> str:
    """A suffix for generateName and generated volume names: unique enough, not a secret (math/rand upstream)."""
    return "".join(random.choices(SAFE_ALPHABET, k=length))
