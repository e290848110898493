"""The package's metrics: one definition for every script and test, as functions and as `evaluate` metrics."""

from .verification import (
    DEFAULT_P_TARGETS,
    SpeakerVerificationMetric,
    compute_eer,
    compute_min_dcf,
    verification_metrics,
)
