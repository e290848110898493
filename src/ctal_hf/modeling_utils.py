"""Pieces shared by the model families' heads (one implementation for every family)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedConfig


REGRESSION_LOSSES = ("l1", "mse")


def sequence_classification_loss(config: PreTrainedConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The utterance-level task loss of the fine-tuning heads, chosen by `config.problem_type` as transformers' own
    `*ForSequenceClassification` heads do (and set on `config` from the first batch when it is None):

    - `"regression"` (`num_labels == 1`): `config.regression_loss`, `"l1"` or `"mse"`, on `logits (B, 1)` vs `(B,)`;
    - `"single_label_classification"` (integer labels): cross-entropy on `logits (B, C)` vs class ids `(B,)`;
    - `"multi_label_classification"` (float labels): binary cross-entropy with logits vs multi-hot `(B, C)`.

    The loss is computed in float32 whatever the model's dtype.
    """
    num_labels = logits.shape[-1]
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        loss_fct = nn.functional.l1_loss if config.regression_loss == "l1" else nn.functional.mse_loss
        return loss_fct(logits.squeeze(-1).float(), labels.view(-1).float())
    if config.problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits.view(-1, num_labels).float(), labels.view(-1))
    return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())


__all__ = ["REGRESSION_LOSSES", "sequence_classification_loss"]
