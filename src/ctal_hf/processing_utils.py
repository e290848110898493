"""Pieces shared by the model families' processors (one implementation for every family)."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase
from transformers.utils import logging


logger = logging.get_logger(__name__)


def too_long_error(inputs: str, indices: list[int], limit: str, positions: str, units: str) -> ValueError:
    """The error for inputs over the model's positions with `truncation=False`."""
    return ValueError(
        f"{inputs} {indices} have more than {limit} (the model's {positions}); shorten them or pass truncation=True "
        f"to keep their first {units}."
    )


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    truncation: bool = True,
    max_length: int | None = None,
    **text_kwargs,
) -> dict:
    """Tokenise a batch of texts for a model whose text positions end at `max_length` (default: the tokenizer's
    `model_max_length`, special tokens included).

    `truncation=True` keeps the first `max_length` tokens of longer texts with a warning naming them; `False` raises a
    `ValueError` naming them, since the model could not take them. Further `text_kwargs` (padding, return_tensors,
    ...) go to the tokenizer.
    """
    max_length = tokenizer.model_max_length if max_length is None else max_length
    # Always let the tokenizer truncate: its overflow tells which texts did not fit, in a single pass.
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, **text_kwargs)
    too_long = [index for index, encoding in enumerate(encoded.encodings) if encoding.overflowing]
    if too_long and not truncation:
        raise too_long_error("Texts", too_long, f"max_length={max_length} tokens", "text positions", "tokens")
    if too_long:
        logger.warning(f"Texts {too_long} have more than {max_length} tokens; keeping the first {max_length}.")
    return dict(encoded)


__all__ = ["tokenize_texts", "too_long_error"]
