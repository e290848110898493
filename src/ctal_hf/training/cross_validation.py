"""Evaluation protocol for utterance-level tasks: leave-one-group-out folds, speaker-disjoint validation, stratified
training fractions and fold summaries (paper section 4.2: IEMOCAP leave-one-session-out; Figures 2-3).

The authors' fine-tuning code chose each fold's checkpoint on the test session; here every fold's validation data
comes from its training groups, by default as whole held-out speakers, so checkpoint selection sees neither the test
session nor the training speakers. All functions work on row indices of one dataset and are deterministic in `seed`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, LeaveOneGroupOut, train_test_split


VALIDATION_SPLITS = ("speaker", "group", "random")


def natural_key(name: str) -> list:
    """Sort key that orders numbers inside names by value: Session2 before Session10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(name))]


@dataclass(frozen=True)
class Fold:
    """Row indices of one fold. `name` is the test group (e.g. `"Session1"`); `validation` is None when checkpoints are
    selected on the test rows (the authors' protocol)."""

    name: str
    train: np.ndarray
    validation: np.ndarray | None
    test: np.ndarray


def _draw_validation_groups(
    indices: np.ndarray, groups: np.ndarray, fraction: float, seed: int, what: str
) -> np.ndarray:
    """Whole groups (speakers) for validation: `ceil(fraction * number of groups)` of them, drawn with `seed`."""
    distinct = np.unique(groups[indices])
    if len(distinct) < 2:
        raise ValueError(
            f"Cannot hold out whole {what}s for validation: the training data has {len(distinct)} {what}(s). Pass "
            "--validation_split_by random (validation then shares speakers with training) or give an evaluation split."
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, held_out = next(splitter.split(indices, groups=groups[indices]))
    return np.sort(indices[held_out])


def split_validation(
    indices: Sequence[int],
    *,
    by: str = "speaker",
    fraction: float = 0.1,
    speakers: Sequence | None = None,
    groups: Sequence | None = None,
    labels: Sequence | None = None,
    test_group: str | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Splits training rows into (train, validation).

    Args:
        indices: the candidate training rows.
        by: `"speaker"`: whole speakers, `ceil(fraction * number of training speakers)` of them drawn with `seed`
            (speaker-disjoint: IEMOCAP's 8 training speakers of a fold give one validation speaker);
            `"group"`: one whole training group, the first after `test_group` in sorted cyclic order (Session1 ->
            Session2, ..., Session5 -> Session1; without a test group the last one);
            `"random"`: a share `fraction` of the rows, stratified by `labels` when given (validation and training
            then share speakers).
        speakers, groups, labels: per-row values over the whole dataset (indexed by `indices`).

    Returns:
        Sorted index arrays (train, validation).
    """
    indices = np.asarray(indices)
    if by not in VALIDATION_SPLITS:
        raise ValueError(f"validation split {by!r} is not one of {VALIDATION_SPLITS}.")
    if not 0 < fraction < 1:
        raise ValueError(f"The validation fraction must be in (0, 1), got {fraction}.")
    if by == "speaker":
        if speakers is None:
            raise ValueError(
                "A speaker-disjoint validation split needs a speaker column (speaker_id / speaker / spk); add one, or "
                "pass --validation_split_by group or random."
            )
        validation = _draw_validation_groups(indices, np.asarray(speakers, dtype=str), fraction, seed, "speaker")
    elif by == "group":
        if groups is None:
            raise ValueError("--validation_split_by group needs a group column (--group_column).")
        groups = np.asarray(groups, dtype=str)
        training_groups = sorted(set(groups[indices]), key=natural_key)
        if len(training_groups) < 2:
            raise ValueError(f"Cannot hold out a whole group for validation: training has {training_groups} only.")
        if test_group is None:
            held_out = training_groups[-1]
        else:
            cyclic = sorted([*training_groups, str(test_group)], key=natural_key)
            after = cyclic.index(str(test_group)) + 1
            held_out = (cyclic[after:] + cyclic[:after])[0]
        validation = indices[groups[indices] == held_out]
    else:
        stratify = None if labels is None else np.asarray(labels)[indices]
        try:
            _, validation = train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)
        except ValueError as error:  # too few rows of some class to stratify
            raise ValueError(f"Cannot draw a stratified validation share of {fraction}: {error}") from None
    validation = np.sort(validation)
    return np.setdiff1d(indices, validation), validation


def leave_one_group_out(
    groups: Sequence,
    *,
    select_on_test: bool = False,
    validation_split_by: str = "speaker",
    validation_fraction: float = 0.1,
    speakers: Sequence | None = None,
    labels: Sequence | None = None,
    seed: int = 0,
) -> list[Fold]:
    """One fold per distinct group (IEMOCAP: per session), in sorted group order: the group is the test set, the
    other groups train, and validation comes out of the training groups (`split_validation`). With
    `select_on_test=True` there is no validation split (the authors' protocol selects on the test group)."""
    groups = np.asarray(groups, dtype=str)
    if len(np.unique(groups)) < 2:
        raise ValueError(f"Leave-one-group-out needs at least 2 groups, found {sorted(set(groups))}.")
    folds = []
    for train, test in LeaveOneGroupOut().split(groups, groups=groups):
        name = str(groups[test[0]])
        validation = None
        if not select_on_test:
            train, validation = split_validation(
                train, by=validation_split_by, fraction=validation_fraction, speakers=speakers, groups=groups,
                labels=labels, test_group=name, seed=seed,
            )
        folds.append(Fold(name, np.asarray(train), validation, np.asarray(test)))
    return sorted(folds, key=lambda fold: natural_key(fold.name))


def stratified_fraction(
    indices: Sequence[int], fraction: float, *, labels: Sequence | None = None, seed: int = 0
) -> np.ndarray:
    """A seeded share `fraction` of `indices` (for data-efficiency curves, paper Figures 2-3), stratified by `labels`
    (per-row values over the whole dataset) when given; `fraction=1` keeps every row."""
    indices = np.asarray(indices)
    if not 0 < fraction <= 1:
        raise ValueError(f"--train_fraction must be in (0, 1], got {fraction}.")
    if fraction == 1:
        return indices
    stratify = None if labels is None else np.asarray(labels)[indices]
    try:
        kept, _ = train_test_split(indices, train_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as error:
        raise ValueError(
            f"Cannot keep a stratified share of {fraction} of {len(indices)} training rows ({error}); use a larger "
            "--train_fraction."
        ) from None
    return np.sort(kept)


def summarize_folds(fold_metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """`{"mean": {...}, "std": {...}}` of each metric over the folds that report it; `std` is the sample standard
    deviation (ddof=1; NaN with one fold)."""
    names = sorted({name for metrics in fold_metrics.values() for name in metrics})
    summary = {"mean": {}, "std": {}}
    for name in names:
        values = np.array([metrics[name] for metrics in fold_metrics.values() if name in metrics], dtype=np.float64)
        summary["mean"][name] = float(values.mean())
        summary["std"][name] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return summary


__all__ = [
    "VALIDATION_SPLITS",
    "Fold",
    "leave_one_group_out",
    "natural_key",
    "split_validation",
    "stratified_fraction",
    "summarize_folds",
]
