"""Batching and dynamic masking for CTAL pre-training (paper section 3.2).

`DataCollatorForCTALPretraining` pads the text and audio streams of a list of examples and
applies the two pre-training corruptions on the fly, so every epoch sees new masks:

- MLM (section 3.2.1): RoBERTa-style token masking of the text stream.
- MCAM (section 3.2.2): masking of consecutive audio frames, reconstructed by the model with an
  L1 loss against the original frames.

Both can be switched off for the paper's ablations; a switched-off task produces no labels.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


MCAM_MODES = ("segment", "per_frame")
_FEATURISE_HINT = (
    "featurise the rows first (ctal_hf.data.features.precompute_features) or let the collator do it with "
    "feature_transform=CTALFeatureTransform(processor)."
)


def _to_tensor(value: Any, dtype: type) -> torch.Tensor:
    """A tensor copy of a list, array or tensor (datasets' numpy format gives read-only arrays)."""
    return torch.from_numpy(np.array(value, dtype=dtype))


@dataclass
class DataCollatorForCTALPretraining:
    """Pads text and audio and applies dynamic MLM and MCAM masking.

    Each example is a mapping with
    - `input_ids`: token ids of one utterance, `<s>` and `</s>` included (list, array or tensor);
    - `audio_features`: `(T, D)` acoustic frames (D = 160 for CTAL's log-mel + delta features);
    - optionally `attention_mask`: `(L,)`, 0 marking padding already present in `input_ids`.
    Other keys (e.g. `length`, `text`, `speaker_id`) are ignored, so the batch can be passed to the
    model as is.

    The returned batch holds
    - `input_ids` `(B, L)` long (MLM-corrupted when `mlm=True`), `attention_mask` `(B, L)` long;
    - `labels` `(B, L)` long: the original id at MLM-selected positions, -100 elsewhere (`mlm=True`);
    - `audio_features` `(B, T, D)` float32 (MCAM-corrupted when `mcam=True`), zero-padded;
    - `audio_attention_mask` `(B, T)` long, 1 on real frames;
    - `mcam_labels` `(B, T, D)` float32: the original, uncorrupted frames (`mcam=True`);
    - `mcam_label_mask` `(B, T)` bool: frames selected for the MCAM loss (`mcam=True`).
    Both streams are right-padded; `pad_to_multiple_of` rounds L and T up.

    MLM (section 3.2.1): each non-special, non-padding token is selected with probability
    `mlm_probability`; a selected token becomes `<mask>` with probability `mask_replace_prob`, a
    random non-special token with probability `random_replace_prob`, and stays unchanged otherwise.

    MCAM, `mcam_mode="segment"` (default, the paper's section 3.2.2): per utterance of n frames a
    segment length C is drawn uniformly from {min_segment_length..max_segment_length} (capped at n,
    so that an utterance shorter than max_segment_length still holds one segment). The utterance
    is cut into floor(n / C) consecutive, non-overlapping segments of exactly C frames; the grid
    starts at a random offset in [0, n mod C] so the leftover frames fall at either end and every
    frame can be masked. The paper selects 15% of the segments; with S segments and p =
    `mcam_probability`, floor(p * S) segments are selected, plus one more with probability
    frac(p * S) (stochastic rounding), without replacement. The expected count is exactly p * S for
    every S, so the expected masked fraction, p * S * C / n, is p up to the unsegmented leftover for
    utterances of any length; an utterance holding a single segment is masked with probability p.
    Each selected segment as a whole is zeroed (`mcam_zero_prob`), replaced
    (`mcam_replace_prob`) or kept. A replaced segment receives a contiguous block of C original
    frames from the same utterance that starts anywhere but at the segment's own start: a block,
    not scattered frames, so the replacement has the local smoothness of real speech and cannot be
    spotted from discontinuities alone. An utterance that is exactly one segment long has no other
    block, so its "replaced" segment keeps its own frames.

    MCAM, `mcam_mode="per_frame"` (the authors' released code):
    C ~ U{min_segment_length..max_segment_length} per utterance, round(n * mcam_probability / C)
    segment starts drawn without replacement from [0, n - C) (segments may overlap), and the
    zero / replace / keep choice is made per FRAME, a replaced frame taking the value of a random
    frame of the same utterance.

    Utterances shorter than `min_segment_length` frames get no MCAM frames in either mode (their
    audio stays intact and serves as context for MLM): a segment shorter than the paper's minimum
    would be a different task, and masking all of such an utterance would leave no acoustic
    context. MCAM-selected frames are never padding; MLM never selects special or padding tokens,
    and random replacements are never special tokens. A sequence may end up with no selected token
    or frame, as in RoBERTa's dynamic masking; the model's losses must tolerate an empty selection.

    Randomness: with `seed=None` the global torch RNG is used (seeded by `transformers.set_seed`
    and, in DataLoader workers, by PyTorch's per-worker seeding). With an integer `seed` the masks
    are a pure function of (`seed`, epoch, batch content): the same batch gets the same masks
    whatever the call order, the number of DataLoader workers, or a resumption from a checkpoint
    (Trainer re-collates the first resumed batch before it restores its RNG state, so a running
    random stream could not resume exactly). `set_epoch(epoch)` gives every epoch new masks;
    `CTALPreTrainingTrainer` calls it at the start of each epoch. Within one epoch, identical
    batches get identical masks.

    `feature_transform` (optional) turns raw examples into the fields above before batching, e.g.
    `ctal_hf.data.features.CTALFeatureTransform`: the on-the-fly route for `Trainer` that keeps the dataset
    itself untransformed, so its `length` column stays cheap to read for length-grouped sampling.

    Args:
        tokenizer: the CTAL tokenizer (e.g. `processor.tokenizer`); gives the pad, mask and special
            ids and the vocabulary size.
    """

    tokenizer: Any
    mlm: bool = True
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    mcam: bool = True
    mcam_mode: str = "segment"
    mcam_probability: float = 0.15
    mcam_zero_prob: float = 0.8
    mcam_replace_prob: float = 0.1
    min_segment_length: int = 20
    max_segment_length: int = 50
    pad_to_multiple_of: int | None = None
    seed: int | None = None
    feature_transform: Callable[[dict[str, list]], dict[str, list]] | None = None
    epoch: int = field(default=0, init=False)

    def __post_init__(self):
        for name in ("mlm_probability", "mask_replace_prob", "random_replace_prob", "mcam_probability",
                     "mcam_zero_prob", "mcam_replace_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}.")
        if self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ValueError(
                f"mask_replace_prob + random_replace_prob must be <= 1 (the rest stays unchanged), got "
                f"{self.mask_replace_prob} + {self.random_replace_prob}."
            )
        if self.mcam_zero_prob + self.mcam_replace_prob > 1.0:
            raise ValueError(
                f"mcam_zero_prob + mcam_replace_prob must be <= 1 (the rest stays unchanged), got "
                f"{self.mcam_zero_prob} + {self.mcam_replace_prob}."
            )
        if self.mcam_mode not in MCAM_MODES:
            raise ValueError(f"mcam_mode must be one of {MCAM_MODES}, got {self.mcam_mode!r}.")
        if not 1 <= self.min_segment_length <= self.max_segment_length:
            raise ValueError(
                "Need 1 <= min_segment_length <= max_segment_length, got "
                f"{self.min_segment_length} and {self.max_segment_length}."
            )
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer, got {self.pad_to_multiple_of}.")
        if getattr(self.tokenizer, "pad_token_id", None) is None:
            raise ValueError(
                "The tokenizer has no pad token. Pass the CTAL tokenizer (e.g. `processor.tokenizer`), "
                "whose `<pad>` has id 1."
            )
        if self.mlm and self.tokenizer.mask_token_id is None:
            raise ValueError("MLM needs a tokenizer with a mask token (`<mask>`); pass the CTAL tokenizer or mlm=False.")
        special_ids = sorted(set(self.tokenizer.all_special_ids))
        self._special_ids = torch.tensor(special_ids, dtype=torch.long)
        replacement_ids = torch.arange(len(self.tokenizer))
        self._replacement_ids = replacement_ids[~torch.isin(replacement_ids, self._special_ids)]
        if self.mlm and self.random_replace_prob > 0 and len(self._replacement_ids) == 0:
            raise ValueError("The vocabulary has no non-special token to use as MLM random replacement.")

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("Cannot collate an empty list of examples.")
        if self.feature_transform is not None:
            columns = self.feature_transform({key: [example[key] for example in examples] for key in examples[0]})
            examples = [dict(zip(columns, values)) for values in zip(*columns.values())]
            if len(examples) == 0:
                raise ValueError("feature_transform returned no example for this batch (all of its audio was skipped).")
        batch = self._pad_text(examples)
        batch.update(self._pad_audio(examples))
        generator = self._get_generator(batch)
        if self.mlm:
            batch["input_ids"], batch["labels"] = self._mask_tokens(batch["input_ids"], batch["attention_mask"], generator)
        if self.mcam:
            lengths = batch["audio_attention_mask"].sum(dim=1)
            mask_frames = self._mask_frames_segment if self.mcam_mode == "segment" else self._mask_frames_per_frame
            batch["mcam_labels"] = batch["audio_features"]
            batch["audio_features"], batch["mcam_label_mask"] = mask_frames(batch["audio_features"], lengths, generator)
        return batch

    @property
    def label_names(self) -> list[str]:
        """The label keys of the batches (Trainer's `label_names`): only those of the enabled tasks."""
        return (["labels"] if self.mlm else []) + (["mcam_labels", "mcam_label_mask"] if self.mcam else [])

    def set_epoch(self, epoch: int) -> None:
        """Start a new epoch of masks (seeded mode)."""
        self.epoch = int(epoch)

    def _get_generator(self, batch: Mapping[str, torch.Tensor]) -> torch.Generator | None:
        """None (global RNG) without `seed`; otherwise a generator seeded by (seed, epoch, content of the padded
        batch: token ids and frame counts)."""
        if self.seed is None:
            return None
        content = batch["input_ids"].numpy().tobytes() + batch["audio_attention_mask"].sum(dim=1).numpy().tobytes()
        entropy = [self.seed, self.epoch, zlib.crc32(content), batch["input_ids"].shape[1]]
        state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & (2**63 - 1))

    def _padded_length(self, length: int) -> int:
        multiple = self.pad_to_multiple_of
        return length if multiple is None else -(-length // multiple) * multiple

    def _pad_text(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """`input_ids` and `attention_mask`, `(B, L)`, right-padded with the tokenizer's pad id."""
        ids, masks = [], []
        for index, example in enumerate(examples):
            if "input_ids" not in example:
                raise KeyError(f"Example {index} has no 'input_ids' (keys: {sorted(example)}); {_FEATURISE_HINT}")
            example_ids = _to_tensor(example["input_ids"], np.int64)
            if example_ids.ndim != 1 or example_ids.numel() == 0:
                raise ValueError(
                    f"Example {index}: input_ids must be a non-empty 1-D sequence, got shape {tuple(example_ids.shape)}."
                )
            mask = example.get("attention_mask")
            mask = torch.ones_like(example_ids) if mask is None else _to_tensor(mask, np.int64)
            if mask.shape != example_ids.shape:
                raise ValueError(
                    f"Example {index}: attention_mask shape {tuple(mask.shape)} differs from input_ids shape "
                    f"{tuple(example_ids.shape)}."
                )
            ids.append(example_ids)
            masks.append(mask)
        length = self._padded_length(max(len(example_ids) for example_ids in ids))
        input_ids = torch.full((len(ids), length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
        for row, (example_ids, mask) in enumerate(zip(ids, masks)):
            input_ids[row, : len(example_ids)] = example_ids
            attention_mask[row, : len(mask)] = mask
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _pad_audio(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """`audio_features` `(B, T, D)` zero-padded and `audio_attention_mask` `(B, T)`."""
        frames = []
        for index, example in enumerate(examples):
            if "audio_features" not in example:
                raise KeyError(f"Example {index} has no 'audio_features' (keys: {sorted(example)}); {_FEATURISE_HINT}")
            features = _to_tensor(example["audio_features"], np.float32)
            if features.ndim != 2 or features.shape[0] == 0:
                raise ValueError(
                    f"Example {index}: audio_features must be a non-empty (frames, feature_size) array, got shape "
                    f"{tuple(features.shape)}."
                )
            frames.append(features)
        feature_sizes = {features.shape[1] for features in frames}
        if len(feature_sizes) > 1:
            raise ValueError(f"Examples have different audio feature sizes {sorted(feature_sizes)}; expected one.")
        length = self._padded_length(max(features.shape[0] for features in frames))
        audio_features = torch.zeros((len(frames), length, feature_sizes.pop()), dtype=torch.float32)
        audio_attention_mask = torch.zeros((len(frames), length), dtype=torch.long)
        for row, features in enumerate(frames):
            audio_features[row, : len(features)] = features
            audio_attention_mask[row, : len(features)] = 1
        return {"audio_features": audio_features, "audio_attention_mask": audio_attention_mask}

    def _mask_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MLM corruption (section 3.2.1) of `(B, L)` ids; returns corrupted ids and labels."""
        candidates = attention_mask.bool() & ~torch.isin(input_ids, self._special_ids)
        selected = candidates & (torch.rand(input_ids.shape, generator=generator) < self.mlm_probability)
        labels = input_ids.masked_fill(~selected, -100)
        # One uniform draw per token splits the selected ones exactly into mask / random / keep.
        choice = torch.rand(input_ids.shape, generator=generator)
        to_mask = selected & (choice < self.mask_replace_prob)
        to_random = selected & ~to_mask & (choice < self.mask_replace_prob + self.random_replace_prob)
        corrupted = input_ids.masked_fill(to_mask, self.tokenizer.mask_token_id)
        if to_random.any():
            draws = torch.randint(len(self._replacement_ids), input_ids.shape, generator=generator)
            corrupted = torch.where(to_random, self._replacement_ids[draws], corrupted)
        return corrupted, labels

    def _draw_segment_lengths(self, upper: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """C ~ U{min_segment_length..upper} per utterance; `upper` `(B,)` >= min_segment_length."""
        span = (upper - self.min_segment_length + 1).to(torch.float64)
        draws = torch.rand(upper.shape, generator=generator, dtype=torch.float64)
        return self.min_segment_length + (draws * span).long()

    @staticmethod
    def _rank_without_replacement(valid: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Random ranks `(B, S)` of the valid slots (0 = first drawn); invalid slots rank last."""
        scores = torch.rand(valid.shape, generator=generator).masked_fill(~valid, 2.0)
        return scores.argsort(dim=1).argsort(dim=1)

    def _mask_frames_segment(
        self, features: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Paper MCAM: whole-segment zero / replace / keep. `(B, T, D)`, `(B,)` -> features, `(B, T)` mask."""
        batch_size, max_frames, feature_size = features.shape
        eligible = lengths >= self.min_segment_length
        upper = lengths.clamp(min=self.min_segment_length, max=self.max_segment_length)
        segment_length = self._draw_segment_lengths(upper, generator)  # (B,)
        num_segments = torch.where(eligible, lengths // segment_length, 0)
        # Stochastic rounding of p * S: unbiased for every S, where rounding biases short utterances.
        expected_selected = num_segments.to(torch.float64) * self.mcam_probability
        num_selected = expected_selected.floor().long() + (
            torch.rand(batch_size, generator=generator, dtype=torch.float64) < expected_selected.frac()
        ).long()
        leftover = lengths - num_segments * segment_length
        offset = (torch.rand(batch_size, generator=generator, dtype=torch.float64) * (leftover + 1)).long()

        max_segments = max(int(num_segments.max()), 1)
        segment_index = torch.arange(max_segments)
        ranks = self._rank_without_replacement(segment_index < num_segments[:, None], generator)
        selected = ranks < num_selected[:, None]  # (B, S)
        choice = torch.rand((batch_size, max_segments), generator=generator)
        zeroed = selected & (choice < self.mcam_zero_prob)
        replaced = selected & ~zeroed & (choice < self.mcam_zero_prob + self.mcam_replace_prob)
        # Source block start for replaced segments: uniform over [0, n - C] minus the segment's own start.
        segment_start = offset[:, None] + segment_index * segment_length[:, None]
        other_starts = (lengths - segment_length).clamp(min=0)[:, None]
        source_start = (torch.rand((batch_size, max_segments), generator=generator, dtype=torch.float64) * other_starts).long()
        source_start = torch.where(
            other_starts > 0, source_start + (source_start >= segment_start).long(), segment_start
        )

        # Broadcast the per-segment decisions to frames.
        relative = torch.arange(max_frames)[None, :] - offset[:, None]  # (B, T)
        in_grid = (relative >= 0) & (relative < (num_segments * segment_length)[:, None])
        relative = relative.clamp(min=0)
        frame_segment = (relative // segment_length[:, None]).clamp(max=max_segments - 1)
        label_mask = in_grid & selected.gather(1, frame_segment)
        zero_frames = in_grid & zeroed.gather(1, frame_segment)
        replace_frames = in_grid & replaced.gather(1, frame_segment)
        source_frame = source_start.gather(1, frame_segment) + relative % segment_length[:, None]
        return self._apply_frame_corruption(features, zero_frames, replace_frames, source_frame), label_mask

    def _mask_frames_per_frame(
        self, features: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Released-code MCAM: overlapping segments, per-frame zero / replace / keep. Shapes as above."""
        batch_size, max_frames, _ = features.shape
        segment_length = self._draw_segment_lengths(
            torch.full((batch_size,), self.max_segment_length, dtype=torch.long), generator
        )
        num_starts = (lengths - segment_length).clamp(min=0)  # starts lie in [0, n - C)
        num_segments = torch.minimum(
            torch.round(lengths * self.mcam_probability / segment_length).long(), num_starts
        )
        frame_index = torch.arange(max_frames)
        ranks = self._rank_without_replacement(frame_index[None, :] < num_starts[:, None], generator)
        is_start = (ranks < num_segments[:, None]).long()  # (B, T)
        # Frame t is covered when a segment starts in (t - C, t]: a windowed count via cumulative sums.
        cumulative = torch.nn.functional.pad(is_start.cumsum(dim=1), (1, 0))  # (B, T + 1)
        window_start = (frame_index[None, :] + 1 - segment_length[:, None]).clamp(min=0)
        label_mask = (cumulative[:, 1:] - cumulative.gather(1, window_start)) > 0

        choice = torch.rand((batch_size, max_frames), generator=generator)
        zero_frames = label_mask & (choice < self.mcam_zero_prob)
        replace_frames = label_mask & ~zero_frames & (choice < self.mcam_zero_prob + self.mcam_replace_prob)
        source_frame = (
            torch.rand((batch_size, max_frames), generator=generator, dtype=torch.float64) * lengths[:, None]
        ).long()
        return self._apply_frame_corruption(features, zero_frames, replace_frames, source_frame), label_mask

    @staticmethod
    def _apply_frame_corruption(
        features: torch.Tensor, zero_frames: torch.Tensor, replace_frames: torch.Tensor, source_frame: torch.Tensor
    ) -> torch.Tensor:
        """Zero `zero_frames` and copy ORIGINAL frame `source_frame[b, t]` into `replace_frames` `(B, T)`."""
        # One gather: every frame reads itself, except replaced ones which read their source.
        frame = torch.where(replace_frames, source_frame, torch.arange(features.shape[1]))
        corrupted = features.gather(1, frame[:, :, None].expand_as(features))
        return corrupted.masked_fill(zero_frames[:, :, None], 0.0)
