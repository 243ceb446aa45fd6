"""Caption text a model answered, made fit to store: the one rule for every stored caption.

A model may emit any character; PostgreSQL refuses NUL in a text column, lone surrogates cannot
be encoded as UTF-8, and other control characters (escape sequences, backspace) only garble the
pages and logs that show the caption. Newlines and tabs stay: they are layout.
"""

from __future__ import annotations

import unicodedata

_KEPT = frozenset("\n\t")


def clean_caption(text: str) -> str:
    """``text`` without control characters (but newline and tab) or lone surrogates, trimmed.

    >>> clean_caption(" <bo>\\x00 sits\\x1b[0m on\\tthe grass.\\r\\n")
    '<bo> sits[0m on\\tthe grass.'
    """
    kept = (c for c in text if c in _KEPT or unicodedata.category(c) not in ("Cc", "Cs"))
    return "".join(kept).strip()
