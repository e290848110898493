"""Speech + transcript data for CTAL: loading, audio decoding and feature preparation.

CTAL pre-trains on LibriSpeech (paper section 4.1) and fine-tunes on IEMOCAP, MOSEI and
LibriSpeech speakers; users bring these corpora in one of three forms, all read by
`load_speech_dataset`:

1. a manifest: CSV / TSV or JSON lines with an audio path and a transcript per row, plus optional
   speaker, label and split columns (`COLUMN_ALIASES` lists the accepted column names); relative
   paths are resolved against the manifest's folder;
2. a LibriSpeech folder in its release layout, `SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` with one
   `SPEAKER-CHAPTER.trans.txt` (`ID TEXT` lines) per chapter;
3. a `datasets` Dataset / IterableDataset / DatasetDict, a folder saved with `save_to_disk`, or a
   Hub id, with the schema of `openslr/librispeech_asr` (`file`, `audio`, `text`, `speaker_id`,
   `chapter_id`, `id`); `streaming=True` gives an IterableDataset for corpora larger than memory.

Every form comes out with the same normalised columns: `audio` (an absolute file path for 1 and 2;
the `datasets` audio dict `{"path", "bytes"}` or `{"array", "sampling_rate"}` for 3), `text`, and
whichever of `speaker_id`, `label`, `split`, `id`, `chapter_id`, ... the source has.

The `Audio` feature of datasets 5 decodes only through torchcodec, which is unavailable on many
machines, so audio columns are kept undecoded (`Audio(decode=False)`) and `load_audio` reads
them: the decoder `CTALFeatureExtractor` uses for file paths, so the features of a file are the
same through `CTALFeatureTransform` (training) and `processor(audio=path)` (inference). It returns
float64, so float and double-precision files keep their precision.

`CTALFeatureTransform` turns batches of such rows into model inputs with a `CTALProcessor`
(`input_ids`, `audio_features` and `length` = number of audio frames), on the fly
(`Dataset.with_transform`, `IterableDataset.map`, or `DataCollatorForCTALPretraining(
feature_transform=...)`) or once, cached on disk, with `precompute_features`. `add_length_column`
gives the frame count without decoding (from the file header) for length-grouped batching
(`TrainingArguments(train_sampling_strategy="group_by_length", length_column_name="length")`).

With `Trainer`, on-the-fly features go through the collator, not `with_transform`: Trainer reads the
`length` column of the train dataset for length grouping, and on a dataset with a transform
`datasets` runs the transform (decoding the audio) for every row it reads. Also pass
`remove_unused_columns=False`, since the raw columns are not forward arguments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
from datasets.exceptions import DatasetNotFoundError
from datasets.fingerprint import Hasher
from huggingface_hub.utils import HFValidationError, validate_repo_id
from datasets.utils.tqdm import tqdm
from transformers.utils import logging

from ..audio import AudioDecodeError, _audio_name, audio_num_samples, load_audio
from ..models.ctal.tokenization_ctal import check_transcripts


logger = logging.get_logger(__name__)

# Canonical column -> accepted names, in priority order, matched case-insensitively. The first
# present one is renamed to the canonical name; other aliases stay as they are.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "audio": ("audio", "audio_path", "path", "file", "filename", "wav", "wav_path", "audio_filepath"),
    "text": ("text", "transcription", "transcript", "sentence", "asr"),
    "speaker_id": ("speaker_id", "speaker", "spk", "spk_id"),
    "label": ("label", "emotion", "major_emotion", "sentiment"),
    "split": ("split", "subset", "partition"),
}
REQUIRED_COLUMNS = ("audio", "text")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
# How a fix by skipping is spelled, for the command line first (run_pretraining.py) and for Python callers.
SKIP_HINT = "pass --skip_unreadable (skip_unreadable=True in Python) to skip such files with a warning counting them."
# Extensions that mark a name as a local file, never a Hub dataset id.
LOCAL_SUFFIXES = (*MANIFEST_SUFFIXES, ".txt", ".parquet", ".arrow", ".flac", ".wav", ".mp3", ".zip", ".tar", ".gz")
SOURCE_FORMS = (
    "A dataset source (--dataset) is a manifest file (.csv, .tsv, .jsonl or .json with audio and text columns), a "
    "LibriSpeech folder (SPEAKER/CHAPTER/*.trans.txt), a folder written by Dataset.save_to_disk, or a Hub dataset id "
    "such as openslr/librispeech_asr; examples/run_pretraining.py also takes 'demo'."
)


# ------------------------------------------------------------------------------------------ columns


def _resolve_columns(columns: Iterable[str], source: str) -> dict[str, str]:
    """Maps each canonical column to the source column it comes from; errors on missing audio/text."""
    by_lower = {}
    for column in columns:
        by_lower.setdefault(column.lower(), column)
    mapping = {}
    for canonical, aliases in COLUMN_ALIASES.items():
        found = next((by_lower[alias] for alias in aliases if alias in by_lower), None)
        if found is not None:
            mapping[canonical] = found
    for canonical in REQUIRED_COLUMNS:
        if canonical not in mapping:
            raise ValueError(
                f"{source} has no {canonical} column: looked for {list(COLUMN_ALIASES[canonical])}, found columns "
                f"{list(columns)}. Rename the column holding the {canonical} to '{canonical}'."
            )
    return mapping


def _renames(mapping: Mapping[str, str]) -> dict[str, str]:
    return {source: canonical for canonical, source in mapping.items() if source != canonical}


def _keep_split(values: Sequence[Any], split: str) -> list[bool]:
    return [str(value) == split for value in values]


def _drop_missing_files(rows: dict[str, list], skip_unreadable: bool, source: str) -> dict[str, list]:
    """Checks that every `rows["audio"]` path exists; errors, or drops and counts them when asked."""
    missing = [index for index, path in enumerate(rows["audio"]) if not os.path.isfile(path)]
    if not missing:
        return rows
    examples = ", ".join(f"'{rows['audio'][index]}'" for index in missing[:3])
    if not skip_unreadable:
        raise FileNotFoundError(
            f"{source}: {len(missing)} of {len(rows['audio'])} audio files do not exist, e.g. {examples}. Fix the "
            f"paths (relative manifest paths are resolved against the manifest's folder) or {SKIP_HINT}"
        )
    logger.warning(f"{source}: skipped {len(missing)} of {len(rows['audio'])} rows whose audio file is missing, e.g. {examples}.")
    dropped = set(missing)
    return {column: [value for index, value in enumerate(values) if index not in dropped] for column, values in rows.items()}


# -------------------------------------------------------------------------------------- manifests


def _read_manifest_frame(path: Path) -> pd.DataFrame:
    """Reads a CSV / TSV / JSON-lines (or JSON array) manifest; audio, text and id stay strings."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        separator = "," if suffix == ".csv" else "\t"
        try:
            header = pd.read_csv(path, sep=separator, nrows=0).columns
        except pd.errors.EmptyDataError:
            raise ValueError(f"Manifest '{path}' is empty: expected a header row naming at least an audio and a text column.") from None
        mapping = _resolve_columns(header, f"Manifest '{path}'")
        as_string = [mapping["audio"], mapping["text"], *(column for column in header if column.lower() == "id")]
        # Only empty cells are missing values: a transcript like "NA" or "null" stays text.
        return pd.read_csv(path, sep=separator, dtype={column: str for column in as_string}, keep_default_na=False, na_values=[""])
    content = path.read_text(encoding="utf-8")
    if not content.strip():
        raise ValueError(f"Manifest '{path}' is empty: expected one JSON object per line with an audio and a text field.")
    if suffix == ".json" and content.lstrip().startswith("["):
        records = json.loads(content)
    else:
        records = []
        for line_number, line in enumerate(content.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"Manifest '{path}', line {line_number}: not valid JSON ({error}).") from None
    not_objects = [index for index, record in enumerate(records) if not isinstance(record, dict)]
    if not_objects:
        raise ValueError(f"Manifest '{path}': record {not_objects[0] + 1} is not a JSON object with named fields.")
    return pd.DataFrame.from_records(records)


def load_manifest(
    path: str | os.PathLike, split: str | None = None, *, skip_unreadable: bool = False
) -> datasets.Dataset:
    """Loads a manifest (CSV `.csv`, TSV `.tsv`, JSON lines `.jsonl` / `.json`) into a Dataset.

    Columns are normalised with `COLUMN_ALIASES` (`audio`, `text`, and optionally `speaker_id`,
    `label`, `split`); other columns are kept unchanged. `audio` becomes an absolute path (relative
    paths are taken relative to the manifest's folder). `split` keeps the rows whose split column
    equals it. Missing audio files raise a FileNotFoundError naming them, or with
    `skip_unreadable=True` are dropped with a warning giving their count.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ValueError(f"Manifest '{path}' has an unsupported extension; use one of {MANIFEST_SUFFIXES}.")
    if not path.is_file():
        raise FileNotFoundError(f"Manifest not found: '{path}'.")
    frame = _read_manifest_frame(path)
    source = f"Manifest '{path}'"
    if frame.empty:
        raise ValueError(f"{source} has no rows (columns found: {list(frame.columns)}).")
    mapping = _resolve_columns(frame.columns, source)
    frame = frame.rename(columns=_renames(mapping))
    empty = frame.index[frame["audio"].isna() | (frame["audio"].astype(str).str.strip() == "")].tolist()
    if empty:
        raise ValueError(f"{source}: rows {[index + 1 for index in empty[:10]]} have an empty audio; fill or remove them.")
    check_transcripts(frame["text"].tolist(), lambda index: f"row {index + 1}", f"{source}: ")
    if split is not None:
        if "split" not in frame.columns:
            raise ValueError(
                f"{source} has no split column (looked for {list(COLUMN_ALIASES['split'])}; columns found: "
                f"{list(frame.columns)}), so split={split!r} cannot be selected."
            )
        frame = frame[_keep_split(frame["split"].tolist(), split)]
        if frame.empty:
            raise ValueError(f"{source} has no row with split {split!r}.")
    folder = path.resolve().parent
    frame["audio"] = [os.path.abspath(os.path.join(folder, os.path.expanduser(audio))) for audio in frame["audio"]]
    columns = ["audio", "text", *(column for column in frame.columns if column not in REQUIRED_COLUMNS)]
    rows = {column: frame[column].tolist() for column in columns}
    rows = _drop_missing_files(rows, skip_unreadable, source)
    return datasets.Dataset.from_dict(rows)


# ------------------------------------------------------------------------------------- LibriSpeech


def load_librispeech_folder(
    root: str | os.PathLike, split: str | None = None, *, skip_unreadable: bool = False
) -> datasets.Dataset:
    """Loads LibriSpeech in its release layout into a Dataset.

    `root` holds `SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` files with a `SPEAKER-CHAPTER.trans.txt`
    (lines `SPEAKER-CHAPTER-UTT TRANSCRIPT`) in each chapter folder, at any depth. `split` picks a
    subfolder, e.g. `"train-clean-100"` (the Hub spelling `"train.clean.100"` also works), or several
    separated by commas (`"train-clean-100,train-clean-360,train-other-500"` = LibriSpeech 960 h). Columns:
    `id`, `audio` (absolute path), `text` (as in the transcript, upper case), `speaker_id`,
    `chapter_id`, sorted by transcript file. Missing audio as in `load_manifest`.
    """
    if split is not None and "," in split:
        parts = [part.strip() for part in split.split(",") if part.strip()]
        return datasets.concatenate_datasets(
            [load_librispeech_folder(root, part, skip_unreadable=skip_unreadable) for part in parts]
        )
    root = Path(root).expanduser().resolve()
    folder = root
    if split is not None:
        candidates = [root / split, root / split.replace(".", "-")]
        folder = next((candidate for candidate in candidates if candidate.is_dir()), None)
        if folder is None:
            subfolders = sorted(child.name for child in root.iterdir() if child.is_dir())
            raise ValueError(f"LibriSpeech folder '{root}' has no split {split!r}; its subfolders are {subfolders}.")
    transcript_files = sorted(folder.rglob("*.trans.txt"))
    if not transcript_files:
        raise ValueError(
            f"No '*.trans.txt' transcript file under '{folder}': not a LibriSpeech folder (expected "
            "SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt next to SPEAKER-CHAPTER-UTT.flac files)."
        )
    rows: dict[str, list] = {"id": [], "audio": [], "text": [], "speaker_id": [], "chapter_id": []}
    for transcript_file in tqdm(transcript_files, desc="Reading LibriSpeech transcripts"):
        for line_number, line in enumerate(transcript_file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utterance_id, _, text = line.strip().partition(" ")
            parts = utterance_id.split("-")
            if len(parts) != 3 or not all(part.isdigit() for part in parts):
                raise ValueError(
                    f"{transcript_file}, line {line_number}: expected 'SPEAKER-CHAPTER-UTTERANCE TRANSCRIPT', got {line!r}."
                )
            check_transcripts([text], lambda _: f"line {line_number} ({utterance_id})", f"{transcript_file}: ")
            rows["id"].append(utterance_id)
            rows["audio"].append(str(transcript_file.parent / f"{utterance_id}.flac"))
            rows["text"].append(text.strip())
            rows["speaker_id"].append(int(parts[0]))
            rows["chapter_id"].append(int(parts[1]))
    rows = _drop_missing_files(rows, skip_unreadable, f"LibriSpeech folder '{folder}'")
    return datasets.Dataset.from_dict(rows)


# -------------------------------------------------------------------------------- datasets sources


def _normalize_datasets_source(
    dataset: datasets.Dataset | datasets.IterableDataset | datasets.DatasetDict | datasets.IterableDatasetDict,
    split: str | None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Picks the split, renames aliased columns and makes the audio column undecoded."""
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split is None or split not in dataset:
            raise ValueError(f"The dataset has splits {list(dataset)}; pass one of them as split= (got {split!r}).")
        dataset, split = dataset[split], None
    columns = dataset.column_names
    if columns is None:  # a stream whose features are unknown until read
        columns = list(next(iter(dataset)))
    renames = _renames(_resolve_columns(columns, "The dataset"))
    if renames:
        dataset = dataset.rename_columns(renames)
        columns = [renames.get(column, column) for column in columns]
    audio_feature = (dataset.features or {}).get("audio")
    if isinstance(audio_feature, datasets.Audio) and audio_feature.decode:
        dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
    if split is not None:
        if "split" not in columns:
            raise ValueError(
                f"The dataset has no split column (columns found: {list(columns)}), so split={split!r} cannot be selected."
            )
        dataset = dataset.filter(_keep_split, input_columns="split", batched=True, fn_kwargs={"split": split})
    if isinstance(dataset, datasets.Dataset):  # a stream is checked batch by batch, by CTALFeatureTransform
        check_transcripts(list(dataset["text"]), lambda index: f"row {index}", "The dataset: ")
    return dataset


def _why_not_on_the_hub(name: str) -> str | None:
    """Why `name`, which is no local file or folder, is not looked up on the Hub either; None if it may be a Hub id.
    Asking the Hub without a network takes datasets about 35 s of retries, for a name that is usually a typo."""
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").upper() in datasets.config.ENV_VARS_TRUE_VALUES:
            return f"{variable} is set, so the Hub is not asked"
    if datasets.config.HF_HUB_OFFLINE:
        return "datasets is in offline mode, so the Hub is not asked"
    suffix = Path(name).suffix.lower()
    if suffix in LOCAL_SUFFIXES:
        return f"its extension {suffix} names a file, not a Hub dataset"
    try:
        validate_repo_id(name)
    except HFValidationError:
        return "it is a path, not a Hub dataset id (NAME or OWNER/NAME)"
    owner = name.partition("/")[0]
    if "/" in name and Path(owner).is_dir():
        return f"'{owner}' is a local folder"
    return None


def load_speech_dataset(
    source: str | os.PathLike | datasets.Dataset | datasets.IterableDataset | datasets.DatasetDict | datasets.IterableDatasetDict,
    split: str | None = None,
    streaming: bool = False,
    *,
    skip_unreadable: bool = False,
    config_name: str | None = None,
    **load_dataset_kwargs,
) -> datasets.Dataset | datasets.IterableDataset:
    """Loads speech + transcripts from any supported source, with normalised columns.

    Args:
        source: a manifest file (`.csv`, `.tsv`, `.jsonl`, `.json`), a LibriSpeech folder, a folder
            written by `Dataset.save_to_disk`, a `datasets` Dataset / IterableDataset / DatasetDict, or
            a Hub id (e.g. `"openslr/librispeech_asr"`, loaded with `datasets.load_dataset`). A name that is
            no local file or folder and looks like a path (`./x`, `~/x`, `a/b/c`, an extension such as `.csv`),
            or any such name in offline mode (`HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE`), raises a
            FileNotFoundError at once instead of being looked up on the Hub.
        split: for a manifest or a dataset with a `split` column, the rows of that split; for a
            LibriSpeech folder, a subfolder such as `"train-clean-100"`; for a DatasetDict or Hub id,
            the split name (e.g. `"train.clean.100"`).
        streaming: return an IterableDataset (rows are read lazily); for a Hub id the data is
            streamed, not downloaded.
        skip_unreadable: drop rows whose audio file is missing (with a warning giving the count)
            instead of raising. Checked here for manifests and LibriSpeech folders; corrupt files
            are found by `add_length_column` or `CTALFeatureTransform`, which take the same flag.
        config_name: dataset configuration for a Hub id (e.g. `"clean"`).
        **load_dataset_kwargs: passed to `datasets.load_dataset` for a Hub id (`revision`, `cache_dir`, ...).

    Returns:
        A Dataset (or IterableDataset when streaming) with columns `audio`, `text` and the
        optional ones the source has (see the module docstring).
    """
    if isinstance(source, (datasets.Dataset, datasets.IterableDataset, datasets.DatasetDict, datasets.IterableDatasetDict)):
        dataset = _normalize_datasets_source(source, split)
    else:
        path = Path(source).expanduser()
        if path.is_file() or (path.suffix.lower() in MANIFEST_SUFFIXES and path.exists()):
            dataset = load_manifest(path, split, skip_unreadable=skip_unreadable)
        elif path.is_dir() and next(path.rglob("*.trans.txt"), None) is not None:
            dataset = load_librispeech_folder(path, split, skip_unreadable=skip_unreadable)
        elif path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            dataset = _normalize_datasets_source(datasets.load_from_disk(str(path)), split)
        elif path.is_dir():
            raise ValueError(
                f"Folder '{path}' is neither a LibriSpeech folder (no '*.trans.txt' inside) nor a dataset saved with "
                "save_to_disk. Pass a manifest file, a LibriSpeech folder or a dataset."
            )
        else:
            reason = _why_not_on_the_hub(str(source))
            if reason is not None:
                raise FileNotFoundError(f"No such file or folder: '{path}' ({reason}). {SOURCE_FORMS}")
            try:
                hub = datasets.load_dataset(
                    str(source), config_name, split=split, streaming=streaming, **load_dataset_kwargs
                )
            except DatasetNotFoundError as error:
                raise FileNotFoundError(
                    f"'{source}' is neither a local file or folder nor a dataset on the Hub ({error}). {SOURCE_FORMS}"
                ) from None
            dataset = _normalize_datasets_source(hub, None)
    if streaming and isinstance(dataset, datasets.Dataset):
        dataset = dataset.to_iterable_dataset()
    return dataset


# ------------------------------------------------------------------------------------------ lengths


def _feature_extractor(processor_or_feature_extractor: Any) -> Any:
    return getattr(processor_or_feature_extractor, "feature_extractor", processor_or_feature_extractor)


def _read_usable_audio(
    audio: Any, feature_extractor: Any, *, decode: bool, skip_unreadable: bool
) -> np.ndarray | int | None:
    """The waveform (`decode=True`) or the number of samples (`decode=False`, from the header) of `audio` at the
    feature extractor's rate. Audio that is missing, undecodable, shorter than one analysis window or (decoded) holds
    NaN or infinite samples raises an error naming it, or with `skip_unreadable` gives `None` with a warning."""
    rate = feature_extractor.sampling_rate
    try:
        if decode:
            result = load_audio(audio, rate)
            num_samples = len(result)
            finite = np.isfinite(result)
            if not finite.all():
                raise AudioDecodeError(
                    f"Audio '{_audio_name(audio)}' contains NaN or infinite samples (first at sample "
                    f"{int(np.argmin(finite))})."
                )
        else:
            result = num_samples = audio_num_samples(audio, rate)
        if num_samples < feature_extractor.min_num_samples:
            raise AudioDecodeError(
                f"Audio '{_audio_name(audio)}' is unusable: {num_samples} samples, shorter than one analysis window "
                f"({feature_extractor.min_num_samples} samples at {rate} Hz)."
            )
    except (FileNotFoundError, AudioDecodeError) as error:
        if not skip_unreadable:
            raise type(error)(f"{error} Fix or remove the file, or {SKIP_HINT}") from None
        logger.warning(f"Skipping unreadable audio: {error}")
        return None
    return result


def add_length_column(
    dataset: datasets.Dataset | datasets.IterableDataset,
    processor: Any,
    *,
    max_audio_frames: int | None = None,
    drop_longer: bool = False,
    skip_unreadable: bool = False,
    num_proc: int | None = None,
    column_name: str = "length",
) -> datasets.Dataset | datasets.IterableDataset:
    """Adds the number of audio frames per row, read from file headers without decoding.

    The count is the one the processor's feature extractor produces (`num_frames`, capped at the
    truncation length `max_audio_frames`, by default its `max_frames`), for `Trainer`'s length-grouped sampling
    (`train_sampling_strategy="group_by_length"`, `length_column_name=column_name`). Every file is
    opened, so this is also the cheap way to find unreadable audio before training: such rows raise
    an error naming the file, or with `skip_unreadable=True` are dropped (with a warning per file and,
    for a Dataset, one giving the count).

    Args:
        dataset: a normalised dataset (from `load_speech_dataset`).
        processor: a `CTALProcessor` or its feature extractor (gives the sampling rate and frame count).
        max_audio_frames: the truncation length (default: the feature extractor's `max_frames`, 3000).
        drop_longer: drop the rows with more than `max_audio_frames` frames instead of keeping them to be
            truncated. The authors' pre-training code drops utterances over 3000 frames (37.5 s) and only
            fine-tuning truncates them. For a Dataset a warning gives the number dropped; for a stream
            each dropped row is logged at info level.
        num_proc: processes for `Dataset.map` (a progress bar shows the work).
    """
    feature_extractor = _feature_extractor(processor)
    max_audio_frames = feature_extractor.max_frames if max_audio_frames is None else max_audio_frames
    # Negative lengths mark the rows to drop, by reason, so one pass over the files finds both.
    unreadable, too_long = -1, -2

    def frame_counts(audios: list) -> dict[str, list[int]]:
        counts = []
        for audio in audios:
            num_samples = _read_usable_audio(audio, feature_extractor, decode=False, skip_unreadable=skip_unreadable)
            if num_samples is None:
                counts.append(unreadable)
                continue
            num_frames = feature_extractor.num_frames(num_samples)
            if drop_longer and num_frames > max_audio_frames:
                logger.info(f"Dropping audio '{_audio_name(audio)}': {num_frames} frames > {max_audio_frames}.")
                counts.append(too_long)
            else:
                counts.append(min(num_frames, max_audio_frames))
        return {column_name: counts}

    def kept(lengths: list[int]) -> list[bool]:
        return [length >= 0 for length in lengths]

    filters = skip_unreadable or drop_longer
    if isinstance(dataset, datasets.IterableDataset):
        dataset = dataset.map(frame_counts, input_columns="audio", batched=True)
        return dataset.filter(kept, input_columns=column_name, batched=True) if filters else dataset
    dataset = dataset.map(frame_counts, input_columns="audio", batched=True, num_proc=num_proc, desc="Reading audio lengths")
    if filters:
        lengths = dataset.with_format("numpy")[column_name][:]
        total, dropped = len(lengths), {reason: int((lengths == reason).sum()) for reason in (unreadable, too_long)}
        if dropped[unreadable]:
            logger.warning(f"Skipped {dropped[unreadable]} of {total} rows with unreadable audio.")
        if dropped[too_long]:
            seconds = max_audio_frames * feature_extractor.hop_length / feature_extractor.sampling_rate
            logger.warning(
                f"Dropped {dropped[too_long]} of {total} rows with more than max_audio_frames={max_audio_frames} "
                f"frames ({seconds:g} s)."
            )
        if dropped[unreadable] or dropped[too_long]:
            dataset = dataset.filter(kept, input_columns=column_name, batched=True, num_proc=num_proc)
    return dataset


# ----------------------------------------------------------------------------------------- features


class CTALFeatureTransform:
    """Batch transform: rows with `audio` and `text` -> CTAL model inputs, one unpadded entry per row.

    Output columns: `input_ids` (token ids with `<s>`/`</s>`), `audio_features` `(T, D)` float32
    (D = 160), `length` (= T, for length-grouped batching), plus `keep_columns` copied unchanged
    (e.g. `("label",)` for fine-tuning). Padding and masking are the collator's job
    (`DataCollatorForCTALPretraining`).

    Use it as a batched function: `dataset.with_transform(transform)`,
    `iterable_dataset.map(transform, batched=True, remove_columns=[...])`,
    `DataCollatorForCTALPretraining(feature_transform=transform)`, or `precompute_features`.
    Audio is decoded with `load_audio`; a missing, undecodable or too short file raises an error
    naming it, or with `skip_unreadable=True` its row is dropped from the batch with a warning (a
    batch can then come out smaller; `Dataset.map(batched=True)` and the collator handle that, but
    indexing one row of a `with_transform` dataset cannot, so remove such files beforehand with
    `add_length_column(..., skip_unreadable=True)` when using `with_transform`).

    Args:
        processor: a `CTALProcessor`: `processor(audio=[1-D float arrays], text=[str], sampling_rate=...)`
            returning padded `input_ids`, `attention_mask`, `audio_features`, `audio_attention_mask`.
        max_text_length, max_audio_frames: truncation limits passed to the processor (its defaults,
            512 tokens and 3000 frames, match the model's position tables); pass
            `config.max_position_embeddings` and `config.max_audio_frames` for other model sizes.
    """

    def __init__(
        self,
        processor: Any,
        *,
        max_text_length: int | None = None,
        max_audio_frames: int | None = None,
        skip_unreadable: bool = False,
        keep_columns: Sequence[str] = (),
    ):
        self.processor = processor
        self.max_text_length = max_text_length
        self.max_audio_frames = max_audio_frames
        self.skip_unreadable = skip_unreadable
        self.keep_columns = tuple(keep_columns)

    @property
    def output_columns(self) -> tuple[str, ...]:
        return ("input_ids", "audio_features", "length", *self.keep_columns)

    def __call__(self, batch: Mapping[str, list]) -> dict[str, list]:
        missing = [column for column in ("audio", "text", *self.keep_columns) if column not in batch]
        if missing:
            raise KeyError(
                f"CTALFeatureTransform needs columns {missing}, the batch has {sorted(batch)}; load the data with "
                "load_speech_dataset, which names them."
            )
        check_transcripts(batch["text"], lambda row: f"the row with audio '{_audio_name(batch['audio'][row])}'")
        feature_extractor = _feature_extractor(self.processor)
        rows, waveforms = [], []
        for row, audio in enumerate(batch["audio"]):
            waveform = _read_usable_audio(audio, feature_extractor, decode=True, skip_unreadable=self.skip_unreadable)
            if waveform is not None:
                rows.append(row)
                waveforms.append(waveform)
        output: dict[str, list] = {column: [] for column in self.output_columns}
        if not rows:
            return output
        encoded = self.processor(
            audio=waveforms,
            text=[batch["text"][row] for row in rows],
            sampling_rate=feature_extractor.sampling_rate,
            max_length=self.max_text_length,
            max_audio_frames=self.max_audio_frames,
            return_tensors="np",
        )
        for index, row in enumerate(rows):
            token_mask = np.asarray(encoded["attention_mask"][index], dtype=bool)
            frame_mask = np.asarray(encoded["audio_attention_mask"][index], dtype=bool)
            features = np.asarray(encoded["audio_features"][index], dtype=np.float32)[frame_mask]
            output["input_ids"].append(np.asarray(encoded["input_ids"][index])[token_mask].tolist())
            output["audio_features"].append(features)
            output["length"].append(len(features))
            for column in self.keep_columns:
                output[column].append(batch[column][row])
        return output


def precompute_features(
    dataset: datasets.Dataset,
    transform: CTALFeatureTransform,
    *,
    batch_size: int = 16,
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """Computes the features of every row once, stored in a datasets cache file and reused.

    The cache file is named by a fingerprint of the dataset and of the transform (processor
    settings, vocabulary, options), so any change recomputes it. It lives in `cache_dir`, by default
    `<HF_DATASETS_CACHE>/ctal_hf_features`. Rows with unreadable audio are dropped when the transform
    has `skip_unreadable=True` (with a warning giving the count), else they raise.

    Returns:
        A Dataset with the transform's output columns, formatted as numpy arrays.
    """
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"precompute_features needs a datasets.Dataset, got {type(dataset).__name__}; transform a stream on the "
            "fly instead: iterable_dataset.map(transform, batched=True, remove_columns=[...])."
        )
    missing = [column for column in transform.keep_columns if column not in dataset.column_names]
    if missing:
        raise ValueError(f"keep_columns {missing} are not columns of the dataset ({dataset.column_names}).")
    fingerprint = Hasher.hash([dataset._fingerprint, transform])
    cache_dir = Path(cache_dir or Path(datasets.config.HF_DATASETS_CACHE) / "ctal_hf_features").expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    feature_size = _feature_extractor(transform.processor).feature_size
    features = datasets.Features({
        "input_ids": datasets.List(datasets.Value("int64")),
        "audio_features": datasets.Array2D(shape=(None, feature_size), dtype="float32"),
        "length": datasets.Value("int64"),
        **{column: dataset.features[column] for column in transform.keep_columns},
    })
    featurised = dataset.map(
        transform,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        features=features,
        cache_file_name=str(cache_dir / f"{fingerprint}.arrow"),
        new_fingerprint=fingerprint,
        desc="Computing CTAL features",
    )
    if len(featurised) < len(dataset):
        logger.warning(f"Skipped {len(dataset) - len(featurised)} of {len(dataset)} rows with unreadable audio.")
    return featurised.with_format("numpy")
