"""`Trainer` for CTAL pre-training that logs the MLM and MCAM losses separately (paper section 3.2)."""

from __future__ import annotations

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import nested_gather


PARTIAL_LOSSES = ("mlm_loss", "mcam_loss")


class CTALPreTrainingTrainer(Trainer):
    """A `Trainer` whose logs carry `mlm_loss` and `mcam_loss` next to `loss` (and `eval_mlm_loss`,
    `eval_mcam_loss` next to `eval_loss`), averaged over the steps since the last log and over processes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._partial_sums: dict[str, dict[str, list[torch.Tensor]]] = {"train": {}, "eval": {}}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        bucket = self._partial_sums["train" if model.training else "eval"]
        for name in PARTIAL_LOSSES:
            value = outputs.get(name) if isinstance(outputs, dict) else None
            if value is not None:
                bucket.setdefault(name, []).append(value.detach())
        return (loss, outputs) if return_outputs else loss

    def _drain(self, split: str) -> dict[str, float]:
        means = {}
        for name, values in sorted(self._partial_sums[split].items()):
            # A collective call: `log` runs on every process, as for Trainer's own loss.
            means[name] = nested_gather(torch.stack(values).mean(), self.args.parallel_mode).mean().item()
        self._partial_sums[split] = {}
        return means

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self._drain("train"))
        if "eval_loss" in logs:
            logs.update({f"eval_{name}": value for name, value in self._drain("eval").items()})
        super().log(logs, start_time)
