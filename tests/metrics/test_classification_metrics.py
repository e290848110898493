"""Metrics against hand-computed cases and scikit-learn."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm
from transformers import EvalPrediction

from ctal_hf.metrics import (
    ClassificationMetric,
    MultilabelMetric,
    SentimentMetric,
    classification_metrics,
    compute_metrics_for,
    confusion_matrix,
    multilabel_metrics,
    sentiment_metrics,
)


# 6 utterances of 3 classes: class 0 recalled 2/3, class 1 1/2, class 2 1/1.
REFERENCES = [0, 0, 0, 1, 1, 2]
PREDICTIONS = [0, 0, 1, 1, 0, 2]


def test_classification_hand_computed():
    result = classification_metrics(PREDICTIONS, REFERENCES, ["neutral", "happy", "angry"])
    assert result["wa"] == pytest.approx(4 / 6)
    assert result["ua"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert result["recall_neutral"] == pytest.approx(2 / 3)
    assert result["recall_happy"] == pytest.approx(1 / 2)
    assert result["recall_angry"] == 1.0
    # F1 per class: 2/3, 1/2, 1 (precision equals recall for each class here).
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert result["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2 + 1 * 1) / 6)


def test_confusion_matrix_known_case():
    expected = np.array([[2, 1, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(confusion_matrix(PREDICTIONS, REFERENCES), expected)
    # A class absent from both sides still gets its row and column.
    np.testing.assert_array_equal(confusion_matrix(PREDICTIONS, REFERENCES, num_labels=4)[:3, :3], expected)
    assert confusion_matrix(PREDICTIONS, REFERENCES, num_labels=4)[3].sum() == 0


def test_classification_matches_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    references, predictions = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    result = classification_metrics(predictions, references, list("abcd"))
    assert result["wa"] == pytest.approx(skm.accuracy_score(references, predictions))
    assert result["ua"] == pytest.approx(skm.recall_score(references, predictions, average="macro"))
    assert result["ua"] == pytest.approx(skm.balanced_accuracy_score(references, predictions))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(references, predictions, average="macro"))
    assert result["weighted_f1"] == pytest.approx(skm.f1_score(references, predictions, average="weighted"))


def test_classes_absent_from_the_references_have_no_recall():
    # Class 2 never occurs: it has no recall and UA averages the classes present, as balanced accuracy does.
    result = classification_metrics([0, 1, 2, 0], [0, 1, 1, 0], ["a", "b", "c"])
    assert np.isnan(result["recall_c"]) and result["recall_b"] == 0.5
    assert result["ua"] == pytest.approx((1 + 0.5) / 2)  # as balanced_accuracy_score, which warns about class 2
    # A one-speaker validation set may hold one class only: UA is then its recall, not half of it.
    assert classification_metrics([0, 0, 1], [0, 0, 0], ["a", "b"])["ua"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx(skm.f1_score([0, 1, 1, 0], [0, 1, 2, 0], average="macro"))
    with pytest.raises(ValueError, match="outside the 2 label names"):
        classification_metrics([0, 2], [0, 1], ["a", "b"])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        classification_metrics([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="No samples"):
        sentiment_metrics([], [])
    with pytest.raises(ValueError, match="multi-hot arrays of one shape"):
        multilabel_metrics([[0, 1]], [[0, 1, 1]])


def test_sentiment_acc2_conventions_differ():
    # Truth 0 counts as non-negative in "has0" and is left out in "non0".
    references = [-1.0, 0.0, 0.0, 2.0]
    predictions = [-0.5, 0.4, -0.2, 1.0]
    result = sentiment_metrics(predictions, references)
    assert result["acc2_has0"] == pytest.approx(3 / 4)  # the -0.2 for a 0 truth is wrong here
    assert result["acc2_non0"] == 1.0  # only samples 0 and 3 count, both right
    has0_truth, has0_pred = [False, True, True, True], [False, True, False, True]
    assert result["f1_has0"] == pytest.approx(skm.f1_score(has0_truth, has0_pred, average="weighted"))
    assert result["f1_non0"] == 1.0
    assert result["mae"] == pytest.approx((0.5 + 0.4 + 0.2 + 1.0) / 4)
    assert result["pearson"] == pytest.approx(stats.pearsonr(predictions, references).statistic)


def test_sentiment_acc7_rounds_halves_to_even_after_clipping():
    # np.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2; clipping first: 3.4 -> 3 and 5.0 -> 3.
    references = [0.5, 1.5, 2.5, -2.5, 3.4, 0.5]
    predictions = [0.0, 2.0, 2.4, -2.0, 5.0, 1.0]  # the last differs: 1 vs round(0.5) = 0 (half-up would give 1)
    result = sentiment_metrics(predictions, references)
    assert result["acc7"] == pytest.approx(5 / 6)
    # Acc5 clips to [-2, 2]: 2.5, 3.4 and 5.0 all become 2.
    assert result["acc5"] == pytest.approx(5 / 6)
    assert sentiment_metrics([2.0], [3.0])["acc5"] == 1.0 and sentiment_metrics([2.0], [3.0])["acc7"] == 0.0


def test_sentiment_degenerate_cases_are_nan():
    result = sentiment_metrics([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    assert np.isnan(result["pearson"]) and np.isnan(result["acc2_non0"]) and np.isnan(result["f1_non0"])
    assert result["acc2_has0"] == 1.0


def test_multilabel_matches_sklearn():
    rng = np.random.default_rng(1)
    references, predictions = rng.integers(0, 2, (50, 5)), rng.integers(0, 2, (50, 5))
    result = multilabel_metrics(predictions, references)
    assert result["micro_f1"] == pytest.approx(skm.f1_score(references, predictions, average="micro"))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(references, predictions, average="macro"))


def test_evaluate_metrics_accumulate_batches():
    metric = ClassificationMetric()
    metric.add_batch(predictions=PREDICTIONS[:4], references=REFERENCES[:4])
    metric.add_batch(predictions=np.array(PREDICTIONS[4:]), references=np.array(REFERENCES[4:]))
    assert metric.compute(label_names=["n", "h", "a"]) == classification_metrics(PREDICTIONS, REFERENCES, ["n", "h", "a"])

    sentiment = SentimentMetric()
    for prediction, reference in zip([-0.5, 0.4, -0.2, 1.0], [-1.0, 0.0, 0.0, 2.0]):
        sentiment.add(predictions=prediction, references=reference)
    assert sentiment.compute() == pytest.approx(sentiment_metrics([-0.5, 0.4, -0.2, 1.0], [-1.0, 0.0, 0.0, 2.0]))

    multilabel = MultilabelMetric()
    assert multilabel.compute(predictions=[[1, 0], [1, 1]], references=[[1, 0], [0, 1]]) == multilabel_metrics(
        [[1, 0], [1, 1]], [[1, 0], [0, 1]]
    )


def test_evaluate_metric_gathers_two_processes(tmp_path):
    """Distributed evaluation: each process adds its shard, process 0 computes over both."""

    def run(process_id, predictions, references):
        metric = ClassificationMetric(num_process=2, process_id=process_id, cache_dir=str(tmp_path), experiment_id="t",
                                      timeout=60)
        metric.add_batch(predictions=predictions, references=references)
        return metric.compute(label_names=["n", "h", "a"])

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(run, 0, PREDICTIONS[:3], REFERENCES[:3])
        second = pool.submit(run, 1, PREDICTIONS[3:], REFERENCES[3:])
        results = first.result(), second.result()
    assert results[0] == classification_metrics(PREDICTIONS, REFERENCES, ["n", "h", "a"])
    assert results[1] is None


@pytest.mark.parametrize(
    "problem_type, logits, labels, expected",
    [
        ("single_label_classification", [[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]], [0, 2],
         classification_metrics([0, 1], [0, 2], ["a", "b", "c"])),
        ("regression", [[1.2], [-0.7]], [1.0, -1.0], sentiment_metrics([1.2, -0.7], [1.0, -1.0])),
        ("multi_label_classification", [[1.0, -1.0], [0.5, 0.2]], [[1, 0], [0, 1]],
         multilabel_metrics([[1, 0], [1, 1]], [[1, 0], [0, 1]])),
    ],
)
def test_trainer_hook_per_problem_type(problem_type, logits, labels, expected):
    hook = compute_metrics_for(problem_type, ["a", "b", "c"] if problem_type.startswith("single") else None)
    embeddings = np.zeros((2, 4))
    # Models that return embeddings too give a tuple; the logits come first.
    for predictions in (np.array(logits), (np.array(logits), embeddings)):
        assert hook(EvalPrediction(predictions=predictions, label_ids=np.array(labels))) == pytest.approx(expected, nan_ok=True)
    with pytest.raises(ValueError, match="Unknown problem_type"):
        compute_metrics_for("ranking")
