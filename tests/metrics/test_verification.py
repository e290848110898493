"""EER and minDCF on constructed score sets with known values, and their `evaluate` metric."""

import numpy as np
import pytest

from ctal_hf.metrics import SpeakerVerificationMetric, compute_eer, compute_min_dcf, verification_metrics


def split(targets, nontargets):
    scores = np.concatenate([targets, nontargets])
    labels = np.concatenate([np.ones(len(targets), dtype=int), np.zeros(len(nontargets), dtype=int)])
    return scores, labels


def min_dcf_by_definition(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    """min over every threshold (each score, and +inf = reject all) of the normalised detection cost."""
    targets, nontargets = scores[labels == 1], scores[labels == 0]
    costs = []
    for threshold in [*np.unique(scores), np.inf]:
        p_miss = np.mean(targets < threshold)
        p_fa = np.mean(nontargets >= threshold)
        costs.append(c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target))
    return min(costs) / min(c_miss * p_target, c_fa * (1 - p_target))


def test_perfect_separation_gives_zero():
    scores, labels = split([0.7, 0.8, 0.9], [0.1, 0.2, 0.5])
    eer, threshold = compute_eer(scores, labels)
    assert eer == 0.0 and 0.5 < threshold <= 0.7
    for p_target in (0.01, 0.001):
        assert compute_min_dcf(scores, labels, p_target)[0] == 0.0


def test_identical_distributions_give_one_half():
    values = np.linspace(-1, 1, 11)
    assert compute_eer(*split(values, values))[0] == pytest.approx(0.5, abs=1e-12)
    assert compute_eer(*split(np.zeros(4), np.zeros(6)))[0] == pytest.approx(0.5, abs=1e-12)


def test_hand_computed_eer():
    # Accepting >= 0.6 rejects the target 0.4 (FRR 1/4) and accepts the non-target 0.7 (FAR 1/4): a ROC point on the
    # crossing, so no interpolation.
    assert compute_eer(*split([0.4, 0.6, 0.8, 0.9], [0.1, 0.2, 0.5, 0.7])) == pytest.approx((0.25, 0.6))
    # At 0.7: FAR 1/4, FRR 1/2; at 0.65: FAR 1/4, FRR 0. FRR - FAR goes from 1/4 to -1/4: crossing halfway, at
    # EER 1/4 and threshold 0.675.
    assert compute_eer(*split([0.65, 0.9], [0.1, 0.2, 0.6, 0.7])) == pytest.approx((0.25, 0.675))


def test_min_dcf_matches_the_definition():
    rng = np.random.default_rng(0)
    scores, labels = split(rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 3000))
    scores = np.round(scores, 2)  # ties between targets and non-targets
    for p_target, c_miss, c_fa in [(0.01, 1, 1), (0.001, 1, 1), (0.05, 10, 1), (0.5, 1, 3)]:
        value, threshold = compute_min_dcf(scores, labels, p_target, c_miss, c_fa)
        assert value == pytest.approx(min_dcf_by_definition(scores, labels, p_target, c_miss, c_fa), abs=1e-12)
        p_miss = np.mean(scores[labels == 1] < threshold)
        p_fa = np.mean(scores[labels == 0] >= threshold)
        cost = (c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)) / min(
            c_miss * p_target, c_fa * (1 - p_target)
        )
        assert cost == pytest.approx(value, abs=1e-12)
    assert 0 < compute_min_dcf(scores, labels, 0.01)[0] <= 1


def test_min_dcf_is_one_when_rejecting_everything_is_best():
    scores, labels = split(np.zeros(10), np.zeros(10))
    value, threshold = compute_min_dcf(scores, labels, 0.01)
    assert value == pytest.approx(1.0) and threshold == np.inf


def test_evaluate_metric_add_batch_and_compute():
    rng = np.random.default_rng(1)
    scores, labels = split(rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 500))
    metric = SpeakerVerificationMetric()
    for start in range(0, len(scores), 64):
        metric.add_batch(predictions=scores[start : start + 64], references=labels[start : start + 64])
    results = metric.compute()
    expected = verification_metrics(scores, labels)
    assert set(results) == {
        "eer",
        "eer_threshold",
        "min_dcf_0.01",
        "min_dcf_0.01_threshold",
        "min_dcf_0.001",
        "min_dcf_0.001_threshold",
    }
    assert results == pytest.approx(expected, abs=1e-12)
    assert results["eer"] == pytest.approx(compute_eer(scores, labels)[0])
    custom = SpeakerVerificationMetric().compute(predictions=scores, references=labels, p_targets=[0.05])
    assert custom["min_dcf_0.05"] == pytest.approx(compute_min_dcf(scores, labels, 0.05)[0])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="one target .* and one non-target"):
        compute_eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="must be 1 \\(target\\) or 0"):
        compute_eer([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="Got 3 scores but 2 labels"):
        compute_eer([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        compute_eer([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        compute_min_dcf([0.1, 0.2], [1, 0], p_target=1.0)
