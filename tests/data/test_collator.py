"""Tests of DataCollatorForCTALPretraining: padding, MLM and MCAM masking statistics (paper 3.2)."""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ctal_hf.data.collator import DataCollatorForCTALPretraining


SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BOS, PAD, EOS, UNK, MASK = range(5)
VOCAB_SIZE = 100
FEATURE_SIZE = 160


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The collator's tensors are small: with other work on the machine, torch's thread pool costs
    far more than it saves (tests went from 0.1 s to 4 s under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {token: index for index, token in enumerate(SPECIALS + [f"w{i}" for i in range(VOCAB_SIZE - len(SPECIALS))])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        mask_token="<mask>",
    )


def frame_codes(utterance: int, num_frames: int) -> np.ndarray:
    """Values unique to (utterance, frame), never 0: tell where a frame's content came from."""
    return 100_000.0 * (utterance + 1) + np.arange(num_frames) + 1


def make_examples(audio_lengths, text_length=12, seed=0, with_specials=True, feature_size=FEATURE_SIZE):
    """Random texts, and audio whose frames hold `frame_codes` (statistics tests use a small
    feature_size: the collator treats every feature dimension alike)."""
    generator = np.random.default_rng(seed)
    examples = []
    for utterance, num_frames in enumerate(audio_lengths):
        ids = generator.integers(len(SPECIALS), VOCAB_SIZE, size=text_length).tolist()
        if with_specials:
            ids[len(ids) // 2] = UNK
            ids = [BOS, *ids, EOS]
        features = np.repeat(frame_codes(utterance, num_frames)[:, None], feature_size, axis=1)
        examples.append({"input_ids": ids, "audio_features": features})
    return examples


def original_features(examples, num_frames):
    batch = torch.zeros((len(examples), num_frames, examples[0]["audio_features"].shape[1]), dtype=torch.float64)
    for row, example in enumerate(examples):
        batch[row, : len(example["audio_features"])] = torch.as_tensor(example["audio_features"])
    return batch


ZERO, KEEP, REPLACE = 0, 1, 2


def classify_frames(batch):
    """MCAM outcome per frame `(B, T)`: ZERO, KEEP (its own content) or REPLACE, and the utterance
    and frame its content came from (see `frame_codes`)."""
    values = batch["audio_features"][:, :, 0].double()
    source_row = torch.div(values, 100_000, rounding_mode="floor").long() - 1
    source_frame = torch.remainder(values, 100_000).long() - 1
    rows = torch.arange(values.shape[0])[:, None]
    frames = torch.arange(values.shape[1])[None, :]
    kind = torch.full(values.shape, REPLACE)
    kind[(source_row == rows) & (source_frame == frames)] = KEEP
    kind[values == 0] = ZERO
    return kind, source_row, source_frame


def runs(mask_row):
    """(start, length) of the runs of True in a 1-D bool tensor."""
    values = mask_row.tolist() + [False]
    result, start = [], None
    for index, value in enumerate(values):
        if value and start is None:
            start = index
        elif not value and start is not None:
            result.append((start, index - start))
            start = None
    return result


# ------------------------------------------------------------------------------------------ padding


def test_padding_shapes_and_masks(tokenizer):
    examples = make_examples([30, 75, 12], text_length=5)
    examples[1]["input_ids"] = examples[1]["input_ids"][:4]
    collator = DataCollatorForCTALPretraining(tokenizer, mlm=False, mcam=False, pad_to_multiple_of=8)
    batch = collator(examples)
    assert set(batch) == {"input_ids", "attention_mask", "audio_features", "audio_attention_mask"}
    assert batch["input_ids"].shape == (3, 8) and batch["input_ids"].dtype == torch.long
    assert batch["audio_features"].shape == (3, 80, FEATURE_SIZE) and batch["audio_features"].dtype == torch.float32
    assert batch["attention_mask"].sum(1).tolist() == [7, 4, 7]
    assert batch["audio_attention_mask"].sum(1).tolist() == [30, 75, 12]
    assert (batch["input_ids"][batch["attention_mask"] == 0] == PAD).all()
    assert (batch["audio_features"][batch["audio_attention_mask"] == 0] == 0).all()
    torch.testing.assert_close(batch["audio_features"].double(), original_features(examples, 80))


def test_existing_padding_is_respected(tokenizer):
    example = {"input_ids": [BOS, 10, 11, EOS, PAD, PAD], "attention_mask": [1, 1, 1, 1, 0, 0],
               "audio_features": np.ones((25, FEATURE_SIZE))}
    collator = DataCollatorForCTALPretraining(tokenizer, mlm_probability=1.0, mcam=False, seed=0)
    batch = collator([example, example])
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
    assert (batch["labels"][:, [0, 3, 4, 5]] == -100).all()
    assert (batch["labels"][:, [1, 2]] != -100).all()


def test_input_types_and_extra_keys(tokenizer):
    examples = make_examples([40, 50])
    examples[0]["input_ids"] = torch.tensor(examples[0]["input_ids"])
    examples[1]["input_ids"] = np.array(examples[1]["input_ids"])
    examples[0]["audio_features"] = torch.as_tensor(examples[0]["audio_features"], dtype=torch.float32)
    for example in examples:
        example.update(length=7, text="a b c", speaker_id=3)
    batch = DataCollatorForCTALPretraining(tokenizer, seed=0)(examples)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "audio_features", "audio_attention_mask",
                          "mcam_labels", "mcam_label_mask"}


def test_bad_input_errors(tokenizer):
    collator = DataCollatorForCTALPretraining(tokenizer)
    with pytest.raises(KeyError, match="audio_features"):
        collator([{"input_ids": [0, 5, 2]}])
    with pytest.raises(ValueError, match="feature sizes"):
        collator([{"input_ids": [0, 5, 2], "audio_features": np.ones((30, 160))},
                  {"input_ids": [0, 5, 2], "audio_features": np.ones((30, 80))}])
    with pytest.raises(ValueError, match="non-empty"):
        collator([{"input_ids": [0, 5, 2], "audio_features": np.ones((0, 160))}])
    with pytest.raises(ValueError, match="empty list"):
        collator([])
    with pytest.raises(ValueError, match="mask_replace_prob"):
        DataCollatorForCTALPretraining(tokenizer, mask_replace_prob=0.95, random_replace_prob=0.1)
    with pytest.raises(ValueError, match="mcam_mode"):
        DataCollatorForCTALPretraining(tokenizer, mcam_mode="span")
    with pytest.raises(ValueError, match="min_segment_length"):
        DataCollatorForCTALPretraining(tokenizer, min_segment_length=60)


# ---------------------------------------------------------------------------------------------- MLM


def test_mlm_statistics(tokenizer):
    collator = DataCollatorForCTALPretraining(tokenizer, mcam=False, seed=1)
    special_ids = set(tokenizer.all_special_ids)
    counts = {"selected": 0, "candidates": 0, "mask": 0, "random": 0, "same": 0}
    for draw in range(15):
        examples = make_examples([25] * 64, text_length=40, seed=draw)
        examples[0]["input_ids"] = examples[0]["input_ids"][:10]  # creates padding in row 0
        original = collator._pad_text(examples)["input_ids"]
        batch = collator(examples)
        ids, labels = batch["input_ids"], batch["labels"]
        selected = labels != -100
        is_special = torch.isin(original, torch.tensor(sorted(special_ids)))
        # Never special or padding; unselected positions untouched; labels hold the original ids.
        assert not (selected & is_special).any()
        assert not (selected & (batch["attention_mask"] == 0)).any()
        assert torch.equal(ids[~selected], original[~selected])
        assert torch.equal(labels[selected], original[selected])
        counts["candidates"] += int((~is_special & (batch["attention_mask"] == 1)).sum())
        counts["selected"] += int(selected.sum())
        counts["mask"] += int((ids[selected] == MASK).sum())
        counts["same"] += int((ids[selected] == original[selected]).sum())
        random_ids = ids[selected & (ids != MASK) & (ids != original)]
        counts["random"] += len(random_ids)
        assert not set(random_ids.tolist()) & special_ids
    rate = counts["selected"] / counts["candidates"]
    assert abs(rate - 0.15) < 0.01
    assert abs(counts["mask"] / counts["selected"] - 0.8) < 0.02
    assert abs(counts["random"] / counts["selected"] - 0.1) < 0.015
    assert abs(counts["same"] / counts["selected"] - 0.1) < 0.015


def test_mlm_probabilities_configurable(tokenizer):
    collator = DataCollatorForCTALPretraining(tokenizer, mcam=False, mlm_probability=0.5, mask_replace_prob=1.0,
                                              random_replace_prob=0.0, seed=0)
    batch = collator(make_examples([25] * 64, text_length=40))
    selected = batch["labels"] != -100
    assert abs(selected.float().sum() / (64 * 40) - 0.5) < 0.03
    assert (batch["input_ids"][selected] == MASK).all()


# --------------------------------------------------------------------------------------------- MCAM


def check_common_mcam_invariants(batch, examples):
    num_frames = batch["audio_features"].shape[1]
    original = original_features(examples, num_frames)
    label_mask = batch["mcam_label_mask"]
    assert label_mask.dtype == torch.bool
    torch.testing.assert_close(batch["mcam_labels"].double(), original)  # targets = original frames
    assert not (label_mask & (batch["audio_attention_mask"] == 0)).any()  # padding never selected
    assert (batch["audio_features"][batch["audio_attention_mask"] == 0] == 0).all()
    unselected = ~label_mask
    assert torch.equal(batch["audio_features"].double()[unselected], original[unselected])


def test_mcam_segment_fraction_on_long_utterances(tokenizer):
    collator = DataCollatorForCTALPretraining(tokenizer, mlm=False, seed=2)
    fractions = []
    for draw in range(4):
        examples = make_examples([3000 - 37 * k for k in range(16)], seed=draw, feature_size=4)
        batch = collator(examples)
        check_common_mcam_invariants(batch, examples)
        lengths = batch["audio_attention_mask"].sum(1)
        fractions += (batch["mcam_label_mask"].sum(1) / lengths).tolist()
    assert all(0.12 <= fraction <= 0.18 for fraction in fractions), fractions
    assert abs(np.mean(fractions) - 0.15) < 0.01


def test_mcam_segment_length_range(tokenizer):
    # 100 frames hold S = floor(100 / C) in 2..5 segments of C in [20, 50]; with p * S < 1 at most one is
    # selected, with probability p * S, so each masked run is one segment of C frames.
    collator = DataCollatorForCTALPretraining(tokenizer, mlm=False, seed=3)
    num_rows, seen = 64 * 20, []
    for draw in range(20):
        batch = collator(make_examples([100] * 64, seed=draw, feature_size=4))
        for row in batch["mcam_label_mask"]:
            row_runs = runs(row)
            assert len(row_runs) <= 1
            seen += [length for _, length in row_runs]
    assert min(seen) == 20 and max(seen) == 50
    assert len(set(seen)) == 31  # every C in {20..50} drawn
    # C is uniform, and C is then selected with probability 0.15 * floor(100 / C).
    weights = {length: 0.15 * (100 // length) for length in range(20, 51)}
    expected_runs = num_rows * np.mean(list(weights.values()))
    assert abs(len(seen) - expected_runs) < 4 * np.sqrt(expected_runs)
    expected_mean = sum(length * weight for length, weight in weights.items()) / sum(weights.values())
    assert abs(np.mean(seen) - expected_mean) < 1.5


@pytest.mark.parametrize("num_frames", [20, 60, 120, 400])
def test_mcam_segment_fraction_is_unbiased_for_every_length(tokenizer, num_frames):
    # floor(p * S) + Bernoulli(frac(p * S)) segments: E[masked fraction] = E_C[p * floor(n / C) * C / n] for
    # C ~ U{20..min(50, n)}, i.e. p up to the unsegmented leftover, also for a single segment (n = 20). Rounding
    # with at least one segment gave 1.0, 0.58, 0.29 and 0.145 for these lengths.
    probability = 0.15
    collator = DataCollatorForCTALPretraining(tokenizer, mlm=False, mcam_probability=probability, seed=8)
    fractions = []
    for draw in range(16):
        batch = collator(make_examples([num_frames] * 256, text_length=3, seed=draw, feature_size=1))
        fractions += (batch["mcam_label_mask"].sum(1) / num_frames).tolist()
    segment_lengths = range(20, min(50, num_frames) + 1)
    expected = np.mean([probability * (num_frames // length) * length / num_frames for length in segment_lengths])
    assert abs(np.mean(fractions) - expected) < 0.15 * expected, (np.mean(fractions), expected)  # >= 4 std errors


def test_mcam_segment_actions_are_per_segment(tokenizer):
    segment = 25
    collator = DataCollatorForCTALPretraining(tokenizer, mlm=False, min_segment_length=segment,
                                              max_segment_length=segment, seed=4)
    counts = {"zero": 0, "replace": 0, "keep": 0}
    for draw in range(25):
        examples = make_examples([1000 - 3 * k for k in range(16)], seed=draw, feature_size=4)
        batch = collator(examples)
        check_common_mcam_invariants(batch, examples)
        kind, source_row, source_frame = classify_frames(batch)
        for row in range(len(examples)):
            for start, length in runs(batch["mcam_label_mask"][row]):
                # Selected segments are grid-aligned, so a run is whole segments from its start.
                assert length % segment == 0
                for block in range(start, start + length, segment):
                    block_kind = kind[row, block : block + segment]
                    if (block_kind == ZERO).all():
                        counts["zero"] += 1
                    elif (block_kind == KEEP).all():
                        counts["keep"] += 1
                    else:
                        # A contiguous block of C original frames of the same utterance, from elsewhere.
                        sources = source_frame[row, block : block + segment]
                        assert (source_row[row, block : block + segment] == row).all()
                        assert torch.equal(sources, sources[0] + torch.arange(segment))
                        assert sources[0] != block
                        assert sources[-1] < len(examples[row]["audio_features"])
                        counts["replace"] += 1
    total = sum(counts.values())
    assert total > 1500
    assert abs(counts["zero"] / total - 0.8) < 0.03
    assert abs(counts["replace"] / total - 0.1) < 0.025
    assert abs(counts["keep"] / total - 0.1) < 0.025


def test_mcam_probabilities_configurable(tokenizer):
    collator = DataCollatorForCTALPretraining(tokenizer, mlm=False, mcam_probability=0.4, mcam_zero_prob=1.0,
                                              mcam_replace_prob=0.0, seed=0)
    examples = make_examples([2000] * 8)
    batch = collator(examples)
    fraction = batch["mcam_label_mask"].float().mean()
    assert 0.36 < fraction < 0.44
    assert (batch["audio_features"][batch["mcam_label_mask"]] == 0).all()


def test_mcam_per_frame_mode(tokenizer):
    collator = DataCollatorForCTALPretraining(tokenizer, mlm=False, mcam_mode="per_frame", seed=5)
    counts = {"zero": 0, "replace": 0, "keep": 0}
    fractions, mixed_runs = [], 0
    for draw in range(8):
        examples = make_examples([1500 - 20 * k for k in range(16)], seed=draw, feature_size=4)
        batch = collator(examples)
        check_common_mcam_invariants(batch, examples)
        kind, source_row, source_frame = classify_frames(batch)
        lengths = batch["audio_attention_mask"].sum(1)
        fractions += (batch["mcam_label_mask"].sum(1) / lengths).tolist()
        selected = batch["mcam_label_mask"]
        replaced = selected & (kind == REPLACE)
        rows = torch.arange(len(examples))[:, None].expand_as(kind)
        assert torch.equal(source_row[replaced], rows[replaced])  # a frame of the same utterance
        assert (source_frame[replaced] < lengths[:, None].expand_as(kind)[replaced]).all()
        for name, code in (("zero", ZERO), ("replace", REPLACE), ("keep", KEEP)):
            counts[name] += int((selected & (kind == code)).sum())
        for row in range(len(examples)):
            for start, length in runs(selected[row]):
                assert length >= 20  # each run is one or more overlapping segments of C >= 20 frames
                mixed_runs += len(set(kind[row, start : start + length].tolist())) > 1
    total = sum(counts.values())
    assert abs(counts["zero"] / total - 0.8) < 0.02
    assert abs(counts["replace"] / total - 0.1) < 0.015
    assert abs(counts["keep"] / total - 0.1) < 0.015
    assert mixed_runs > 100  # the choice is per frame, so runs mix outcomes
    assert 0.10 < np.mean(fractions) < 0.18
    assert max(fractions) < 0.25


def test_per_frame_segment_count(tokenizer):
    # n = 1000, C = 25: round(1000 * 0.15 / 25) = 6 segment starts, possibly overlapping.
    collator = DataCollatorForCTALPretraining(tokenizer, mlm=False, mcam_mode="per_frame", min_segment_length=25,
                                              max_segment_length=25, seed=6)
    batch = collator(make_examples([1000] * 32))
    masked = batch["mcam_label_mask"].sum(1)
    assert (masked <= 150).all() and (masked >= 25).all()
    assert masked.float().mean() > 125  # 6 segments of 25 frames, some overlapping
    for row in batch["mcam_label_mask"]:
        assert not row[975:].all()  # starts lie in [0, n - C), the last frame can only be hit from before


def test_short_utterances(tokenizer):
    lengths = [1, 5, 19, 20, 35, 49]
    segment_masked = np.zeros(3, dtype=bool)
    for mode in ("segment", "per_frame"):
        collator = DataCollatorForCTALPretraining(tokenizer, mlm=False, mcam_mode=mode, seed=7)
        for draw in range(40):
            examples = make_examples(lengths, seed=draw)
            batch = collator(examples)
            check_common_mcam_invariants(batch, examples)
            masked = batch["mcam_label_mask"].sum(1).tolist()
            assert masked[:3] == [0, 0, 0]  # shorter than the minimum segment: nothing masked
            if mode == "segment":
                # At most one segment (p * S < 1), C capped at n; C = 20 covers a 20-frame utterance.
                assert masked[3] in (0, 20) and (masked[4] == 0 or 20 <= masked[4] <= 35)
                assert masked[5] == 0 or 20 <= masked[5] <= 49
                segment_masked += np.array(masked[3:]) > 0
            else:
                assert masked[3:] == [0, 0, 0]  # round(n * 0.15 / C) = 0 segments
    assert segment_masked.all()  # each of them is masked in some draws


def test_single_segment_utterance_replacement_keeps_frames(tokenizer):
    # With n == C there is no other block to copy: "replace" leaves the frames as they are. p = 1 selects the segment.
    collator = DataCollatorForCTALPretraining(tokenizer, mlm=False, mcam_probability=1.0, mcam_zero_prob=0.0,
                                              mcam_replace_prob=1.0, seed=0)
    examples = make_examples([20] * 8)
    batch = collator(examples)
    assert batch["mcam_label_mask"].all()
    torch.testing.assert_close(batch["audio_features"], batch["mcam_labels"])


# ------------------------------------------------------------------------------ switches and seeding


def test_switches_for_ablations(tokenizer):
    examples = make_examples([120, 90])
    plain = DataCollatorForCTALPretraining(tokenizer, mlm=False, mcam=False)(examples)
    text_only = DataCollatorForCTALPretraining(tokenizer, mlm=True, mcam=False, seed=0)(examples)
    audio_only = DataCollatorForCTALPretraining(tokenizer, mlm=False, mcam=True, seed=0)(examples)
    assert "labels" in text_only and "mcam_labels" not in text_only and "mcam_label_mask" not in text_only
    assert torch.equal(text_only["audio_features"], plain["audio_features"])
    assert "labels" not in audio_only and "mcam_labels" in audio_only
    assert torch.equal(audio_only["input_ids"], plain["input_ids"])
    for switches, batch in (((False, False), plain), ((True, False), text_only), ((False, True), audio_only)):
        names = DataCollatorForCTALPretraining(tokenizer, mlm=switches[0], mcam=switches[1]).label_names
        assert names == [key for key in ("labels", "mcam_labels", "mcam_label_mask") if key in batch]


def test_seed_reproducibility(tokenizer):
    batches = [make_examples([300, 500, 800], text_length=30, seed=draw) for draw in range(3)]

    def draws(collator, epoch=0):
        collator.set_epoch(epoch)
        return [collator(examples) for examples in batches]

    for mode in ("segment", "per_frame"):
        first = draws(DataCollatorForCTALPretraining(tokenizer, mcam_mode=mode, seed=123))
        second = draws(DataCollatorForCTALPretraining(tokenizer, mcam_mode=mode, seed=123))
        other = draws(DataCollatorForCTALPretraining(tokenizer, mcam_mode=mode, seed=124))
        for a, b in zip(first, second):
            assert all(torch.equal(a[key], b[key]) for key in a)
        assert not all(torch.equal(a["mcam_label_mask"], c["mcam_label_mask"]) for a, c in zip(first, other))
        # Masks depend on the batch, not on the call order: the same batch again gives the same masks...
        collator = DataCollatorForCTALPretraining(tokenizer, mcam_mode=mode, seed=123)
        again = [collator(examples) for examples in reversed(batches)][::-1]
        for a, b in zip(first, again):
            assert all(torch.equal(a[key], b[key]) for key in a)
        # ...and a new epoch gives new masks (dynamic masking).
        next_epoch = draws(collator, epoch=1)
        assert not torch.equal(first[0]["mcam_label_mask"], next_epoch[0]["mcam_label_mask"])
        assert not torch.equal(first[0]["labels"], next_epoch[0]["labels"])
    # seed=None follows the global torch RNG.
    collator = DataCollatorForCTALPretraining(tokenizer)
    torch.manual_seed(0)
    a = collator(batches[0])
    torch.manual_seed(0)
    b = collator(batches[0])
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_dataloader_workers_do_not_change_masks(tokenizer):
    dataset = [example for draw in range(4) for example in make_examples([400, 380], seed=draw)]
    collator = DataCollatorForCTALPretraining(tokenizer, seed=0)
    loaders = [torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=collator)
               for workers in (0, 2)]
    serial, parallel = ([batch for batch in loader] for loader in loaders)
    for a, b in zip(serial, parallel):
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(serial[0]["mcam_label_mask"], serial[1]["mcam_label_mask"])



def test_feature_transform_runs_before_batching(tokenizer):
    def transform(batch):
        keep = [index for index, text in enumerate(batch["text"]) if text]
        return {"input_ids": [[BOS, 10 + index, EOS] for index in keep],
                "audio_features": [np.ones((30 + index, FEATURE_SIZE)) for index in keep]}

    collator = DataCollatorForCTALPretraining(tokenizer, feature_transform=transform, seed=0)
    batch = collator([{"text": "a"}, {"text": ""}, {"text": "c"}])
    assert batch["input_ids"].shape == (2, 3) and batch["audio_attention_mask"].sum(1).tolist() == [30, 32]
    with pytest.raises(ValueError, match="no example"):
        collator([{"text": ""}])
