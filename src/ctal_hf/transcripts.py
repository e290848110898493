"""The package's one rule for a usable transcript, applied by the processors and by every training loader.

Both model families read every utterance with its transcript (CTAL paper section 3.1: the audio stream attends to the
text stream), so an empty transcript is an error rather than a `<s></s>` input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


def is_transcript(text: Any) -> bool:
    """A string with at least one non-whitespace character. None, NaN (an empty manifest cell), `""`, `"  "` and
    non-strings are not transcripts."""
    return isinstance(text, str) and bool(text.strip())


def check_transcripts(texts: Sequence[Any], name: Callable[[int], str] = "text {}".format, where: str = "") -> None:
    """Raise a `ValueError` naming every item of `texts` that is not a transcript (`is_transcript`).

    `name(index)` says how the message names an item (default `text 0`, `text 1`, ...; e.g. a manifest row or an
    audio file); `where` prefixes the message.
    """
    bad = [index for index, text in enumerate(texts) if not is_transcript(text)]
    if not bad:
        return
    shown = ", ".join(f"{name(index)} ({_describe(texts[index])})" for index in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise ValueError(
        f"{where}{len(bad)} transcript{'s' if len(bad) > 1 else ''} empty or not text: {shown}{more}. The audio-text "
        "models pair every utterance with its transcript; fill in the text or remove those items."
    )


def _describe(text: Any) -> str:
    """How `check_transcripts` shows a bad item: None and NaN (pandas' empty cell) are 'missing'."""
    return "missing" if text is None or (isinstance(text, float) and math.isnan(text)) else repr(text)


__all__ = ["check_transcripts", "is_transcript"]
