"""Labelled speech + transcript rows for fine-tuning (paper section 3.3): label encoding and batching, for any model
family whose processor takes `processor(audio=..., text=..., sampling_rate=...)`.

`prepare_labels` turns the `label` column of a normalised dataset (from `load_speech_dataset`) into model targets and
decides the problem type from the data, as `config.problem_type` names it:

- class names (strings), integer ids or a `ClassLabel` -> `"single_label_classification"`, target = class id;
- floats (e.g. CMU-MOSEI sentiment scores in [-3, 3]) -> `"regression"`, target = the float;
- lists of class names (or strings split on `label_separator`) -> `"multi_label_classification"`, target = multi-hot
  floats.

`DataCollatorForAudioTextClassification` decodes the audio of a list of such rows with the package's decoder
(`ctal_hf.audio.load_audio`: files, `datasets` audio dicts, arrays), calls the model's processor on the batch and adds
`labels`, so it serves every model family without naming its input tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from transformers.utils import logging

from ..audio import load_audio
from ..metrics import PROBLEM_TYPES
from ..transcripts import check_transcripts


logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class LabelSpec:
    """What the targets are: the problem type and, for classification, the class names in id order."""

    problem_type: str
    names: tuple[str, ...] | None = None

    @property
    def num_labels(self) -> int:
        return 1 if self.names is None else len(self.names)

    @property
    def id2label(self) -> dict[int, str] | None:
        return None if self.names is None else dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.names is None else {name: index for index, name in enumerate(self.names)}


def _is_missing(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, float) and math.isnan(value))


def _name(value: Any) -> str:
    """A class value as a name: integral floats (a CSV column with gaps reads as float) print as integers."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def infer_problem_type(feature: Any, label_separator: str | None = None) -> str:
    """The problem type a `label` column of feature type `feature` holds (see the module docstring)."""
    if isinstance(feature, (datasets.Sequence, datasets.List, datasets.LargeList)):
        return "multi_label_classification"
    if isinstance(feature, datasets.ClassLabel):
        return "single_label_classification"
    if isinstance(feature, datasets.Value):
        if feature.dtype.startswith("float"):
            return "regression"
        if label_separator and feature.dtype in ("string", "large_string"):
            return "multi_label_classification"
        return "single_label_classification"
    raise ValueError(f"Cannot tell the problem type of a label column of type {feature}; pass problem_type explicitly.")


def prepare_labels(
    dataset: datasets.Dataset,
    *,
    problem_type: str | None = None,
    label_names: Sequence[str] | None = None,
    label_separator: str | None = None,
) -> tuple[datasets.Dataset, LabelSpec]:
    """Encodes the `label` column of `dataset` as model targets.

    Rows without a label (empty, None or NaN) are dropped with a warning giving their count.

    Args:
        problem_type: one of `ctal_hf.metrics.PROBLEM_TYPES`; default: inferred from the column's type.
        label_names: the class names in id order, e.g. those of a training split or of a fine-tuned model's
            `config.id2label`; a label outside them is an error. Default: the sorted distinct labels (integers sorted
            numerically), or a `ClassLabel`'s names.
        label_separator: for multi-label data in a CSV/TSV manifest, the separator of the labels in a cell (e.g.
            `";"`); JSON lines and `datasets` sources give lists instead.

    Returns:
        The dataset with `label` replaced by the targets (class id, float, or multi-hot floats), and its `LabelSpec`.
    """
    if "label" not in dataset.column_names:
        raise ValueError(
            f"The data has no label column (columns found: {dataset.column_names}). Name it 'label' (or 'emotion', "
            "'major_emotion', 'sentiment'), or pass the column's name with --label_column."
        )
    feature = dataset.features["label"]
    problem_type = problem_type or infer_problem_type(feature, label_separator)
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"Unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}.")
    labels = dataset["label"]
    keep = [index for index, value in enumerate(labels) if not _is_missing(value)]
    if len(keep) < len(labels):
        logger.warning(f"Dropped {len(labels) - len(keep)} of {len(labels)} rows without a label.")
        dataset, labels = dataset.select(keep), [labels[index] for index in keep]
    if not labels:
        raise ValueError("No row has a label.")

    if problem_type == "regression":
        try:
            targets = [float(value) for value in labels]
        except (TypeError, ValueError):
            raise ValueError(
                f"problem_type='regression' needs numeric labels, got e.g. {labels[0]!r}; pass "
                "--problem_type single_label_classification for class names."
            ) from None
        if label_names is not None:
            raise ValueError("Regression targets have no label names.")
        spec = LabelSpec(problem_type)
        features = datasets.Value("float32")
    else:
        if problem_type == "multi_label_classification":
            sets = [_label_set(value, label_separator) for value in labels]
            seen = {name for names in sets for name in names}
        else:
            if isinstance(feature, datasets.ClassLabel):
                label_names = label_names if label_names is not None else feature.names
                labels = [feature.int2str(value) for value in labels]
            sets = [{_name(value)} for value in labels]
            seen = {_name(value) for value in labels}
        if label_names is None:
            numeric = all(name.lstrip("-").isdigit() for name in seen)
            label_names = sorted(seen, key=int) if numeric else sorted(seen)
        names = tuple(str(name) for name in label_names)
        unknown = sorted(seen - set(names))
        if unknown:
            raise ValueError(f"Labels {unknown[:10]} are not among the label names {list(names)}.")
        index = {name: position for position, name in enumerate(names)}
        if problem_type == "single_label_classification":
            targets = [index[next(iter(values))] for values in sets]
            features = datasets.Value("int64")
        else:
            targets = [[1.0 if name in values else 0.0 for name in names] for values in sets]
            features = datasets.List(datasets.Value("float32"))
        spec = LabelSpec(problem_type, names)
    # Added before the old column goes: a dataset whose only column is `label` would otherwise lose its rows.
    dataset = dataset.add_column("__label", targets, feature=features).remove_columns("label")
    return dataset.rename_column("__label", "label"), spec


def _label_set(value: Any, separator: str | None) -> set[str]:
    if isinstance(value, str):
        if separator is None:
            raise ValueError(
                f"Multi-label rows must be lists of labels, got the string {value!r}; pass label_separator (e.g. ';') "
                "for labels joined in one cell."
            )
        return {part.strip() for part in value.split(separator) if part.strip()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return {_name(item) for item in value}
    raise ValueError(f"Multi-label rows must be lists of labels, got {value!r}.")


@dataclass
class DataCollatorForAudioTextClassification:
    """Batches labelled (or unlabelled) rows `{"audio", "text", "label"?}` into model inputs for any audio + text
    model.

    The audio of each row (a path, a `datasets` audio dict or `{"array", "sampling_rate"}`) is decoded with
    `load_audio` at the processor's rate, then `processor(audio=[waveforms], text=[transcripts],
    sampling_rate=..., padding=True, truncation=True, return_tensors="pt")` makes the inputs (for CTAL:
    `input_ids`, `attention_mask` `(B, L)`, `audio_features` `(B, T, 160)`, `audio_attention_mask` `(B, T)`). The
    targets of `prepare_labels` become `labels`: `(B,)` long class ids, `(B,)` float scores, or `(B, num_labels)`
    float multi-hot rows. Other row keys are ignored.

    Args:
        processor: the model's processor.
        sampling_rate: the rate to decode at; default the processor's feature extractor's `sampling_rate`.
    """

    processor: Any
    sampling_rate: int | None = None

    def __post_init__(self):
        if self.sampling_rate is None:
            feature_extractor = getattr(self.processor, "feature_extractor", None)
            self.sampling_rate = getattr(feature_extractor, "sampling_rate", None)
            if self.sampling_rate is None:
                raise ValueError("The processor has no feature_extractor.sampling_rate; pass sampling_rate explicitly.")

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        check_transcripts([row.get("text") for row in rows], name=lambda index: f"row {rows[index].get('id', index)}")
        waveforms = [load_audio(row["audio"], self.sampling_rate) for row in rows]
        batch = dict(
            self.processor(
                audio=waveforms,
                text=[row["text"] for row in rows],
                sampling_rate=self.sampling_rate,
                padding=True,
                truncation=True,
                return_tensors="pt",
            )
        )
        if "label" in rows[0] and rows[0]["label"] is not None:
            labels = [row["label"] for row in rows]
            integral = all(isinstance(label, (int, np.integer)) for label in labels)
            batch["labels"] = torch.tensor(np.asarray(labels), dtype=torch.long if integral else torch.float32)
        return batch


__all__ = ["DataCollatorForAudioTextClassification", "LabelSpec", "infer_problem_type", "prepare_labels"]
