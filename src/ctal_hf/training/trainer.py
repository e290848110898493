"""`Trainer` for CTAL pre-training that logs the MLM and MCAM losses separately (paper section 3.2)."""

from __future__ import annotations

import math

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices, nested_gather


PARTIAL_LOSSES = ("mlm_loss", "mcam_loss")


class EpochCallback(TrainerCallback):
    """Calls `set_epoch(epoch)` on its targets when an epoch starts: a collator with seeded masks
    (`DataCollatorForCTALPretraining`), so masks change every epoch, and the length-grouped sampler, so the order does;
    a resumed run then masks and orders exactly as an uninterrupted one. The sampler needs this call too: when a
    distributed run resumes mid-epoch, accelerate's `set_epoch` does not reach a sampler below the batch-skipping
    wrapper."""

    def __init__(self):
        self.targets: dict[str, object] = {}

    def on_epoch_begin(self, args, state, control, **kwargs):
        # `state.epoch` is fractional (e.g. 0.75 when resuming mid-epoch, 0.9999999 at a boundary).
        epoch = math.floor(state.epoch + 1e-6)
        for target in self.targets.values():
            target.set_epoch(epoch)


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose order is a function of `(seed, epoch)` only.

    Trainer builds its `LengthGroupedSampler` without a generator, so each epoch's order is drawn from the global
    torch RNG at the moment the epoch starts. A run resumed after epoch 0 draws it before the checkpoint's RNG state
    is restored, so its data order differs from the uninterrupted run's. `set_epoch` is called before every epoch,
    including the resumed one, as for `DistributedSampler`.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class CTALPreTrainingTrainer(Trainer):
    """A `Trainer` whose logs carry `mlm_loss` and `mcam_loss` next to `loss` (and `eval_mlm_loss`,
    `eval_mcam_loss` next to `eval_loss`), averaged over the steps since the last log and over processes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._partial_sums: dict[str, dict[str, list[torch.Tensor]]] = {"train": {}, "eval": {}}
        if self.args.label_names is None and hasattr(self.data_collator, "label_names"):
            # Evaluation computes a loss only when every label key is in the batch: a single-task ablation's
            # collator leaves the other task's keys out.
            self.label_names = list(self.data_collator.label_names)
        self._epoch_callback = EpochCallback()
        self.add_callback(self._epoch_callback)
        if hasattr(self.data_collator, "set_epoch"):
            if (
                getattr(self.data_collator, "seed", None) is not None
                and self.args.dataloader_persistent_workers
                and self.args.dataloader_num_workers > 0
            ):
                raise ValueError(
                    "Persistent data-loader workers keep the collator of the first epoch, so seeded masks would "
                    "repeat every epoch: drop --dataloader_persistent_workers, or use a collator with seed=None."
                )
            self._epoch_callback.targets["collator"] = self.data_collator

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            # Same batches as Trainer's sampler, but reproducible across a resume (see the class).
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
            self._epoch_callback.targets["sampler"] = sampler
        return sampler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        bucket = self._partial_sums["train" if model.training else "eval"]
        # As Trainer's own losses: training logs average the steps, evaluation weights each batch by its size.
        repeats = 1 if model.training else inputs["input_ids"].shape[0]
        for name in PARTIAL_LOSSES:
            value = outputs.get(name) if isinstance(outputs, dict) else None
            if value is not None:
                bucket.setdefault(name, []).append(value.detach().reshape(1).repeat(repeats))
        return (loss, outputs) if return_outputs else loss

    def _drain(self, split: str) -> dict[str, float]:
        means = {}
        for name, values in sorted(self._partial_sums[split].items()):
            # A collective call: `log` runs on every process, as for Trainer's own loss.
            means[name] = nested_gather(torch.cat(values).mean(), self.args.parallel_mode).mean().item()
        self._partial_sums[split] = {}
        return means

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self._drain("train"))
        if "eval_loss" in logs:
            logs.update({f"eval_{name}": value for name, value in self._drain("eval").items()})
        super().log(logs, start_time)
