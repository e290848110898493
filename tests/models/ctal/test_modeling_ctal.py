"""Model-family tests: shapes, masking semantics, attention backends, losses, tying, checkpoints, learning."""

import copy

import pytest
import torch
from torch import nn

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification

from ctal_hf import CTALConfig, CTALForPreTraining, CTALForSequenceClassification, CTALModel
from ctal_hf.models.ctal.configuration_ctal import CTAL_PRESETS


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
    with pytest.raises(ValueError, match="divisible by `text_num_attention_heads`"):
        CTALConfig(hidden_size=100, num_attention_heads=12)
    with pytest.raises(ValueError, match="audio_hidden_size"):
        CTALConfig(audio_hidden_size=64, audio_num_attention_heads=5)
    with pytest.raises(ValueError, match="modality_outputs"):
        CTALConfig(modality_outputs="video")
    with pytest.raises(ValueError, match="must equal `audio_hidden_size`"):
        CTALConfig(text_hidden_size=48, audio_hidden_size=96)
    with pytest.raises(ValueError, match="both 0"):
        CTALConfig(mlm_loss_weight=0, mcam_loss_weight=0)
    with pytest.raises(ValueError, match="regression_loss"):
        CTALConfig(regression_loss="huber")
    with pytest.raises(ValueError, match="hidden_dropout_prob"):
        CTALConfig(hidden_dropout_prob=1.5)
    with pytest.raises(ValueError, match="Unknown CTAL preset"):
        CTALConfig.from_preset("ctal-huge")


def test_presets_and_shortcuts():
    base, large = CTALConfig.from_preset("ctal-base"), CTALConfig.from_preset("ctal-large")
    assert (base.text_num_hidden_layers, base.audio_num_hidden_layers, base.text_num_attention_heads) == (3, 3, 12)
    assert (large.text_num_hidden_layers, large.audio_hidden_size) == (6, 768)
    assert base.audio_feature_size == 160 and base.max_audio_frames == 3000
    assert base.audio_causal_self_attention is False
    split = CTALConfig(hidden_size=32, num_attention_heads=4, audio_num_hidden_layers=1, num_hidden_layers=2)
    assert (split.text_num_hidden_layers, split.audio_num_hidden_layers) == (2, 1)
    assert CTALConfig.from_preset("ctal-base", audio_causal_self_attention=True).audio_causal_self_attention


def test_config_round_trip(tmp_path):
    config = tiny_config(audio_causal_self_attention=True, use_fusion=False, text_num_hidden_layers=1)
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
    for key, value in model(**batch).items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(loaded(**batch)[key], value), key


@pytest.mark.parametrize("head_cls", [CTALForPreTraining, CTALForSequenceClassification])
def test_base_model_loads_from_head_checkpoints(tmp_path, head_cls):
    head = make_model(head_cls, num_labels=2)
    head.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    batch = make_batch()
    expected = head.ctal(**batch)
    got = base(**batch)
    assert torch.equal(got.audio_last_hidden_state, expected.audio_last_hidden_state)
    # And the other way: a classifier initialised from a pre-training checkpoint keeps the encoder.
    if head_cls is CTALForPreTraining:
        clf = CTALForSequenceClassification.from_pretrained(tmp_path, num_labels=4, attn_implementation="eager").eval()
        assert torch.equal(clf.ctal(**batch).text_last_hidden_state, expected.text_last_hidden_state)


# ---------------------------------------------------------------------------------------------- edge cases


def test_config_shortcuts_write_both_stacks(tmp_path):
    config = tiny_config(text_num_hidden_layers=1)
    assert config.num_hidden_layers == 2 and config.text_num_hidden_layers == 1
    config.save_pretrained(tmp_path)
    assert "hidden_size" not in config.to_dict()
    loaded = CTALConfig.from_pretrained(tmp_path, hidden_size=64, intermediate_size=96)
    assert (loaded.text_hidden_size, loaded.audio_hidden_size, loaded.text_intermediate_size) == (64, 64, 96)
    loaded.text_hidden_size = 48
    with pytest.raises(ValueError, match="must equal `audio_hidden_size`"):
        loaded.validate_ctal()


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


@pytest.mark.parametrize("causal", [False, True])
def test_flex_attention_matches_eager(causal):
    """Flex attention (BlockMask masks for padding, causality and cross-attention); on CPU it has no backward, so
    this checks inference."""
    batch = make_batch()
    eager = make_model(CTALModel, attn="eager", audio_causal_self_attention=causal)
    flex = make_model(CTALModel, attn="flex_attention", audio_causal_self_attention=causal)
    flex.load_state_dict(eager.state_dict())
    with torch.no_grad():
        out_e, out_f = eager(**batch), flex(**batch)
    for name, mask in (("text_last_hidden_state", "attention_mask"), ("audio_last_hidden_state", "audio_attention_mask")):
        assert (out_e[name] - out_f[name]).abs()[batch[mask].bool()].max() < 1e-5, name
