"""Utterance-level metrics: emotion classification, sentiment regression and multi-label classification.

The one definition of each metric that the scripts, the `Trainer` hook and the tests use, built on scikit-learn,
NumPy and SciPy:

- classification (IEMOCAP, paper Table 1): WA = accuracy over all utterances; UA = the mean over classes of the
  per-class recall (`recall_score(average="macro")`, i.e. `balanced_accuracy_score`: over the classes present in the
  references); macro and weighted F1; per-class recall; the confusion matrix (rows: true class, columns: predicted
  class);
- sentiment (CMU-MOSEI, paper Table 2, in the conventions of MulT and MMSA): MAE and Pearson correlation over all
  samples; Acc2 and weighted F1 in both conventions that papers mix, "has0" (negative < 0 vs non-negative >= 0,
  all samples) and "non0" (only samples whose truth is not 0, positive > 0 vs negative < 0); Acc5 and Acc7 (clip to
  [-2, 2] / [-3, 3], then `np.round`, which rounds halves to even, and compare);
- multi-label: micro and macro F1 over multi-hot rows.

Each family is a plain function on NumPy arrays returning a dict of floats, an `evaluate.Metric` subclass
(`add_batch` / `compute`, multi-process evaluation through `num_process` / `process_id`, no `evaluate.load` and no Hub
access), and a `Trainer` `compute_metrics` hook from `compute_metrics_for(problem_type)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import datasets
import evaluate
import numpy as np
from scipy import stats
from sklearn import metrics as skm


PROBLEM_TYPES = ("single_label_classification", "regression", "multi_label_classification")

_CITATION = """@inproceedings{li-etal-2021-ctal,
    title = "{CTAL}: Pre-training Cross-modal Transformer for Audio-and-Language Representations",
    author = "Li, Hang and Ding, Wenbiao and Kang, Yu and Liu, Tianqiao and Wu, Zhongqin and Liu, Zitao",
    booktitle = "Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing",
    year = "2021",
    url = "https://aclanthology.org/2021.emnlp-main.323",
}"""


def _as_1d(values, name: str, dtype=None) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be one value per sample (1-D), got shape {array.shape}.")
    return array


def _check_lengths(predictions: np.ndarray, references: np.ndarray) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions but {len(references)} references.")
    if len(references) == 0:
        raise ValueError("No samples: metrics need at least one prediction and reference.")


# ---------------------------------------------------------------------------------------------- classification


def confusion_matrix(predictions, references, num_labels: int | None = None) -> np.ndarray:
    """The confusion matrix `(num_labels, num_labels)` of class ids: entry `[i, j]` counts samples of true class `i`
    predicted as `j`. `num_labels` (default: one more than the largest id seen) keeps rows for absent classes."""
    predictions, references = _as_1d(predictions, "predictions", np.int64), _as_1d(references, "references", np.int64)
    _check_lengths(predictions, references)
    num_labels = int(max(predictions.max(), references.max())) + 1 if num_labels is None else num_labels
    return skm.confusion_matrix(references, predictions, labels=np.arange(num_labels))


def classification_metrics(predictions, references, label_names: Sequence[str] | None = None) -> dict[str, float]:
    """WA, UA, macro / weighted F1 and per-class recall of single-label predictions.

    Args:
        predictions: predicted class ids `(num_samples,)`.
        references: true class ids `(num_samples,)`.
        label_names: the name of each class id; the per-class recalls are keyed `recall_<name>` (default: the id).

    Returns:
        `{"wa", "ua", "macro_f1", "weighted_f1", "recall_<class>", ...}` as floats in [0, 1]. A class absent from the
        references has no recall: its `recall_<class>` is NaN and UA averages the classes present (a validation set
        of one speaker may hold one class only). Macro F1 averages the classes present in references or predictions.
    """
    predictions, references = _as_1d(predictions, "predictions", np.int64), _as_1d(references, "references", np.int64)
    _check_lengths(predictions, references)
    if label_names is not None:
        labels = np.arange(len(label_names))
        out_of_range = sorted(set(np.concatenate([predictions, references]).tolist()) - set(labels.tolist()))
        if out_of_range:
            raise ValueError(
                f"Class ids {out_of_range} are outside the {len(label_names)} label names {list(label_names)}."
            )
        names = list(label_names)
    else:
        labels = np.unique(np.concatenate([predictions, references]))
        names = [str(label) for label in labels]
    present = np.isin(labels, references)
    recalls = np.where(present, skm.recall_score(references, predictions, labels=labels, average=None, zero_division=0),
                       np.nan)
    return {
        "wa": float(skm.accuracy_score(references, predictions)),
        "ua": float(np.nanmean(recalls)),
        "macro_f1": float(skm.f1_score(references, predictions, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(references, predictions, average="weighted", zero_division=0)),
        **{f"recall_{name}": float(recall) for name, recall in zip(names, recalls)},
    }


# --------------------------------------------------------------------------------------------------- sentiment


def _multiclass_accuracy(predictions: np.ndarray, references: np.ndarray, bound: float) -> float:
    """Accuracy after clipping to [-bound, bound] and rounding half to even (`np.round`), as MulT and MMSA do."""
    predicted, true = (np.round(np.clip(values, -bound, bound)) for values in (predictions, references))
    return float(np.mean(predicted == true))


def sentiment_metrics(predictions, references) -> dict[str, float]:
    """CMU-MOSEI sentiment metrics of predicted scores against true scores in [-3, 3].

    Returns:
        - `mae`: mean absolute error; `pearson`: Pearson correlation (NaN when either side is constant);
        - `acc2_has0`, `f1_has0`: binary accuracy and weighted F1 of negative (< 0) vs non-negative (>= 0), all
          samples;
        - `acc2_non0`, `f1_non0`: the same for positive (> 0) vs not, over the samples whose truth is not 0 (NaN when
          every truth is 0);
        - `acc5`, `acc7`: accuracy of the scores clipped to [-2, 2] / [-3, 3] and rounded half to even.
    """
    predictions = _as_1d(predictions, "predictions", np.float64)
    references = _as_1d(references, "references", np.float64)
    _check_lengths(predictions, references)
    constant = np.ptp(predictions) == 0 or np.ptp(references) == 0
    pearson = float("nan") if constant else float(stats.pearsonr(predictions, references).statistic)
    has0_truth, has0_pred = references >= 0, predictions >= 0
    nonzero = references != 0
    non0_truth, non0_pred = references[nonzero] > 0, predictions[nonzero] > 0
    return {
        "mae": float(np.mean(np.abs(predictions - references))),
        "pearson": pearson,
        "acc2_has0": float(skm.accuracy_score(has0_truth, has0_pred)),
        "f1_has0": float(skm.f1_score(has0_truth, has0_pred, average="weighted", zero_division=0)),
        "acc2_non0": float(skm.accuracy_score(non0_truth, non0_pred)) if nonzero.any() else float("nan"),
        "f1_non0": float(skm.f1_score(non0_truth, non0_pred, average="weighted", zero_division=0))
        if nonzero.any()
        else float("nan"),
        "acc5": _multiclass_accuracy(predictions, references, 2.0),
        "acc7": _multiclass_accuracy(predictions, references, 3.0),
    }


# ------------------------------------------------------------------------------------------------- multi-label


def multilabel_metrics(predictions, references) -> dict[str, float]:
    """Micro and macro F1 of multi-hot predictions `(num_samples, num_labels)` against multi-hot references.

    Returns:
        `{"micro_f1", "macro_f1"}`; a label never predicted nor present counts F1 0 in the macro mean
        (`zero_division=0`).
    """
    predictions, references = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
    if predictions.ndim != 2 or predictions.shape != references.shape:
        raise ValueError(
            f"Multi-label predictions and references must be multi-hot arrays of one shape (num_samples, num_labels), "
            f"got {predictions.shape} and {references.shape}."
        )
    _check_lengths(predictions, references)
    return {
        "micro_f1": float(skm.f1_score(references, predictions, average="micro", zero_division=0)),
        "macro_f1": float(skm.f1_score(references, predictions, average="macro", zero_division=0)),
    }


# ----------------------------------------------------------------------------------------- evaluate interface


class ClassificationMetric(evaluate.Metric):
    """`evaluate` form of `classification_metrics` (WA, UA, F1s, per-class recall); `compute(label_names=...)` names the
    per-class recalls. Instantiate it directly (`ClassificationMetric()`), no `evaluate.load`."""

    def _info(self):
        return evaluate.MetricInfo(
            description="WA (accuracy), UA (mean per-class recall), macro/weighted F1 and per-class recall.",
            citation=_CITATION,
            inputs_description="predictions, references: class ids. label_names (optional): one name per id.",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, label_names: Sequence[str] | None = None):
        return classification_metrics(predictions, references, label_names)


class SentimentMetric(evaluate.Metric):
    """`evaluate` form of `sentiment_metrics` (MAE, Pearson, Acc2/F1 in both conventions, Acc5, Acc7)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="CMU-MOSEI sentiment metrics: MAE, Pearson, Acc2 and weighted F1 (has0 and non0), Acc5, Acc7.",
            citation=_CITATION,
            inputs_description="predictions, references: sentiment scores in [-3, 3].",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        return sentiment_metrics(predictions, references)


class MultilabelMetric(evaluate.Metric):
    """`evaluate` form of `multilabel_metrics` (micro and macro F1 of multi-hot rows)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Micro and macro F1 of multi-label predictions.",
            citation=_CITATION,
            inputs_description="predictions, references: multi-hot rows (one 0/1 per label).",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references):
        return multilabel_metrics(predictions, references)


# --------------------------------------------------------------------------------------------- Trainer hook


def predictions_from_logits(logits, problem_type: str) -> np.ndarray:
    """Model outputs `(num_samples, num_labels)` -> predictions: class ids (argmax), the regression value
    (`(num_samples,)`), or multi-hot rows (logit > 0, i.e. probability > 0.5)."""
    logits = np.asarray(logits)
    if problem_type == "single_label_classification":
        return logits.argmax(axis=-1)
    if problem_type == "regression":
        return logits.reshape(len(logits), -1)[:, 0]
    if problem_type == "multi_label_classification":
        return (logits > 0).astype(np.int64)
    raise ValueError(f"Unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}.")


def default_metric_for_best_model(problem_type: str) -> tuple[str, bool]:
    """(metric name, greater is better) used to select checkpoints: UA for classification, MAE for regression, macro
    F1 for multi-label."""
    defaults = {
        "single_label_classification": ("ua", True),
        "regression": ("mae", False),
        "multi_label_classification": ("macro_f1", True),
    }
    if problem_type not in defaults:
        raise ValueError(f"Unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}.")
    return defaults[problem_type]


def task_metrics(
    problem_type: str, predictions, references, label_names: Sequence[str] | None = None
) -> dict[str, float]:
    """The metrics of `problem_type` (`classification_metrics`, `sentiment_metrics` or `multilabel_metrics`) of
    predictions as `predictions_from_logits` gives them."""
    if problem_type == "single_label_classification":
        return classification_metrics(predictions, references, label_names)
    if problem_type == "regression":
        return sentiment_metrics(predictions, np.asarray(references).reshape(-1))
    if problem_type == "multi_label_classification":
        return multilabel_metrics(predictions, references)
    raise ValueError(f"Unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}.")


def compute_metrics_for(
    problem_type: str, label_names: Sequence[str] | None = None
) -> Callable[[object], dict[str, float]]:
    """A `Trainer(compute_metrics=...)` hook for `problem_type`: takes an `EvalPrediction` whose predictions are the
    logits (or a tuple starting with them, as models that also return embeddings give) and returns the metrics of
    `classification_metrics`, `sentiment_metrics` or `multilabel_metrics`."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"Unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}.")

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        predictions = predictions_from_logits(logits, problem_type)
        return task_metrics(problem_type, predictions, np.asarray(eval_prediction.label_ids), label_names)

    return compute_metrics
