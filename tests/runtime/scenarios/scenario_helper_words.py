"""Not a scenario: a helper module that ``imports_helper.py`` imports from beside it."""

from __future__ import annotations

WORDS = ("alpha", "beta", "gamma", "beta", "alpha", "alpha")


def word_of(word: str) -> str:
    return word
