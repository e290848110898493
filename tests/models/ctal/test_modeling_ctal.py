"""Model-family tests: shapes, masking semantics, attention backends, losses, tying, checkpoints, learning."""

import copy
import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification
from transformers.utils import logging as transformers_logging

from ctal_hf import CTALConfig, CTALForPreTraining, CTALForSequenceClassification, CTALModel
from ctal_hf.models import flex_attention_cpu
from ctal_hf.models.ctal import modeling_ctal
from ctal_hf.models.ctal.configuration_ctal import CTAL_PRESETS, SHARED_STACK_FIELDS
from ctal_hf.models.flex_attention_cpu import (
    TORCH_CPU_FLEX_ATTENTION_BUG,
    cpu_flex_attention_is_broken,
    warn_if_cpu_flex_attention_is_broken,
)


VOCAB = 50
FEAT = 160


def tiny_config(**overrides) -> CTALConfig:
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        max_audio_frames=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    values.update(overrides)
    return CTALConfig(**values)


def make_model(cls, attn="eager", **overrides):
    torch.manual_seed(0)
    config = tiny_config(**overrides)
    config._attn_implementation = attn
    return cls(config).eval()


def make_batch(batch=2, text_len=9, frames=24, pad_text=(0, 3), pad_audio=(0, 7), seed=0):
    """Right-padded batch; `pad_text[i]`/`pad_audio[i]` padded positions in sample i."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (batch, text_len), generator=gen)
    input_ids[:, 0] = 0
    attention_mask = torch.ones(batch, text_len, dtype=torch.long)
    audio = torch.randn(batch, frames, FEAT, generator=gen)
    audio_mask = torch.ones(batch, frames, dtype=torch.long)
    for i in range(batch):
        if pad_text[i]:
            input_ids[i, -pad_text[i]:] = 1
            attention_mask[i, -pad_text[i]:] = 0
        if pad_audio[i]:
            audio[i, -pad_audio[i]:] = 0.0
            audio_mask[i, -pad_audio[i]:] = 0
    return dict(input_ids=input_ids, attention_mask=attention_mask, audio_features=audio, audio_attention_mask=audio_mask)


# ---------------------------------------------------------------------------------------------- config


def test_config_validation_errors():
    # transformers 5 `@strict` configs raise `StrictDataclassError`s that carry the validator's message.
    with pytest.raises(StrictDataclassError, match="divisible by `num_attention_heads`"):
        CTALConfig(hidden_size=100, num_attention_heads=12)
    with pytest.raises(ValueError, match="audio_hidden_size"):
        CTALConfig(audio_hidden_size=64, audio_num_attention_heads=5)
    with pytest.raises(StrictDataclassError, match="modality_outputs"):
        CTALConfig(modality_outputs="video")
    with pytest.raises(ValueError, match="different sizes"):
        CTALConfig(text_hidden_size=48, audio_hidden_size=96)
    with pytest.raises(StrictDataclassError, match="both 0"):
        CTALConfig(mlm_loss_weight=0, mcam_loss_weight=0)
    with pytest.raises(StrictDataclassError, match="regression_loss"):
        CTALConfig(regression_loss="huber")
    with pytest.raises(StrictDataclassError, match="hidden_dropout_prob"):
        CTALConfig(hidden_dropout_prob=1.5)
    with pytest.raises(StrictDataclassError, match="classifier_head"):
        CTALConfig(classifier_head="released")
    with pytest.raises(StrictDataclassError, match=r"mask_token_id` \(60\) must be in \[0, vocab_size=50\)"):
        CTALConfig(vocab_size=50, mask_token_id=60)
    with pytest.raises(StrictDataclassError, match="hidden_act"):
        CTALConfig(hidden_act="swishy")
    with pytest.raises(ValueError, match="Unknown CTAL preset"):
        CTALConfig.from_preset("ctal-huge")


def test_presets_and_shared_sizes():
    base, large = CTALConfig.from_preset("ctal-base"), CTALConfig.from_preset("ctal-large")
    assert (base.num_hidden_layers, base.num_attention_heads, base.hidden_size) == (3, 12, 768)
    assert (large.num_hidden_layers, large.hidden_size) == (6, 768)
    assert base.audio_feature_size == 160 and base.max_audio_frames == 3000
    assert base.audio_causal_self_attention is False
    # One set of sizes builds both stacks (paper section 4.1: N layers per stack).
    model = CTALModel(CTALConfig(hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=2))
    assert len(model.text_encoder.layer) == len(model.audio_encoder.layer) == 2
    assert model.audio_encoder.layer[1].crossattention.self.key.in_features == 32
    assert model.text_encoder.layer[0].feed_forward.intermediate.out_features == 48
    assert model.audio_encoder.layer[0].feed_forward.intermediate.out_features == 48
    assert CTALConfig.from_preset("ctal-base", audio_causal_self_attention=True).audio_causal_self_attention


def test_config_round_trip(tmp_path):
    config = tiny_config(audio_causal_self_attention=True, use_fusion=False, num_hidden_layers=1)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, CTALConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


def _count(model: nn.Module) -> int:
    # Tied parameters are one tensor: count each storage once.
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_preset_parameter_counts(capsys):
    """Printed with `pytest -s`; the README documents these numbers and why they exceed the paper's 60M / 110M."""
    counts = {}
    for name in CTAL_PRESETS:
        with torch.device("meta"):
            model = CTALForPreTraining(CTALConfig.from_preset(name))
        counts[name] = (_count(model.ctal), _count(model))
        print(f"{name}: CTALModel {counts[name][0] / 1e6:.1f}M, CTALForPreTraining {counts[name][1] / 1e6:.1f}M")
    # Per-layer sizes at H=768, FFN 3072: text 7.09M, audio (self + cross + FFN) 9.45M; embeddings 25.9M.
    assert counts["ctal-base"][0] == pytest.approx(75.5e6, rel=0.005)
    assert counts["ctal-large"][0] == pytest.approx(125.1e6, rel=0.005)


# ---------------------------------------------------------------------------------------------- shapes


def test_output_shapes_and_tuples():
    model = make_model(CTALModel)
    batch = make_batch()
    out = model(**batch, output_hidden_states=True, output_attentions=True)
    assert out.text_last_hidden_state.shape == (2, 9, 32) and out.text_last_hidden_state.dtype == torch.float32
    assert out.audio_last_hidden_state.shape == (2, 24, 32)
    assert len(out.text_hidden_states) == 3 and len(out.audio_hidden_states) == 3
    assert all(h.shape == (2, 24, 32) for h in out.audio_hidden_states)
    assert [a.shape for a in out.text_attentions] == [(2, 4, 9, 9)] * 2
    assert [a.shape for a in out.audio_attentions] == [(2, 4, 24, 24)] * 2
    assert [a.shape for a in out.cross_attentions] == [(2, 4, 24, 9)] * 2
    # Attention rows are distributions and never look at padding.
    assert torch.allclose(out.cross_attentions[0].sum(-1), torch.ones(2, 4, 24), atol=1e-5)
    assert out.cross_attentions[0][1, :, :, -3:].abs().max() == 0
    assert out.audio_attentions[0][1, :, :, -7:].abs().max() == 0

    tup = model(**batch, return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 2
    assert torch.equal(tup[0], out.text_last_hidden_state) and torch.equal(tup[1], out.audio_last_hidden_state)

    text_only = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert text_only.audio_last_hidden_state is None
    assert torch.allclose(text_only.text_last_hidden_state, out.text_last_hidden_state)


def test_pretraining_and_classification_shapes():
    batch = make_batch()
    pre = make_model(CTALForPreTraining)
    out = pre(**batch, labels=batch["input_ids"], mcam_labels=batch["audio_features"],
              mcam_label_mask=batch["audio_attention_mask"])
    # With labels, logits only at the labelled tokens (all 18 here); `full_mlm_logits=True` gives every token's.
    assert out.mlm_logits.shape == (18, VOCAB) and out.mcam_predictions.shape == (2, 24, FEAT)
    assert pre(**batch, labels=batch["input_ids"], full_mlm_logits=True).mlm_logits.shape == (2, 9, VOCAB)
    assert out.loss.shape == () and out.mlm_loss.shape == () and out.mcam_loss.shape == ()
    loss, mlm, mcam, *_ = pre(**batch, labels=batch["input_ids"], mcam_labels=batch["audio_features"],
                              mcam_label_mask=batch["audio_attention_mask"], return_dict=False)
    assert torch.equal(loss, out.loss) and torch.equal(mlm, out.mlm_loss)

    for overrides, width in [({}, 64), ({"use_fusion": False}, 64), ({"modality_outputs": "audio"}, 64),
                             ({"modality_outputs": "text"}, 64)]:
        cls = make_model(CTALForSequenceClassification, num_labels=4, **overrides)
        out = cls(**batch, labels=torch.tensor([0, 3]))
        assert out.logits.shape == (2, 4) and out.embeddings.shape == (2, width) and out.loss.shape == ()
        assert (out.orthogonal_loss is not None) == (overrides == {})


def test_input_errors():
    model = make_model(CTALModel)
    batch = make_batch()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(batch, frames, 160\)"):
        model(input_ids=batch["input_ids"], audio_features=torch.randn(2, 10, 80))
    with pytest.raises(ValueError, match="max_audio_frames"):
        model(input_ids=batch["input_ids"], audio_features=torch.randn(2, 65, FEAT))
    with pytest.raises(ValueError, match="exactly one"):
        model(audio_features=batch["audio_features"])
    pre = make_model(CTALForPreTraining)
    with pytest.raises(ValueError, match="together"):
        pre(**batch, mcam_labels=batch["audio_features"])


def bad_inputs(batch):
    """(overrides of a batch of 2 texts x 9 tokens and 2 utterances x 24 frames, expected message) pairs."""
    ids = batch["input_ids"]
    return [
        (
            {"audio_features": batch["audio_features"][:1], "audio_attention_mask": batch["audio_attention_mask"][:1]},
            r"`audio_features` hold 1 utterances \(shape \(1, 24, 160\)\) but `input_ids` hold 2 texts "
            r"\(shape \(2, 9\)\): pass one transcript per utterance",
        ),
        (
            {"input_ids": ids.masked_fill(ids == ids[0, 3], VOCAB)},
            rf"`input_ids` hold ids from 0 to {VOCAB}, outside the model's vocabulary \[0, {VOCAB}\)",
        ),
        (
            {"input_ids": ids.masked_fill(ids == ids[0, 3], -1)},
            rf"`input_ids` hold ids from -1 to \d+, outside the model's vocabulary \[0, {VOCAB}\)",
        ),
        (
            {"attention_mask": batch["attention_mask"][:, :8]},
            r"`attention_mask` has shape \(2, 8\) but `input_ids` has shape \(2, 9\): .* shape \(2, 9\)",
        ),
        (
            {"attention_mask": batch["attention_mask"][:, None, :]},
            r"`attention_mask` has shape \(2, 1, 9\) but `input_ids` has shape \(2, 9\)",
        ),
        (
            {"audio_attention_mask": batch["audio_attention_mask"][:, :20]},
            r"`audio_attention_mask` has shape \(2, 20\) but `audio_features` have shape \(2, 24, 160\): .* "
            r"shape \(2, 24\)",
        ),
        ({"input_ids": ids.float()}, r"`input_ids` must be integer token ids of shape \(batch, text_length\)"),
        ({"input_ids": ids[0]}, r"`input_ids` must be integer token ids .* got shape \(9,\)"),
    ]


@pytest.mark.parametrize("cls", [CTALModel, CTALForPreTraining, CTALForSequenceClassification])
def test_inconsistent_inputs_name_the_tensors(cls):
    model = make_model(cls)
    batch = make_batch()
    for overrides, message in bad_inputs(batch):
        with pytest.raises(ValueError, match=message):
            model(**{**batch, **overrides})
    with pytest.raises(ValueError, match="`audio_attention_mask` was given without `audio_features`"):
        make_model(CTALModel)(input_ids=batch["input_ids"], audio_attention_mask=batch["audio_attention_mask"])


def test_pretraining_targets_must_match_the_inputs():
    model = make_model(CTALForPreTraining)
    batch = make_batch()
    mask = batch["audio_attention_mask"].bool()
    for overrides, message in [
        ({"labels": batch["input_ids"][:, :5]}, r"`labels` has shape \(2, 5\) but `input_ids` has shape \(2, 9\)"),
        (
            {"mcam_labels": batch["audio_features"][:, :10], "mcam_label_mask": mask},
            r"`mcam_labels` has shape \(2, 10, 160\) but `audio_features` has shape \(2, 24, 160\)",
        ),
        (
            {"mcam_labels": batch["audio_features"], "mcam_label_mask": mask[:, :10]},
            r"`mcam_label_mask` has shape \(2, 10\) .* expected \(2, 24\)",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            model(**batch, **overrides)


# ---------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("causal", [False, True])
def test_padding_invariance(attn, causal):
    model = make_model(CTALModel, attn=attn, audio_causal_self_attention=causal)
    batch = make_batch()
    out = model(**batch)
    changed = copy.deepcopy(batch)
    changed["input_ids"][1, -3:] = torch.tensor([7, 8, 9])
    changed["audio_features"][1, -7:] = 100.0
    out2 = model(**changed)
    torch.testing.assert_close(out2.text_last_hidden_state[1, :6], out.text_last_hidden_state[1, :6], atol=1e-5, rtol=0)
    torch.testing.assert_close(out2.audio_last_hidden_state[1, :17], out.audio_last_hidden_state[1, :17], atol=1e-5, rtol=0)
    # Each sample alone (no padding at all) equals its row of the padded batch.
    for i, (n_text, n_audio) in enumerate([(9, 24), (6, 17)]):
        alone = model(input_ids=batch["input_ids"][i : i + 1, :n_text],
                      audio_features=batch["audio_features"][i : i + 1, :n_audio])
        torch.testing.assert_close(alone.text_last_hidden_state[0], out.text_last_hidden_state[i, :n_text], atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.audio_last_hidden_state[0], out.audio_last_hidden_state[i, :n_audio], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_classification_padding_invariance(attn):
    model = make_model(CTALForSequenceClassification, attn=attn, num_labels=3)
    batch = make_batch()
    out = model(**batch)
    changed = copy.deepcopy(batch)
    changed["input_ids"][1, -3:] = 11
    changed["audio_features"][1, -7:] = -50.0
    torch.testing.assert_close(model(**changed).logits, out.logits, atol=1e-5, rtol=0)
    alone = model(input_ids=batch["input_ids"][1:, :6], audio_features=batch["audio_features"][1:, :17])
    torch.testing.assert_close(alone.embeddings[0], out.embeddings[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
def test_audio_attention_direction(attn, padded):
    batch = make_batch(pad_text=(0, 3) if padded else (0, 0), pad_audio=(0, 7) if padded else (0, 0))
    t = 10  # a frame inside the valid part of every sample
    changed = copy.deepcopy(batch)
    changed["audio_features"][:, t] += 5.0

    bidirectional = make_model(CTALModel, attn=attn)
    before = bidirectional(**batch).audio_last_hidden_state
    after = bidirectional(**changed).audio_last_hidden_state
    assert (after[:, :t] - before[:, :t]).abs().amax() > 1e-3, "a later frame must influence earlier frames"

    causal = make_model(CTALModel, attn=attn, audio_causal_self_attention=True)
    before = causal(**batch).audio_last_hidden_state
    after = causal(**changed).audio_last_hidden_state
    assert torch.equal(after[:, :t], before[:, :t]), "causal audio attention must not see later frames"
    assert (after[:, t:] - before[:, t:]).abs().amax() > 1e-3


@pytest.mark.parametrize("causal", [False, True])
def test_eager_matches_sdpa(causal):
    batch = make_batch()
    eager = make_model(CTALForPreTraining, attn="eager", audio_causal_self_attention=causal)
    sdpa = make_model(CTALForPreTraining, attn="sdpa", audio_causal_self_attention=causal)
    sdpa.load_state_dict(eager.state_dict())
    out_e, out_s = eager(**batch), sdpa(**batch)
    for name in ("text_last_hidden_state", "audio_last_hidden_state", "mlm_logits", "mcam_predictions"):
        valid = batch["attention_mask"] if name in ("text_last_hidden_state", "mlm_logits") else batch["audio_attention_mask"]
        diff = (out_e[name] - out_s[name]).abs()[valid.bool()]
        assert diff.max() < 1e-5, name


# ---------------------------------------------------------------------------------------------- losses


def test_pretraining_losses_match_hand_computation():
    model = make_model(CTALForPreTraining, mlm_loss_weight=0.7, mcam_loss_weight=2.0)
    batch = make_batch()
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, 2], labels[1, 4], labels[1, 1] = 7, 12, 30
    targets = torch.randn(2, 24, FEAT)
    frame_mask = torch.zeros(2, 24, dtype=torch.bool)
    frame_mask[0, 3:6] = True
    frame_mask[1, 0:2] = True
    out = model(**batch, labels=labels, mcam_labels=targets, mcam_label_mask=frame_mask, full_mlm_logits=True)

    logp = out.mlm_logits.log_softmax(-1)
    expected_mlm = -(logp[0, 2, 7] + logp[1, 4, 12] + logp[1, 1, 30]) / 3
    abs_err = (out.mcam_predictions - targets).abs()
    expected_mcam = (abs_err[0, 3:6].sum() + abs_err[1, 0:2].sum()) / (5 * FEAT)
    torch.testing.assert_close(out.mlm_loss, expected_mlm, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mcam_loss, expected_mcam, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, 0.7 * expected_mlm + 2.0 * expected_mcam, atol=1e-5, rtol=1e-5)

    # Nothing selected: the loss is 0, not NaN.
    empty = model(**batch, labels=torch.full_like(labels, -100), mcam_labels=targets,
                  mcam_label_mask=torch.zeros_like(frame_mask))
    assert empty.mlm_loss.item() == 0.0 and empty.mcam_loss.item() == 0.0


def test_pretraining_ablation_switches():
    batch = make_batch()
    labels = batch["input_ids"].clone()
    kwargs = dict(labels=labels, mcam_labels=batch["audio_features"], mcam_label_mask=batch["audio_attention_mask"])
    full = make_model(CTALForPreTraining)(**batch, **kwargs)
    mlm_only = make_model(CTALForPreTraining, mcam_loss_weight=0.0)(**batch, **kwargs)
    mcam_only = make_model(CTALForPreTraining, mlm_loss_weight=0.0)(**batch, **kwargs)
    assert mlm_only.mcam_loss is None and torch.allclose(mlm_only.loss, full.mlm_loss)
    assert mcam_only.mlm_loss is None and torch.allclose(mcam_only.loss, full.mcam_loss)


def test_orthogonal_loss_value_and_training_only():
    model = make_model(CTALForSequenceClassification, num_labels=3, orthogonal_loss_weight=0.5)
    batch = make_batch()
    labels = torch.tensor([0, 2])
    out = model(**batch, labels=labels, output_hidden_states=True)
    text = out.text_hidden_states[-1]
    audio = out.audio_hidden_states[-1]
    text_mask, audio_mask = batch["attention_mask"].bool(), batch["audio_attention_mask"].bool()
    h_w_attn = text[:, 0]
    h_w_max = torch.stack([text[i][text_mask[i]].max(0).values for i in range(2)])
    pool = model.audio_pooling
    h_a_attn, h_a_max = [], []
    for i in range(2):
        valid = audio[i][audio_mask[i]]
        weights = torch.softmax(pool.score(torch.tanh(pool.dense(valid))).squeeze(-1), dim=0)
        h_a_attn.append(weights @ valid)
        h_a_max.append(valid.max(0).values)
    h_a_attn, h_a_max = torch.stack(h_a_attn), torch.stack(h_a_max)

    def ortho(a, s):
        return ((a * s).sum(-1).abs() / (a.norm(dim=-1) * s.norm(dim=-1))).mean()

    torch.testing.assert_close(out.orthogonal_loss, ortho(h_a_attn, h_w_attn) + ortho(h_a_max, h_w_max), atol=1e-5, rtol=1e-5)
    fused = torch.cat([h_a_attn + h_w_attn, h_a_max + h_w_max], -1)
    torch.testing.assert_close(out.embeddings, fused, atol=1e-5, rtol=1e-5)
    task = nn.functional.cross_entropy(model.classifier(fused), labels)
    torch.testing.assert_close(out.loss, task, atol=1e-5, rtol=1e-5)  # eval: no orthogonal term
    model.train()
    train_out = model(**batch, labels=labels)
    torch.testing.assert_close(train_out.loss, task + 0.5 * out.orthogonal_loss, atol=1e-5, rtol=1e-5)


def test_table4_fine_tuning_rows():
    """Row d ("w/o Orthogonal Fusion") is `use_fusion=False`: `h_w^attn (+) h_a^attn`. Row e ("w/o Audio Outputs") is
    `modality_outputs="text"`, row f ("w/o Language Outputs") `"audio"`: each uses `h^attn (+) h^max` of its own
    stream only."""
    batch = make_batch()
    text_mask, audio_mask = batch["attention_mask"].bool(), batch["audio_attention_mask"].bool()

    def audio_pools(model, audio):
        pool = model.audio_pooling
        attn, most = [], []
        for i in range(2):
            valid = audio[i][audio_mask[i]]
            attn.append(torch.softmax(pool.score(torch.tanh(pool.dense(valid))).squeeze(-1), dim=0) @ valid)
            most.append(valid.max(0).values)
        return torch.stack(attn), torch.stack(most)

    row_d = make_model(CTALForSequenceClassification, num_labels=3, use_fusion=False)
    out = row_d(**batch, output_hidden_states=True)
    audio_attn, _ = audio_pools(row_d, out.audio_hidden_states[-1])
    torch.testing.assert_close(out.embeddings, torch.cat([out.text_hidden_states[-1][:, 0], audio_attn], -1))

    row_e = make_model(CTALForSequenceClassification, num_labels=3, modality_outputs="text")
    out = row_e(**batch, output_hidden_states=True)
    text = out.text_hidden_states[-1]
    text_max = torch.stack([text[i][text_mask[i]].max(0).values for i in range(2)])
    torch.testing.assert_close(out.embeddings, torch.cat([text[:, 0], text_max], -1))
    text_only = row_e(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    torch.testing.assert_close(text_only.logits, out.logits)
    assert row_e.audio_pooling is None

    row_f = make_model(CTALForSequenceClassification, num_labels=3, modality_outputs="audio")
    out = row_f(**batch, output_hidden_states=True)
    torch.testing.assert_close(out.embeddings, torch.cat(audio_pools(row_f, out.audio_hidden_states[-1]), -1))
    with pytest.raises(ValueError, match="audio_features"):
        row_f(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def test_regression_and_multilabel_losses():
    batch = make_batch()
    targets = torch.tensor([0.5, -2.0])
    for loss_name, fn in [("l1", nn.functional.l1_loss), ("mse", nn.functional.mse_loss)]:
        model = make_model(CTALForSequenceClassification, num_labels=1, regression_loss=loss_name)
        out = model(**batch, labels=targets)
        assert model.config.problem_type == "regression"
        torch.testing.assert_close(out.loss, fn(out.logits.squeeze(-1), targets))
    model = make_model(CTALForSequenceClassification, num_labels=3)
    multi = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = model(**batch, labels=multi)
    assert model.config.problem_type == "multi_label_classification"
    torch.testing.assert_close(out.loss, nn.functional.binary_cross_entropy_with_logits(out.logits, multi))


# ---------------------------------------------------------------------------------------------- training


def test_gradient_checkpointing_same_loss_and_gradients():
    batch = make_batch()
    kwargs = dict(labels=batch["input_ids"], mcam_labels=batch["audio_features"], mcam_label_mask=batch["audio_attention_mask"])
    plain = make_model(CTALForPreTraining).train()
    ckpt = make_model(CTALForPreTraining).train()
    ckpt.activation_checkpointing_enable()
    assert ckpt.ctal.audio_encoder.layer[0].gradient_checkpointing
    loss_plain = plain(**batch, **kwargs).loss
    loss_ckpt = ckpt(**batch, **kwargs).loss
    loss_plain.backward()
    loss_ckpt.backward()
    torch.testing.assert_close(loss_ckpt, loss_plain, atol=1e-5, rtol=0)
    for (name, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=0, msg=name)


def test_optimiser_steps_reduce_pretraining_loss():
    model = make_model(CTALForPreTraining).train()
    batch = make_batch()
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 1:5] = batch["input_ids"][:, 1:5]
    masked = dict(batch)
    masked["input_ids"] = batch["input_ids"].masked_fill(labels != -100, 4)
    frame_mask = torch.zeros(2, 24, dtype=torch.bool)
    frame_mask[:, 4:10] = True
    masked["audio_features"] = batch["audio_features"].masked_fill(frame_mask[..., None], 0.0)
    kwargs = dict(labels=labels, mcam_labels=batch["audio_features"], mcam_label_mask=frame_mask)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model(**masked, **kwargs)
    for _ in range(30):
        out = model(**masked, **kwargs)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    last = model(**masked, **kwargs)
    assert last.mlm_loss < 0.5 * first.mlm_loss
    assert last.mcam_loss < 0.9 * first.mcam_loss


# ---------------------------------------------------------------------------------------------- checkpoints


def test_mlm_decoder_tied_after_save_and_load(tmp_path):
    model = make_model(CTALForPreTraining)
    assert model.mlm_head.decoder.weight is model.ctal.text_embeddings.word_embeddings.weight
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert isinstance(loaded, CTALForPreTraining)
    assert loaded.mlm_head.decoder.weight is loaded.ctal.text_embeddings.word_embeddings.weight
    with torch.no_grad():
        loaded.ctal.text_embeddings.word_embeddings.weight[5] += 1.0
    assert torch.equal(loaded.mlm_head.decoder.weight[5], loaded.ctal.text_embeddings.word_embeddings.weight[5])


@pytest.mark.parametrize(
    "cls, auto", [(CTALModel, AutoModel), (CTALForPreTraining, AutoModelForPreTraining),
                  (CTALForSequenceClassification, AutoModelForSequenceClassification)]
)
def test_save_and_auto_load_identical(tmp_path, cls, auto):
    model = make_model(cls, num_labels=3)
    batch = make_batch()
    model.save_pretrained(tmp_path)
    loaded = auto.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(loaded) is cls
    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded_state[name], tensor), name
    # Same weights, but the loaded ones sit at other memory alignments, which can change the summation order of the
    # CPU's kernels (and so the last bits) depending on its vector width: outputs agree to float32 rounding.
    for key, value in model(**batch).items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(loaded(**batch)[key], value, atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize("head_cls", [CTALForPreTraining, CTALForSequenceClassification])
def test_base_model_loads_from_head_checkpoints(tmp_path, head_cls):
    head = make_model(head_cls, num_labels=2)
    head.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    batch = make_batch()
    expected = head.ctal(**batch)
    got = base(**batch)
    # Loaded weights sit at other memory alignments: equal to float32 rounding (see test_save_and_auto_load_identical).
    torch.testing.assert_close(got.audio_last_hidden_state, expected.audio_last_hidden_state, atol=1e-6, rtol=0)
    # And the other way: a classifier initialised from a pre-training checkpoint keeps the encoder.
    if head_cls is CTALForPreTraining:
        clf = CTALForSequenceClassification.from_pretrained(tmp_path, num_labels=4, attn_implementation="eager").eval()
        torch.testing.assert_close(
            clf.ctal(**batch).text_last_hidden_state, expected.text_last_hidden_state, atol=1e-6, rtol=0
        )


# ---------------------------------------------------------------------------------------------- released-code head


def released_code_head(model, text, audio, text_mask, audio_mask):
    """The head of the authors' fine-tuning code, written from /work/shared/docs/original-ctal-code.md ("Fine-tuning
    head as coded") with the code's own additive -10000 masking: returns (embeddings, logits, the four pooled
    vectors)."""
    config = model.config
    tm, am = text_mask[..., None].float(), audio_mask[..., None].float()
    pooled_t = max_t = pooled_a = max_a = None
    if config.modality_outputs != "audio":
        t = torch.tanh(text @ model.text_projection.weight.T + model.text_projection.bias)
        pooled_t = t[:, 0]
        max_t = (t * tm - 10000.0 * (1 - tm))[:, 1:].max(dim=1).values
    if config.modality_outputs != "text":
        a = torch.tanh(audio @ model.audio_projection.weight.T + model.audio_projection.bias)
        scores = a @ model.audio_attention.weight.T + model.audio_attention.bias
        weights = torch.softmax(scores * am - 10000.0 * (1 - am), dim=1)
        pooled_a = (weights * a).sum(dim=1)
        max_a = (a * am - 10000.0 * (1 - am)).max(dim=1).values
    if config.modality_outputs == "text":
        fused = torch.cat([pooled_t, max_t], -1)
    elif config.modality_outputs == "audio":
        fused = torch.cat([pooled_a, max_a], -1)
    elif config.use_fusion:
        fused = torch.cat([pooled_t + pooled_a, max_t + max_a], -1)
    else:
        fused = torch.cat([pooled_t, pooled_a], -1)
    embeddings = torch.tanh(fused @ model.fusion_projection.weight.T + model.fusion_projection.bias)
    return embeddings, embeddings @ model.classifier.weight.T, (pooled_t, max_t, pooled_a, max_a)


@pytest.mark.parametrize(
    "overrides", [{}, {"use_fusion": False}, {"modality_outputs": "text"}, {"modality_outputs": "audio"}]
)
def test_released_code_head_computes_the_documented_formulas(overrides):
    model = make_model(CTALForSequenceClassification, num_labels=3, classifier_head="original_code", **overrides)
    assert model.classifier.bias is None and not hasattr(model, "audio_pooling")
    batch = make_batch()
    out = model(**batch, output_hidden_states=True)
    assert out.logits.shape == (2, 3) and out.embeddings.shape == (2, 64)
    embeddings, logits, (pooled_t, max_t, pooled_a, max_a) = released_code_head(
        model, out.text_hidden_states[-1], out.audio_hidden_states[-1], batch["attention_mask"],
        batch["audio_attention_mask"],
    )
    torch.testing.assert_close(out.embeddings, embeddings, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits, logits, atol=1e-6, rtol=1e-5)
    if overrides:
        assert out.orthogonal_loss is None
    else:
        # The orthogonal term pairs the pooled vectors after the tanh projections, as the released code does.
        cosine = nn.functional.cosine_similarity
        expected = cosine(pooled_a, pooled_t).abs().mean() + cosine(max_a, max_t).abs().mean()
        torch.testing.assert_close(out.orthogonal_loss, expected, atol=1e-6, rtol=1e-5)


def test_released_code_head_is_a_different_computation():
    batch = make_batch()
    paper = make_model(CTALForSequenceClassification, num_labels=3)
    original = make_model(CTALForSequenceClassification, num_labels=3, classifier_head="original_code")
    paper_heads = {name.split(".")[0] for name, _ in paper.named_parameters() if not name.startswith("ctal.")}
    original_heads = {name.split(".")[0] for name, _ in original.named_parameters() if not name.startswith("ctal.")}
    assert paper_heads == {"audio_pooling", "classifier"}
    assert original_heads == {
        "text_projection", "audio_projection", "audio_attention", "fusion_projection", "classifier"
    }
    # Same seed, same encoder: only the head differs, and it changes the utterance vector.
    assert torch.equal(original.ctal(**batch).text_last_hidden_state, paper.ctal(**batch).text_last_hidden_state)
    paper_out, original_out = paper(**batch), original(**batch)
    assert not torch.allclose(original_out.embeddings, paper_out.embeddings, atol=1e-3)
    # The released head's utterance vector is a tanh output; the paper's h^fuse is not bounded.
    assert original_out.embeddings.abs().max() < 1 and paper_out.embeddings.abs().max() > 1


def test_released_code_head_save_and_load(tmp_path):
    model = make_model(CTALForSequenceClassification, num_labels=3, classifier_head="original_code")
    batch = make_batch()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["classifier_head"] == "original_code"
    loaded, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert type(loaded) is CTALForSequenceClassification and loaded.config.classifier_head == "original_code"
    loaded.eval()
    for key in ("logits", "embeddings"):
        torch.testing.assert_close(loaded(**batch)[key], model(**batch)[key], atol=1e-6, rtol=0, msg=key)
    # The encoder alone loads from it too, leaving the head behind.
    base, info = AutoModel.from_pretrained(tmp_path, attn_implementation="eager", output_loading_info=True)
    assert not info["missing_keys"]
    torch.testing.assert_close(
        base.eval()(**batch).audio_last_hidden_state, model.ctal(**batch).audio_last_hidden_state, atol=1e-6, rtol=0
    )


# ---------------------------------------------------------------------------------------------- edge cases


def test_config_from_pretrained_overrides_are_validated(tmp_path):
    config = tiny_config(num_hidden_layers=1)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not {prefix + field for prefix in ("text_", "audio_") for field in SHARED_STACK_FIELDS} & set(saved)
    loaded = CTALConfig.from_pretrained(tmp_path, hidden_size=64, intermediate_size=96)
    assert (loaded.hidden_size, loaded.num_hidden_layers, loaded.intermediate_size) == (64, 1, 96)
    # The keyword arguments are applied after construction; validation runs after them too.
    with pytest.raises(StrictDataclassError, match="divisible by `num_attention_heads`"):
        CTALConfig.from_pretrained(tmp_path, hidden_size=50)
    with pytest.raises(StrictDataclassError, match="divisible by `num_attention_heads`"):
        AutoConfig.from_pretrained(tmp_path, hidden_size=50)
    loaded.hidden_size = 50
    with pytest.raises(StrictDataclassError, match="divisible by `num_attention_heads`"):
        loaded.validate()
    with pytest.raises(StrictDataclassError, match="divisible by `num_attention_heads`"):
        loaded.save_pretrained(tmp_path / "invalid")


def test_causal_switch_is_fixed_at_construction():
    """Editing the config of a built model must not split the mask from the attention modules' `is_causal`."""
    batch = make_batch(pad_text=(0, 0), pad_audio=(0, 0))
    changed = copy.deepcopy(batch)
    changed["audio_features"][:, 10] += 5.0
    for attn in ("eager", "sdpa"):
        model = make_model(CTALModel, attn=attn, audio_causal_self_attention=True)
        model.config.audio_causal_self_attention = False
        before, after = model(**batch).audio_last_hidden_state, model(**changed).audio_last_hidden_state
        assert torch.equal(after[:, :10], before[:, :10]), attn


def test_resize_token_embeddings_keeps_pretraining_head_working():
    model = make_model(CTALForPreTraining)
    bias = model.mlm_head.bias.detach().clone()
    model.resize_token_embeddings(VOCAB + 10)
    batch = make_batch()
    out = model(**batch, labels=batch["input_ids"])
    assert out.mlm_logits.shape[-1] == VOCAB + 10 and torch.isfinite(out.loss)
    assert model.mlm_head.decoder.weight is model.ctal.text_embeddings.word_embeddings.weight
    assert torch.equal(model.mlm_head.bias[:VOCAB], bias)


def test_empty_batch_and_all_padding_rows():
    model = make_model(CTALForSequenceClassification, num_labels=2)
    empty = make_batch()
    empty = {key: value[:0] for key, value in empty.items()}
    assert model(**empty).logits.shape == (0, 2)
    batch = make_batch()
    batch["audio_attention_mask"][1] = 0  # a sample whose audio is all padding still gives finite outputs
    assert torch.isfinite(model(**batch).logits).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_half_precision_takes_float32_features(dtype, attn):
    model = make_model(CTALForPreTraining, attn=attn).to(dtype)
    batch = make_batch()  # float32 audio features, as the processor returns them
    out = model(**batch, labels=batch["input_ids"], mcam_labels=batch["audio_features"],
                mcam_label_mask=batch["audio_attention_mask"])
    assert out.mcam_predictions.dtype == dtype and torch.isfinite(out.loss)


def test_flash_attention_is_not_offered():
    """The audio-to-text cross-attention has different query and key padding, which flash attention's unpadding
    does not support: the model refuses it rather than computing wrong outputs."""
    assert not CTALModel._supports_flash_attn


def require_working_cpu_flex_attention():
    if cpu_flex_attention_is_broken():
        pytest.skip(f"skipped on this CPU: {TORCH_CPU_FLEX_ATTENTION_BUG}")


def assert_flex_matches_eager(causal, frames, **overrides):
    batch = make_batch(frames=frames)
    eager = make_model(CTALModel, attn="eager", audio_causal_self_attention=causal, **overrides)
    flex = make_model(CTALModel, attn="flex_attention", audio_causal_self_attention=causal, **overrides)
    flex.load_state_dict(eager.state_dict())
    with torch.no_grad():
        out_e, out_f = eager(**batch), flex(**batch)
    for name, mask in (("text_last_hidden_state", "attention_mask"), ("audio_last_hidden_state", "audio_attention_mask")):
        assert (out_e[name] - out_f[name]).abs()[batch[mask].bool()].max() < 1e-5, name


@pytest.mark.parametrize("causal", [False, True])
def test_flex_attention_matches_eager(causal):
    """Flex attention's masks (padding, causality, audio-to-text cross-attention) on a shape that no CPU's compiled
    flex kernel gets wrong: head size 32 (the faulty path needs a head size below 24) and key lengths 9 and 21 (not 8
    mod 16). On CPU flex attention has no backward, so this checks inference."""
    assert_flex_matches_eager(causal, frames=21, hidden_size=64, num_attention_heads=2, intermediate_size=128)


@pytest.mark.parametrize("causal", [False, True])
def test_flex_attention_matches_eager_small_heads(causal):
    """Head size 8 with 24 frames: the shape of the torch CPU flex bug, run where the probe finds it fixed."""
    require_working_cpu_flex_attention()
    assert_flex_matches_eager(causal, frames=24)


@pytest.mark.slow
def test_flex_tests_with_8_wide_vectors(tmp_path):
    """The two flex tests above as an AVX2-only CPU runs them, from any x86 CPU with AVX2: `ATEN_CPU_CAPABILITY=avx2`
    makes inductor compile for 8-wide vectors, where the torch bug shows. The safe shape must pass; the triggering
    shape is skipped (torch 2.13.0, which has the bug) or passes (a torch that fixed it)."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("needs an x86 CPU with AVX2")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-rs", "-p", "no:cacheprovider", "-m", "not slow",
               "-k", "flex_attention_matches_eager"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(("2 passed, 2 skipped", "4 passed")), summary
    if torch.__version__.split("+")[0] == "2.13.0":
        assert summary.startswith("2 passed, 2 skipped") and "CppMicroGemmFP32Vec" in result.stdout, result.stdout


def test_small_head_flex_test_skips_where_the_bug_is_present(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "cpu_flex_attention_is_broken", lambda: True)
    with pytest.raises(pytest.skip.Exception, match="CppMicroGemmFP32Vec"):
        require_working_cpu_flex_attention()


def test_flex_attention_warning_conditions(monkeypatch, caplog):
    """The probe runs only for flex attention on CPU with an affected head size, and the warning only where it
    finds the bug."""
    probed = []
    monkeypatch.setattr(flex_attention_cpu, "cpu_flex_attention_is_broken", lambda: probed.append(1) or True)
    cpu = torch.device("cpu")
    for attn, head_sizes, device in [("sdpa", (8,), cpu), ("eager", (16,), cpu), ("flex_attention", (32, 64), cpu),
                                     ("flex_attention", (8,), torch.device("cuda"))]:
        warn_if_cpu_flex_attention_is_broken(SimpleNamespace(_attn_implementation=attn), head_sizes, device)
    assert probed == [] and caplog.records == []
    monkeypatch.setattr(flex_attention_cpu, "cpu_flex_attention_is_broken", lambda: False)
    warn_if_cpu_flex_attention_is_broken(SimpleNamespace(_attn_implementation="flex_attention"), (8, 16), cpu)
    assert caplog.records == []


def test_flex_attention_warns_once_on_cpus_with_the_bug(monkeypatch, caplog):
    monkeypatch.setattr(flex_attention_cpu, "cpu_flex_attention_is_broken", lambda: True)
    transformers_logging.warning_once.cache_clear()
    batch = make_batch()
    model = make_model(CTALModel, attn="flex_attention")  # head size 8
    with torch.no_grad():
        for _ in range(2):
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    warnings = [record.getMessage() for record in caplog.records if "flex_attention" in record.getMessage()]
    assert len(warnings) == 1
    assert "head size 8:" in warnings[0] and 'attn_implementation="sdpa"' in warnings[0]
    assert TORCH_CPU_FLEX_ATTENTION_BUG in warnings[0]


# ---------------------------------------------------------------------------------------------- README


def test_readme_equation_table_names_real_code():
    """Every name in the README's "Paper equations in the code" table exists: module-level classes and functions of
    modeling_ctal, `Class.attribute` as a method or as a sub-module of a built model, or a CTALConfig field."""
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Paper equations in the code", 1)[1].split("\n### ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if re.match(r"\| \d", line)]
    assert {"3.1.2", "3.1.3", "3.2.1", "3.2.2", "3.3", "3.3.1"} <= {row[0].strip("| ") for row in rows}
    models = [make_model(CTALForSequenceClassification, num_labels=2), make_model(CTALForPreTraining)]
    instances = {type(module).__name__: module for model in models for module in model.modules()}
    config_fields = {field.name for field in fields(CTALConfig)}
    names = [re.sub(r"=.*", "", name) for row in rows for name in re.findall(r"`([^`]+)`", row[-1])]
    assert len(names) > 20
    for name in names:
        owner, _, attribute = name.partition(".")
        if name in config_fields:
            continue
        assert hasattr(modeling_ctal, owner), name
        if attribute:
            assert hasattr(getattr(modeling_ctal, owner), attribute) or hasattr(instances[owner], attribute), name
