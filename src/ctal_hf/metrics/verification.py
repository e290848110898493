"""Speaker-verification metrics: equal error rate (EER) and the normalised minimum detection cost (minDCF).

Both are computed from trial scores (higher = more likely the same speaker) and trial labels (1 target, 0
non-target), over every threshold of `sklearn.metrics.roc_curve`, as the speaker-verification literature reports them
(NIST SRE, Kaldi `compute_min_dcf.py`, SpeechBrain, WeSpeaker). The paper's Table 3 reports EER only (section 4.2.3);
its code's random GE2E-style protocol is `ctal_hf.speaker_verification.ge2e_random_eer`, not these functions.

The same definitions are exposed through the `evaluate` interface by `SpeakerVerificationMetric`, usable offline
(`SpeakerVerificationMetric().compute(...)`, no `evaluate.load`), with `add_batch` and multi-process evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_curve


DEFAULT_P_TARGETS = (0.01, 0.001)


def _roc(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-accept rates, false-reject rates, thresholds), thresholds decreasing; a trial is accepted when its score
    is >= the threshold. The first point accepts nothing (threshold +inf), the last accepts everything."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"Got {scores.size} scores but {labels.size} labels; give one label per trial.")
    if not np.isfinite(scores).all():
        raise ValueError("The scores contain NaN or infinite values; every trial needs a finite score.")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"Trial labels must be 1 (target) or 0 (non-target), got values {sorted(set(labels.tolist()))[:5]}."
        )
    if labels.min(initial=1) == 1 or labels.max(initial=0) == 0:
        raise ValueError("The trials need at least one target (label 1) and one non-target (label 0).")
    # Every distinct score is kept as a threshold: the EER threshold is interpolated between neighbouring points.
    far, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    return far, 1.0 - tpr, thresholds


def compute_eer(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold.

    The false-reject rate (targets scored below the threshold) falls and the false-accept rate (non-targets scored at
    or above it) rises as the threshold decreases; the EER is where the two curves of the ROC cross, interpolated
    linearly between the two ROC points that bracket the crossing (the rate is exact when a point lies on it).

    Args:
        scores: `(num_trials,)` similarity scores, higher for the same speaker.
        labels: `(num_trials,)` 1 for a target (same-speaker) trial, 0 for a non-target trial.

    Returns:
        `(eer, threshold)`: the EER as a fraction in [0, 1] and the score threshold where it is reached (interpolated
        like the rate; when the crossing lies before the highest score, that score).

    Raises:
        ValueError: mismatched lengths, labels other than 0/1, non-finite scores, or only one kind of trial.
    """
    far, frr, thresholds = _roc(scores, labels)
    # roc_curve's first threshold is +inf (nothing accepted); the first finite score stands in for it so that a crossing
    # in the first segment still has a finite threshold.
    thresholds = thresholds.copy()
    thresholds[0] = thresholds[1]
    gap = frr - far  # non-increasing, from 1 (nothing accepted) to -1 (everything accepted)
    index = int(np.argmax(gap <= 0))
    if gap[index] == 0:
        return float(far[index]), float(thresholds[index])
    before, after = gap[index - 1], gap[index]
    weight = before / (before - after)
    eer = far[index - 1] + weight * (far[index] - far[index - 1])
    threshold = thresholds[index - 1] + weight * (thresholds[index] - thresholds[index - 1])
    return float(eer), float(threshold)


def compute_min_dcf(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Normalised minimum detection cost function, as NIST SRE and Kaldi's `compute_min_dcf.py` define it.

    `DCF(t) = c_miss * P_miss(t) * p_target + c_fa * P_fa(t) * (1 - p_target)`, divided by the cost of the better
    trivial system `min(c_miss * p_target, c_fa * (1 - p_target))` (accept all or reject all), minimised over every
    threshold `t` (accept when score >= t), the reject-all threshold +inf included. A value of 1 means no better than
    a trivial system.

    Args:
        scores: `(num_trials,)` similarity scores, higher for the same speaker.
        labels: `(num_trials,)` 1 for a target trial, 0 for a non-target trial.
        p_target: prior probability of a target trial (0.01 and 0.001 are the usual operating points).
        c_miss, c_fa: costs of a miss (false reject) and of a false alarm (false accept).

    Returns:
        `(min_dcf, threshold)`: the normalised minimum cost and the threshold that reaches it (+inf when rejecting
        every trial is best).
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must lie strictly between 0 and 1, got {p_target}.")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"The costs must be positive, got c_miss={c_miss} and c_fa={c_fa}.")
    far, frr, thresholds = _roc(scores, labels)
    cost = c_miss * frr * p_target + c_fa * far * (1 - p_target)
    index = int(np.argmin(cost))
    return float(cost[index] / min(c_miss * p_target, c_fa * (1 - p_target))), float(thresholds[index])


def verification_metrics(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    p_targets: Sequence[float] = DEFAULT_P_TARGETS,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> dict[str, float]:
    """EER and minDCF at each prior of `p_targets`, with their thresholds, in one flat dict for `eval_results.json`:
    `eer`, `eer_threshold`, and `min_dcf_{p}` / `min_dcf_{p}_threshold` per prior (e.g. `min_dcf_0.01`)."""
    eer, eer_threshold = compute_eer(scores, labels)
    results = {"eer": eer, "eer_threshold": eer_threshold}
    for p_target in p_targets:
        min_dcf, threshold = compute_min_dcf(scores, labels, p_target=p_target, c_miss=c_miss, c_fa=c_fa)
        results[f"min_dcf_{p_target:g}"] = min_dcf
        results[f"min_dcf_{p_target:g}_threshold"] = threshold
    return results


_DESCRIPTION = """
Speaker-verification metrics over a trial list: the equal error rate (EER, from the ROC curve with the crossing
interpolated) and the minimum detection cost normalised as NIST SRE / Kaldi define it, with their thresholds.
"""

_INPUTS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): trial scores, higher for the same speaker (e.g. cosine similarities).
    references (`list` of `int`): 1 for a target (same-speaker) trial, 0 for a non-target trial.
    p_targets (`list` of `float`, defaults to `(0.01, 0.001)`): target priors of the minDCF operating points.
    c_miss (`float`, defaults to 1): cost of a miss.
    c_fa (`float`, defaults to 1): cost of a false alarm.
Returns:
    `eer`, `eer_threshold`, and `min_dcf_{p}` and `min_dcf_{p}_threshold` for each prior `p` (e.g. `min_dcf_0.01`).
Examples:
    >>> metric = SpeakerVerificationMetric()
    >>> metric.compute(predictions=[0.9, 0.8, 0.3, 0.1], references=[1, 1, 0, 0])["eer"]
    0.0
"""

_CITATION = """
@misc{nist2016sre,
  title = {NIST 2016 Speaker Recognition Evaluation Plan},
  author = {{National Institute of Standards and Technology}},
  year = {2016}
}
"""


class SpeakerVerificationMetric(evaluate.Metric):
    """EER and minDCF as an `evaluate.Metric`: instantiate it directly (no Hub access), then `add_batch` / `compute`;
    `num_process` / `process_id` give distributed evaluation as for any `evaluate` metric."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int8")}
            ),
            reference_urls=["https://github.com/kaldi-asr/kaldi/blob/master/egs/sre08/v1/sid/compute_min_dcf.py"],
        )

    def _compute(self, predictions, references, p_targets=DEFAULT_P_TARGETS, c_miss=1.0, c_fa=1.0):
        return verification_metrics(predictions, references, p_targets=p_targets, c_miss=c_miss, c_fa=c_fa)


__all__ = [
    "DEFAULT_P_TARGETS",
    "SpeakerVerificationMetric",
    "compute_eer",
    "compute_min_dcf",
    "verification_metrics",
]
