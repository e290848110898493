"""Leave-one-session-out folds, validation splits, training fractions and fold summaries."""

import math
from collections import Counter

import numpy as np
import pytest

from ctal_hf.data.iemocap import load_iemocap_folder
from ctal_hf.training.cross_validation import leave_one_group_out, split_validation, stratified_fraction, summarize_folds


@pytest.fixture(scope="module")
def iemocap(iemocap_tree):
    dataset = load_iemocap_folder(iemocap_tree[0])
    return np.array(dataset["session"]), np.array(dataset["speaker_id"]), np.array(dataset["label"])


def test_five_folds_without_leakage_and_speaker_disjoint_validation(iemocap):
    sessions, speakers, labels = iemocap
    folds = leave_one_group_out(sessions, speakers=speakers, labels=labels, seed=3)
    assert [fold.name for fold in folds] == [f"Session{n}" for n in range(1, 6)]
    for fold in folds:
        assert set(sessions[fold.test]) == {fold.name}
        assert fold.name not in set(sessions[fold.train]) | set(sessions[fold.validation])
        assert not set(speakers[fold.validation]) & set(speakers[fold.train])
        assert len(set(speakers[fold.validation])) == 1  # ceil(10% of 8 training speakers)
        every = np.concatenate([fold.train, fold.validation, fold.test])
        assert sorted(every) == list(range(len(sessions)))  # a partition of the rows


def test_group_validation_is_the_next_session(iemocap):
    sessions, speakers, _ = iemocap
    folds = leave_one_group_out(sessions, validation_split_by="group", speakers=speakers)
    assert {fold.name: set(sessions[fold.validation]) for fold in folds} == {
        "Session1": {"Session2"}, "Session2": {"Session3"}, "Session3": {"Session4"}, "Session4": {"Session5"},
        "Session5": {"Session1"},
    }
    assert all(len(set(sessions[fold.train])) == 3 for fold in folds)


def test_random_validation_is_stratified_and_test_selection_has_none(iemocap):
    sessions, speakers, labels = iemocap
    train, validation = split_validation(np.arange(len(labels)), by="random", fraction=0.2, labels=labels, seed=0)
    assert Counter(labels[validation]) == {label: count // 5 for label, count in Counter(labels).items()}
    assert set(speakers[validation]) & set(speakers[train])  # random splits share speakers
    assert all(fold.validation is None for fold in leave_one_group_out(sessions, select_on_test=True))


def test_validation_split_errors_name_the_fix():
    with pytest.raises(ValueError, match="needs a speaker column"):
        split_validation([0, 1], by="speaker")
    with pytest.raises(ValueError, match="has 1 speaker"):
        split_validation([0, 1], by="speaker", speakers=["a", "a"])
    with pytest.raises(ValueError, match="at least 2 groups"):
        leave_one_group_out(["s1", "s1"])


def test_stratified_fraction_keeps_class_shares_and_is_seeded():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    indices = np.arange(100)
    kept = stratified_fraction(indices, 0.5, labels=labels, seed=1)
    assert Counter(labels[kept]) == {0: 30, 1: 15, 2: 5}
    np.testing.assert_array_equal(kept, stratified_fraction(indices, 0.5, labels=labels, seed=1))
    assert not np.array_equal(kept, stratified_fraction(indices, 0.5, labels=labels, seed=2))
    np.testing.assert_array_equal(stratified_fraction(indices, 1.0, labels=labels), indices)
    with pytest.raises(ValueError, match="use a larger --train_fraction"):
        stratified_fraction(indices, 0.02, labels=labels)


def test_summary_mean_and_sample_std():
    summary = summarize_folds({"a": {"ua": 0.5, "wa": 0.6}, "b": {"ua": 0.7, "wa": 0.6}, "c": {"ua": 0.9}})
    assert summary["mean"] == pytest.approx({"ua": 0.7, "wa": 0.6})
    assert summary["std"]["ua"] == pytest.approx(0.2) and summary["std"]["wa"] == 0.0
    assert math.isnan(summarize_folds({"a": {"ua": 0.5}})["std"]["ua"])
