"""The package's metrics: one definition for every script and test, as functions and as `evaluate` metrics."""

from .classification import (
    PROBLEM_TYPES,
    ClassificationMetric,
    MultilabelMetric,
    SentimentMetric,
    classification_metrics,
    compute_metrics_for,
    confusion_matrix,
    default_metric_for_best_model,
    multilabel_metrics,
    predictions_from_logits,
    sentiment_metrics,
    task_metrics,
)
from .verification import (
    DEFAULT_P_TARGETS,
    SpeakerVerificationMetric,
    compute_eer,
    compute_min_dcf,
    verification_metrics,
)
