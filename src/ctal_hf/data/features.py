"""Speech + transcript rows -> CTAL model inputs: the length column and the feature transform (on the fly or cached).

`CTALFeatureTransform` turns batches of rows of `load_speech_dataset` (`audio`, `text`) into model inputs with a
`CTALProcessor` (`input_ids`, `audio_features` and `length` = number of audio frames), on the fly
(`Dataset.with_transform`, `IterableDataset.map`, or `DataCollatorForCTALPretraining(feature_transform=...)`) or once,
cached on disk, with `precompute_features`. `add_length_column` gives the frame count without decoding (from the file
header) for length-grouped batching (`TrainingArguments(train_sampling_strategy="group_by_length",
length_column_name="length")`). Audio is read with `ctal_hf.audio.load_audio`, the decoder `CTALFeatureExtractor` uses
for file paths, so the features of a file are the same in training and at inference (`processor(audio=path)`).

With `Trainer`, on-the-fly features go through the collator, not `with_transform`: Trainer reads the `length` column of
the train dataset for length grouping, and on a dataset with a transform `datasets` runs the transform (decoding the
audio) for every row it reads. Also pass `remove_unused_columns=False`, since the raw columns are not forward arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets.fingerprint import Hasher
from transformers.utils import logging

from ..audio import AudioDecodeError, _audio_name, audio_num_samples, load_audio
from ..transcripts import check_transcripts
from .sources import SKIP_HINT


logger = logging.get_logger(__name__)


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
