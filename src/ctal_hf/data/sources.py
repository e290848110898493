"""Speech + transcript sources for CTAL: manifests, LibriSpeech folders and `datasets` / Hub datasets.

CTAL pre-trains on LibriSpeech (paper section 4.1) and fine-tunes on IEMOCAP, MOSEI and
LibriSpeech speakers; users bring these corpora in one of three forms, all read by
`load_speech_dataset`:

1. a manifest: CSV / TSV or JSON lines with an audio path and a transcript per row, plus optional
   speaker, label and split columns (`COLUMN_ALIASES` lists the accepted column names); relative
   paths are resolved against the manifest's folder;
2. a LibriSpeech folder in its release layout, `SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac` with one
   `SPEAKER-CHAPTER.trans.txt` (`ID TEXT` lines) per chapter, or an IEMOCAP folder in its release layout
   (`ctal_hf.data.iemocap`: `Session1..5`, emotion labels, sessions and speakers);
3. a `datasets` Dataset / IterableDataset / DatasetDict, a folder saved with `save_to_disk`, or a
   Hub id, with the schema of `openslr/librispeech_asr` (`file`, `audio`, `text`, `speaker_id`,
   `chapter_id`, `id`); `streaming=True` gives an IterableDataset for corpora larger than memory.

Every form comes out with the same normalised columns: `audio` (an absolute file path for 1 and 2;
the `datasets` audio dict `{"path", "bytes"}` or `{"array", "sampling_rate"}` for 3), `text`, and
whichever of `speaker_id`, `label`, `split`, `id`, `chapter_id`, ... the source has.

The `Audio` feature of datasets 5 decodes only through torchcodec, which is unavailable on many
machines, so audio columns are kept undecoded (`Audio(decode=False)`) and `ctal_hf.audio.load_audio`
reads them (see `ctal_hf.data.features` for turning rows into model inputs).

`read_manifest` is the one manifest reader: the loaders here and the tokenizer trainer (`iter_transcripts`)
read manifests through it, with the same column rules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
from datasets.exceptions import DatasetNotFoundError
from datasets.utils.tqdm import tqdm
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers.utils import logging

from ..transcripts import check_transcripts, is_transcript
from .iemocap import is_iemocap_folder, load_iemocap_folder


logger = logging.get_logger(__name__)

# Canonical column -> accepted names, in priority order, matched case-insensitively. The first
# present one is renamed to the canonical name; other aliases stay as they are.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "audio": ("audio", "audio_path", "path", "file", "filename", "wav", "wav_path", "audio_filepath"),
    "text": ("text", "transcription", "transcript", "sentence", "asr"),
    "speaker_id": ("speaker_id", "speaker", "spk", "spk_id"),
    "label": ("label", "emotion", "major_emotion", "sentiment"),
    "split": ("split", "subset", "partition"),
    "session": ("session", "session_id"),
}
REQUIRED_COLUMNS = ("audio", "text")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
# How a fix by skipping is spelled, for the command line first (run_pretraining.py) and for Python callers.
SKIP_HINT = "pass --skip_unreadable (skip_unreadable=True in Python) to skip such files with a warning counting them."
# Extensions that mark a name as a local file, never a Hub dataset id.
LOCAL_SUFFIXES = (*MANIFEST_SUFFIXES, ".txt", ".parquet", ".arrow", ".flac", ".wav", ".mp3", ".zip", ".tar", ".gz")
SOURCE_FORMS = (
    "A dataset source (--dataset) is a manifest file (.csv, .tsv, .jsonl or .json with audio and text columns), a "
    "LibriSpeech folder (SPEAKER/CHAPTER/*.trans.txt), an IEMOCAP folder (Session1..5 in the release layout), a "
    "folder written by Dataset.save_to_disk, or a Hub dataset id "
    "such as openslr/librispeech_asr; examples/run_pretraining.py also takes 'demo'."
)
COLUMN_HINT = "name the transcript column with --column (`column=` in Python)."


# ------------------------------------------------------------------------------------------ columns


def _resolve_columns(
    columns: Iterable[str],
    source: str,
    required: Sequence[str] = REQUIRED_COLUMNS,
    names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Maps each canonical column to the source column it comes from: the one `names` gives, else the first of its
    `COLUMN_ALIASES` present. Errors on a missing `required` column found by alias (an explicitly named column is
    checked by the caller, which can say where it is missing)."""
    names = dict(names or {})
    by_lower = {}
    for column in columns:
        by_lower.setdefault(column.lower(), column)
    mapping = {}
    for canonical, aliases in COLUMN_ALIASES.items():
        found = next((by_lower[alias] for alias in aliases if alias in by_lower), None)
        if found is not None:
            mapping[canonical] = found
    mapping.update(names)
    for canonical in required:
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


def _read_json_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of a JSON-lines file or a JSON array (numbered by position)."""
    content = path.read_text(encoding="utf-8")
    if not content.strip():
        raise ValueError(f"Manifest '{path}' is empty: expected one JSON object per line.")
    if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
        try:
            records = list(enumerate(json.loads(content), start=1))
        except json.JSONDecodeError as error:
            raise ValueError(f"Manifest '{path}' is not a valid JSON array ({error}).") from None
    else:
        records = []
        for line_number, line in enumerate(content.splitlines(), start=1):
            if line.strip():
                try:
                    records.append((line_number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise ValueError(f"Manifest '{path}', line {line_number}: not valid JSON ({error}).") from None
    not_object = next((number for number, record in records if not isinstance(record, dict)), None)
    if not_object is not None:
        raise ValueError(f"Manifest '{path}', line {not_object}: not a JSON object with named fields.")
    return records


def read_manifest(
    path: str | os.PathLike, required: Sequence[str] = REQUIRED_COLUMNS, names: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Reads a manifest (CSV `.csv`, TSV `.tsv`, JSON lines `.jsonl` / `.json`, or a JSON array) with canonical column
    names: the data loaders and the tokenizer trainer both read manifests with it.

    Columns are renamed by `COLUMN_ALIASES` (e.g. `path` -> `audio`, `transcription` -> `text`), or as `names` says
    (canonical -> column, e.g. `{"text": "sentence"}`); the `required` ones must be present (in every record of a JSON
    manifest). Audio, text and id stay strings: only an empty CSV cell is missing, a transcript like "NA" stays text.
    Other columns are kept unchanged. Raises a `ValueError` naming the file (and line) for an empty or malformed file.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ValueError(f"Manifest '{path}' has an unsupported extension; use one of {MANIFEST_SUFFIXES}.")
    if not path.is_file():
        raise FileNotFoundError(f"Manifest not found: '{path}'.")
    source = f"Manifest '{path}'"
    if path.suffix.lower() in (".csv", ".tsv"):
        separator = "," if path.suffix.lower() == ".csv" else "\t"
        try:
            header = pd.read_csv(path, sep=separator, nrows=0).columns
        except pd.errors.EmptyDataError:
            raise ValueError(f"{source} is empty: expected a header row naming its columns.") from None
        mapping = _resolve_columns(header, source, required, names)
        absent = [column for column in (names or {}).values() if column not in header]
        if absent:
            raise ValueError(f"{source} has no {absent[0]!r} column (columns: {list(header)}); {COLUMN_HINT}")
        # Only these: labels, scores and speaker numbers keep the type pandas reads (a float score stays a float).
        as_string = [mapping[name] for name in ("audio", "text") if name in mapping]
        as_string += [column for column in header if column.lower() == "id"]
        frame = pd.read_csv(
            path, sep=separator, dtype={column: str for column in as_string}, keep_default_na=False, na_values=[""]
        )
    else:
        records = _read_json_records(path)
        frame = pd.DataFrame.from_records([record for _, record in records])
        mapping = _resolve_columns(frame.columns, source, required, names)
        for canonical in required:  # records of a JSON manifest can each lack a field
            lacking = next((number for number, record in records if mapping[canonical] not in record), None)
            if lacking is not None:
                raise ValueError(f"Line {lacking} of {path} has no {mapping[canonical]!r} field; {COLUMN_HINT}")
    return frame.rename(columns=_renames(mapping))


def load_manifest(
    path: str | os.PathLike, split: str | None = None, *, skip_unreadable: bool = False
) -> datasets.Dataset:
    """Loads a manifest (CSV `.csv`, TSV `.tsv`, JSON lines `.jsonl` / `.json`) into a Dataset.

    Columns are normalised by `read_manifest` (`audio`, `text`, and optionally `speaker_id`, `label`, `split`);
    other columns are kept unchanged. `audio` becomes an absolute path (relative paths are taken relative to the
    manifest's folder). `split` keeps the rows whose split column equals it. Missing audio files raise a
    FileNotFoundError naming them, or with `skip_unreadable=True` are dropped with a warning giving their count.
    """
    path = Path(path).expanduser()
    frame = read_manifest(path)
    source = f"Manifest '{path}'"
    if frame.empty:
        raise ValueError(f"{source} has no rows (columns found: {list(frame.columns)}).")
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
        source: a manifest file (`.csv`, `.tsv`, `.jsonl`, `.json`), a LibriSpeech folder, an IEMOCAP
            folder (`load_iemocap_folder`, 4 classes), a folder written by `Dataset.save_to_disk`, a `datasets`
            Dataset / IterableDataset / DatasetDict, or a Hub id (e.g. `"openslr/librispeech_asr"`, loaded with
            `datasets.load_dataset`). A name that is no local file or folder and looks like a path (`./x`, `~/x`,
            `a/b/c`, an extension such as `.csv`), or any such name in offline mode (`HF_HUB_OFFLINE` /
            `HF_DATASETS_OFFLINE`), raises a FileNotFoundError at once instead of being looked up on the Hub.
        split: for a manifest or a dataset with a `split` column, the rows of that split; for a
            LibriSpeech folder, a subfolder such as `"train-clean-100"`; for an IEMOCAP folder, sessions
            such as `"Session1,Session2"`; for a DatasetDict or Hub id,
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
        elif is_iemocap_folder(path):
            dataset = load_iemocap_folder(path, split, skip_unreadable=skip_unreadable)
        elif path.is_dir() and next(path.rglob("*.trans.txt"), None) is not None:
            dataset = load_librispeech_folder(path, split, skip_unreadable=skip_unreadable)
        elif path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            dataset = _normalize_datasets_source(datasets.load_from_disk(str(path)), split)
        elif path.is_dir():
            raise ValueError(
                f"Folder '{path}' is neither a LibriSpeech folder (no '*.trans.txt' inside), an IEMOCAP folder (no "
                "'Session*/dialog/EmoEvaluation') nor a dataset saved with save_to_disk. Pass a manifest file, a "
                "LibriSpeech or IEMOCAP folder or a dataset."
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


# ------------------------------------------------------------------------------------- transcripts


def iter_transcripts(source: Any, column: str | None = None) -> Iterator[str]:
    """Yield the non-empty transcripts of `source`, e.g. to train a tokenizer on them:

    - a `datasets.Dataset` or `datasets.IterableDataset`: its `column` (default `"text"`);
    - a manifest (`.csv`, `.tsv`, `.jsonl`, `.json`), read by `read_manifest`: its text column, found by
      `COLUMN_ALIASES` as for the data loaders, or the column named `column`;
    - any other file: plain text, one transcript per line.
    """
    if not isinstance(source, (str, os.PathLike)):
        yield from _iter_dataset_column(source, column or "text")
        return
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"No transcript file at {path}.")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        texts = read_manifest(path, required=("text",), names={"text": column} if column else None)["text"]
        yield from filter(is_transcript, texts.tolist())
        return
    with path.open(encoding="utf-8", newline="") as handle:
        yield from filter(is_transcript, (line.rstrip("\r\n") for line in handle))


def _iter_dataset_column(dataset: Any, column: str) -> Iterator[str]:
    if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        raise TypeError(
            f"Cannot read transcripts from a {type(dataset).__name__}: pass a file path or a datasets.Dataset "
            "(for a DatasetDict, pick a split, e.g. dataset['train'])."
        )
    if dataset.column_names is not None and column not in dataset.column_names:
        raise ValueError(f"The dataset has no {column!r} column (columns: {dataset.column_names}); {COLUMN_HINT}")
    for batch in dataset.select_columns([column]).iter(batch_size=1000):
        yield from filter(is_transcript, batch[column])
