"""CTAL tokenizer: byte-level BPE with the authors' text normalisation built in (paper sections 3.1.1 and 4.1).

"We consider training a BBPE tokenizer on the LibriSpeech corpus with additional special tokens (<s>, </s>, <mask>,
<pad>)". The released vocabulary has 30,000 entries with `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4, and
was used through RoBERTa's tokenizer with `add_prefix_space=False` after this normalisation of the text (original
`m2p_finetune.py`):

    text = " ".join(word.lower() for word in re.split(" +", re.sub(r"[\\.,\\?\\!]", " ", text)))

`CTALTokenizer` carries the same normalisation as a `tokenizers` normaliser, so it is saved with the tokenizer and
applied by every loader. This module also trains new tokenizers (`train_ctal_tokenizer`, CLI `ctal-train-tokenizer`);
`ctal_hf.data.sources.iter_transcripts` reads transcripts from files, manifests and datasets for it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers, trainers
from transformers import RobertaTokenizer
from transformers.utils import logging

from ...data.sources import iter_transcripts
from ...output_dir import OutputDirNotEmptyError, check_output_dir, staged_output_dir
from ...transcripts import is_transcript


logger = logging.get_logger(__name__)


# In id order: the trainer assigns ids 0..4 in this order, as in the released vocabulary.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
# CTALConfig.max_position_embeddings: the text stream has 512 positions, <s> and </s> included.
MAX_TEXT_TOKENS = 512


# Python's `str.lower` writes a capital sigma as "ς" in the Unicode Final_Sigma context: after a cased letter and not
# before one, skipping "case-ignorable" characters (apostrophes, combining marks) on both sides. The per-character
# `Lowercase` normaliser has no context, so this rule runs first. "Cased" here excludes case-ignorable characters,
# as in CPython's `handle_capital_sigma`.
_CASED = r"[\p{Cased}&&\P{Case_Ignorable}]"
_FINAL_SIGMA = Regex(rf"(?<={_CASED}\p{{Case_Ignorable}}*)Σ(?!\p{{Case_Ignorable}}*{_CASED})")


def ctal_normalizer() -> normalizers.Normalizer:
    """The original text normalisation: `.`, `,`, `?` and `!` become spaces, runs of spaces collapse to one space,
    then Python-style lowercase. Nothing is stripped (the original joins `re.split(" +", ...)` back with spaces), so
    "Yes." becomes "yes " and keeps its trailing-space token; tabs and newlines are kept, as in the original.
    Lowercasing equals Python's `str.lower`, final sigma included."""
    return normalizers.Sequence(
        [
            normalizers.Replace(Regex(r"[.,?!]"), " "),
            normalizers.Replace(Regex(" +"), " "),
            normalizers.Replace(_FINAL_SIGMA, "ς"),
            normalizers.Lowercase(),
        ]
    )


class CTALTokenizer(RobertaTokenizer):
    r"""
    CTAL's byte-level BPE tokenizer: RoBERTa's pipeline (byte-level pre-tokenisation without prefix space,
    `<s> ... </s>` post-processing, `<mask>` absorbing the space before it) plus the original text normalisation
    (`ctal_normalizer`), which is part of the tokenizer and survives `save_pretrained`/`from_pretrained`.

    Build it from
    - a folder saved with `save_pretrained` (`CTALTokenizer.from_pretrained` or `AutoTokenizer.from_pretrained`);
    - the original vocabulary files: `CTALTokenizer.from_original_files(folder)` or
      `CTALTokenizer(vocab_file="vocab.json", merges_file="merges.txt")`; ids then equal the original pipeline's;
    - your transcripts: `train_ctal_tokenizer(texts)`.

    Args:
        vocab (`dict[str, int]` or `str`, *optional*): token-to-id mapping (or a path to vocab.json).
        merges (`list[tuple[str, str]]` or `str`, *optional*): BPE merges (or a path to merges.txt).
        vocab_file, merges_file (`str`, *optional*): paths to the original `vocab.json` and `merges.txt`, used when
            `vocab`/`merges` are not given. Without any vocabulary the tokenizer holds only the five special tokens
            (the starting point for training).
        mask_token (`str` or `AddedToken`, defaults to `"<mask>"`): a string becomes an `AddedToken` with
            `lstrip=True`, as in RoBERTa, so "a <mask>" gives the same `<mask>` id with the space absorbed.
        add_prefix_space (`bool`, defaults to `False`): the original tokenizer adds no prefix space.
        model_max_length (`int`, defaults to 512): the text positions of `CTALConfig.max_position_embeddings`.
        Other arguments are those of [`RobertaTokenizer`].
    """

    def __init__(
        self,
        vocab: str | dict[str, int] | None = None,
        merges: str | list[tuple[str, str]] | None = None,
        vocab_file: str | None = None,
        merges_file: str | None = None,
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        sep_token: str = "</s>",
        cls_token: str = "<s>",
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        mask_token: str | AddedToken = "<mask>",
        add_prefix_space: bool = False,
        model_max_length: int = MAX_TEXT_TOKENS,
        **kwargs,
    ):
        vocab = vocab_file if vocab is None else vocab
        merges = merges_file if merges is None else merges
        if (vocab is None) != (merges is None):
            raise ValueError(
                "Give both the vocabulary and the merges (`vocab` and `merges`, or `vocab_file` and `merges_file`): "
                "a byte-level BPE needs both."
            )
        if vocab is None:
            vocab, merges = {token: index for index, token in enumerate(SPECIAL_TOKENS)}, []
        if isinstance(mask_token, str):
            mask_token = AddedToken(mask_token, lstrip=True, rstrip=False, normalized=False, special=True)
        super().__init__(
            vocab=vocab,
            merges=merges,
            vocab_file=vocab_file,
            merges_file=merges_file,
            bos_token=bos_token,
            eos_token=eos_token,
            sep_token=sep_token,
            cls_token=cls_token,
            unk_token=unk_token,
            pad_token=pad_token,
            mask_token=mask_token,
            add_prefix_space=add_prefix_space,
            model_max_length=model_max_length,
            **kwargs,
        )
        self._tokenizer.normalizer = ctal_normalizer()

    @classmethod
    def from_original_files(cls, folder: str | os.PathLike, **kwargs) -> CTALTokenizer:
        """The tokenizer of the authors' release from its folder holding `vocab.json` and `merges.txt` (e.g.
        `tokenizer/libri-roberta_train-960/` of the original code). Its ids equal the original pipeline's."""
        folder = Path(folder)
        missing = [name for name in ("vocab.json", "merges.txt") if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} has no {' or '.join(missing)}; point to the original tokenizer folder.")
        tokenizer = cls(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"), **kwargs)
        ids = [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS]
        if ids != list(range(len(SPECIAL_TOKENS))):
            raise ValueError(
                f"{folder} is not a CTAL vocabulary: {dict(zip(SPECIAL_TOKENS, ids, strict=True))} instead of ids "
                f"0-4 for {', '.join(SPECIAL_TOKENS)}."
            )
        return tokenizer


def train_ctal_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 30000,
    min_frequency: int = 2,
    show_progress: bool = False,
    length: int | None = None,
) -> CTALTokenizer:
    """Train a CTAL tokenizer (byte-level BPE with the original normalisation, section 4.1) on transcripts.

    Args:
        texts: an iterable (e.g. a generator) of transcripts; `ctal_hf.iter_transcripts` reads them from files,
            manifests or a `datasets` column. They are normalised (lowercase, `.,?!` removed) before counting, as at
            encoding time.
        vocab_size: size of the vocabulary, special tokens and the 256 byte symbols included (30,000 in the paper).
        min_frequency: merges seen fewer times are not learned.
        show_progress: show the `tokenizers` progress bar.
        length: number of texts, for the progress bar only.

    Returns:
        A `CTALTokenizer` with `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError("`texts` must be an iterable of transcripts, not one string; use `iter_transcripts(path)`.")
    counts = {"texts": 0, "transcripts": 0}

    def transcripts() -> Iterator[str]:
        for text in texts:
            counts["texts"] += 1
            if is_transcript(text):
                counts["transcripts"] += 1
                yield text

    smallest = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < smallest:
        raise ValueError(f"`vocab_size` must be at least {smallest} (5 special tokens + 256 bytes), got {vocab_size}.")
    # Train the pipeline of an empty CTALTokenizer, so training sees the same normalisation as encoding.
    backend = CTALTokenizer().backend_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    backend.train_from_iterator(transcripts(), trainer=trainer, length=length)
    if counts["transcripts"] == 0:
        raise ValueError(
            f"No transcript to train the tokenizer on: {counts['texts']} texts given, none with a word (an empty "
            "input, or only blank lines). Give transcript files with one transcript per line, or manifests / a "
            "dataset with a text column."
        )
    model = json.loads(backend.to_str())["model"]
    if not model["merges"]:
        logger.warning(
            f"The tokenizer learned no merge from {counts['transcripts']} transcripts (no pair of symbols occurs "
            f"min_frequency={min_frequency} times): it will split text into single bytes. Give more text or lower "
            "--min-frequency."
        )
    return CTALTokenizer(vocab=model["vocab"], merges=[tuple(merge) for merge in model["merges"]])


def load_tokenizer(folder: str | os.PathLike) -> CTALTokenizer:
    """A `CTALTokenizer` from a folder holding the original `vocab.json` + `merges.txt`, or a saved CTAL tokenizer
    (or processor) folder."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        return CTALTokenizer.from_pretrained(folder)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return CTALTokenizer.from_original_files(folder)
    raise FileNotFoundError(
        f"{folder} holds neither a saved tokenizer (tokenizer.json) nor the original vocab.json + merges.txt "
        "(folder tokenizer/libri-roberta_train-960 of the original code)."
    )


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ctal-train-tokenizer",
        description=(
            "Train CTAL's byte-level BPE tokenizer (paper section 4.1: 30,000 entries, <s>=0 <pad>=1 </s>=2 <unk>=3 "
            "<mask>=4) with the original normalisation (lowercase; . , ? ! removed) and save it with "
            "save_pretrained, loadable with AutoTokenizer after `import ctal_hf`."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        help="transcript files: .csv/.tsv/.jsonl/.json manifests (the text column, or --column), any other file "
        "plain text with one transcript per line",
    )
    parser.add_argument("--dataset", help="also read a `datasets` dataset: a name or folder for datasets.load_dataset")
    parser.add_argument("--split", default="train", help="split of --dataset (default: train)")
    parser.add_argument(
        "--column", help="transcript column of manifests and --dataset (default: the text column, e.g. text)"
    )
    # Underscored and dashed spellings both work, whichever style a user types from the other commands.
    parser.add_argument(
        "--vocab-size", "--vocab_size", type=int, default=30000, help="vocabulary size (default: 30000)"
    )
    parser.add_argument(
        "--min-frequency", "--min_frequency", type=int, default=2, help="minimum count of a merge (default: 2)"
    )
    parser.add_argument("--output-dir", "--output_dir", required=True, help="folder to save the tokenizer in")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the output folder (and everything in it) if it is not empty"
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    if not args.inputs and args.dataset is None:
        parser.error("give transcript files and/or --dataset")
    # Before any work: training on a large corpus takes minutes.
    inputs = [("a transcript file", path) for path in args.inputs] + [("the working directory", Path.cwd())]
    try:
        check_output_dir(args.output_dir, overwrite=args.overwrite, inputs=inputs)
    except (OutputDirNotEmptyError, NotADirectoryError, ValueError) as error:
        sys.exit(f"ctal-train-tokenizer: {error}")
    return args


def _train_from_arguments(args: argparse.Namespace) -> CTALTokenizer:
    sources = [*args.inputs, *([datasets.load_dataset(args.dataset, split=args.split)] if args.dataset else [])]
    return train_ctal_tokenizer(
        itertools.chain.from_iterable(iter_transcripts(source, args.column) for source in sources),
        args.vocab_size, args.min_frequency, show_progress=args.progress,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """`ctal-train-tokenizer` (and `examples/train_tokenizer.py`): train a CTAL tokenizer on transcripts and save it."""
    args = _parse_arguments(argv)
    try:
        tokenizer = _train_from_arguments(args)
    except (FileNotFoundError, ValueError, TypeError) as error:
        inputs = [*args.inputs, *([f"--dataset {args.dataset}"] if args.dataset else [])]
        sys.exit(f"ctal-train-tokenizer: {error} Inputs: {', '.join(inputs)}; nothing was saved.")
    with staged_output_dir(args.output_dir, overwrite=args.overwrite) as staging:
        tokenizer.save_pretrained(staging)
    print(f"Saved a CTAL tokenizer with {len(tokenizer)} entries to {args.output_dir}")
    return 0


__all__ = ["CTALTokenizer", "ctal_normalizer", "load_tokenizer", "train_ctal_tokenizer"]
