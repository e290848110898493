"""Audio-text cross-modal attention family: shapes through every block, padding honoured everywhere (a padded batch
equals each utterance alone), freezing, variants, losses, attention backends, checkpoints and published sizes."""

import copy

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
    HubertConfig,
    Wav2Vec2Config,
    Wav2Vec2Model,
)

from ctal_hf import (
    AudioTextCMAConfig,
    AudioTextCMAForSequenceClassification,
    AudioTextCMAModel,
    CTALConfig,
    CTALForSequenceClassification,
)
from ctal_hf.models.audio_text_cma.modeling_audio_text_cma import (
    AudioTextCMAMaskedBatchNorm1d,
    statistics_pooling,
)


VOCAB = 60
HIDDEN = 16
NUM_LABELS = 3
# Tiny speech encoder: 3 conv layers (kernel 10/3/3, stride 5/2/2), so S samples give (((S - 10) // 5 + 1) - 3) // 2 + 1
# frames after two layers, and so on; 4000 samples -> 199 frames.
AUDIO_CONV = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2))


def tiny_audio_config(**overrides) -> Wav2Vec2Config:
    values = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        mask_time_prob=0.0,
        layerdrop=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        vocab_size=10,
        **AUDIO_CONV,
    )
    values.update(overrides)
    return Wav2Vec2Config(**values)


def tiny_text_config() -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def tiny_config(audio_config=None, **overrides) -> AudioTextCMAConfig:
    values = dict(
        hidden_size=HIDDEN,
        conv_dim=(16, 16),
        num_attention_heads=4,
        intermediate_size=HIDDEN,
        lstm_dropout=0.0,
        num_labels=NUM_LABELS,
    )
    values.update(overrides)
    return AudioTextCMAConfig(
        audio_config=audio_config or tiny_audio_config(), text_config=tiny_text_config(), **values
    )


def make_model(cls=AudioTextCMAForSequenceClassification, attn="sdpa", seed=0, **overrides):
    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    config._attn_implementation = attn
    for sub_config in (config.audio_config, config.text_config):
        sub_config._attn_implementation = attn
    return cls(config).eval()


def make_batch(samples=(4000, 2437), tokens=(9, 5), seed=0) -> dict:
    """Right-padded waveforms (odd and even lengths) and token ids; zeros at padded samples, [PAD]=0 tokens."""
    gen = torch.Generator().manual_seed(seed)
    batch = len(samples)
    input_values = torch.randn(batch, max(samples), generator=gen)
    audio_mask = (torch.arange(max(samples)) < torch.tensor(samples)[:, None]).long()
    input_ids = torch.randint(5, VOCAB, (batch, max(tokens)), generator=gen)
    input_ids[:, 0] = 2
    attention_mask = (torch.arange(max(tokens)) < torch.tensor(tokens)[:, None]).long()
    return dict(
        input_ids=input_ids.masked_fill(attention_mask == 0, 0),
        attention_mask=attention_mask,
        input_values=input_values * audio_mask,
        audio_attention_mask=audio_mask,
    )


def scramble_padding(batch: dict, seed=1) -> dict:
    """The same batch with random values at every padded sample and random ids at every padded token."""
    gen = torch.Generator().manual_seed(seed)
    scrambled = dict(batch)
    noise = 5 * torch.randn(batch["input_values"].shape, generator=gen)
    scrambled["input_values"] = torch.where(batch["audio_attention_mask"].bool(), batch["input_values"], noise)
    random_ids = torch.randint(1, VOCAB, batch["input_ids"].shape, generator=gen)
    scrambled["input_ids"] = torch.where(batch["attention_mask"].bool(), batch["input_ids"], random_ids)
    return scrambled


def inputs_for(batch: dict, modality: str) -> dict:
    keys = {"both": batch, "audio": ("input_values", "audio_attention_mask"), "text": ("input_ids", "attention_mask")}
    return {key: batch[key] for key in keys[modality]}


def one_by_one(model, batch: dict, modality: str) -> torch.Tensor:
    """Logits of each utterance run alone, unpadded and without masks."""
    rows = []
    for index in range(batch["input_values"].shape[0]):
        num_samples = int(batch["audio_attention_mask"][index].sum())
        num_tokens = int(batch["attention_mask"][index].sum())
        alone = {
            "input_values": batch["input_values"][index : index + 1, :num_samples],
            "input_ids": batch["input_ids"][index : index + 1, :num_tokens],
        }
        alone = {key: value for key, value in alone.items() if key in inputs_for(batch, modality)}
        rows.append(model(**alone).logits)
    return torch.cat(rows)


# ---------------------------------------------------------------------------------------------- config


def test_config_defaults_are_the_published_sizes():
    config = AudioTextCMAConfig()
    audio, text = config.audio_config, config.text_config
    # Section 4: wav2vec 2.0 Large, 7 conv blocks of 512 channels, strides (5,2,2,2,2,2,2), kernels (10,3,3,3,3,2,2).
    assert (audio.model_type, audio.hidden_size, audio.num_hidden_layers, audio.num_attention_heads) == (
        "wav2vec2",
        1024,
        24,
        16,
    )
    assert audio.intermediate_size == 4096 and audio.feat_extract_norm == "layer" and audio.do_stable_layer_norm
    assert list(audio.conv_dim) == [512] * 7
    assert list(audio.conv_stride) == [5, 2, 2, 2, 2, 2, 2] and list(audio.conv_kernel) == [10, 3, 3, 3, 3, 2, 2]
    # BERT-base: 12 layers, 768 wide, 12 heads.
    text_sizes = (text.model_type, text.hidden_size, text.num_hidden_layers, text.num_attention_heads)
    assert text_sizes == ("bert", 768, 12, 12)
    # Sections 2.2-2.4 and 4: 2 conv blocks of 256 filters, kernel 3, stride 2; BiLSTM 128 x 2; 8 heads; FFN 256.
    assert list(config.conv_dim) == [256, 256]
    assert list(config.conv_kernel) == [3, 3] and list(config.conv_stride) == [2, 2]
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (256, 8, 256)
    assert config.lstm_dropout == 0.2 and config.freeze_feature_encoder and not config.freeze_pretrained_encoders


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=30), "divisible by `num_attention_heads`"),
        (dict(hidden_size=9, num_attention_heads=1), "must be even"),
        (dict(conv_dim=(8,), conv_kernel=(3, 3)), "one non-zero length"),
        (dict(conv_stride=(2, 0)), "positive integers"),
        (dict(modality_outputs="video"), "modality_outputs"),
        (dict(regression_loss="huber"), "regression_loss"),
        (dict(lstm_dropout=1.0), "lstm_dropout"),
        (dict(hidden_act="nope"), "hidden_act"),
    ],
)
def test_config_validation_errors(overrides, message):
    # transformers 5 configs validate with `@strict`: the error wraps our ValueError and keeps its message.
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        AudioTextCMAConfig(**overrides)


def test_config_round_trip_through_auto_config(tmp_path):
    config = tiny_config(modality_outputs="audio", regression_loss="l1", id2label={0: "a", 1: "b", 2: "c"})
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is AudioTextCMAConfig
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert type(loaded.audio_config) is Wav2Vec2Config and type(loaded.text_config) is BertConfig
    assert loaded.audio_config.conv_kernel == [10, 3, 3] and loaded.id2label == {0: "a", 1: "b", 2: "c"}


def test_non_wav2vec2_style_audio_config_is_rejected():
    config = AudioTextCMAConfig(audio_config=tiny_text_config(), text_config=tiny_text_config(), hidden_size=16,
                                num_attention_heads=4)
    with pytest.raises(ValueError, match="not a wav2vec 2.0-style speech encoder"):
        AudioTextCMAModel(config)


# ---------------------------------------------------------------------------------------------- shapes


def test_shapes_through_every_block_with_padded_batches():
    model = make_model()
    batch = make_batch()  # 4000 and 2437 samples; 9 and 5 tokens
    base = model.audio_text_cma
    seen = {}

    def keep(name):
        def hook(module, args, output):
            seen[name] = (args, output)

        return hook

    base.audio_model.register_forward_hook(keep("speech_encoder"))
    for index, block in enumerate(base.audio_feature_encoder.conv_layers):
        block.register_forward_hook(keep(f"conv{index}"))
    base.audio_feature_encoder.register_forward_hook(keep("audio_feature_encoder"))
    base.text_model.register_forward_hook(keep("text_encoder"))
    base.text_projection.register_forward_hook(keep("text_projection"))
    base.audio_to_text_attention.register_forward_hook(keep("cma1"))
    base.text_to_audio_attention.register_forward_hook(keep("cma2"))
    with torch.no_grad():
        out = model(**batch)

    # Speech encoder: (4000 - 10) // 5 + 1 = 799, (799 - 3) // 2 + 1 = 399, 199 frames (2437 -> 486 -> 242 -> 120).
    frames = base.audio_model._get_feat_extract_output_lengths(torch.tensor([4000, 2437]))
    assert frames.tolist() == [199, 120]
    assert seen["speech_encoder"][1].last_hidden_state.shape == (2, 199, 32)
    # Each conv block (kernel 3, stride 2, padding 1): T -> (T - 1) // 2 + 1, zeros at padded frames.
    expected = [[100, 60], [50, 30]]
    for index, lengths in enumerate(expected):
        hidden, new_lengths = seen[f"conv{index}"][1]
        assert hidden.shape == (2, 16, lengths[0]) and new_lengths.tolist() == lengths
        assert hidden[1, :, lengths[1] :].eq(0).all() and hidden[1, :, : lengths[1]].ne(0).any()
    audio_states, audio_lengths = seen["audio_feature_encoder"][1]
    assert audio_states.shape == (2, 50, HIDDEN) and audio_lengths.tolist() == [50, 30]
    assert audio_states[1, 30:].eq(0).all()  # the packed BiLSTM leaves padded frames at zero
    assert seen["text_encoder"][1].last_hidden_state.shape == (2, 9, 32)
    assert seen["text_projection"][1].shape == (2, 9, HIDDEN)
    assert seen["cma1"][1][0].shape == (2, 50, HIDDEN) and seen["cma2"][1][0].shape == (2, 9, HIDDEN)
    assert out.embeddings.shape == (2, 4 * HIDDEN) and out.logits.shape == (2, NUM_LABELS)

    base_out = base(**batch)
    assert base_out.audio_frame_mask.sum(-1).tolist() == [50, 30]
    assert base_out.audio_last_hidden_state.shape == (2, 50, HIDDEN)
    assert base_out.text_last_hidden_state.shape == (2, 9, HIDDEN)
    torch.testing.assert_close(base_out.embeddings, out.embeddings, rtol=0, atol=0)
    # Early fusion (section 2.5): [mean | std] of CMA-1's valid frames, then of CMA-2's valid tokens.
    audio_part = statistics_pooling(base_out.audio_last_hidden_state, base_out.audio_frame_mask)
    text_part = statistics_pooling(base_out.text_last_hidden_state, batch["attention_mask"].bool())
    torch.testing.assert_close(base_out.embeddings, torch.cat([audio_part, text_part], -1))


def test_statistics_pooling_uses_valid_positions_only():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 6, 4, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    hidden[1, 3:] = float("nan")  # padded positions may hold anything
    pooled = statistics_pooling(hidden, mask)
    for row, length in enumerate([6, 3]):
        valid = hidden[row, :length].double()
        expected = torch.cat([valid.mean(0), valid.var(0, unbiased=False).sqrt()]).float()
        torch.testing.assert_close(pooled[row], expected)
    single = statistics_pooling(torch.randn(1, 1, 4), torch.ones(1, 1, dtype=torch.bool))
    assert torch.isfinite(single).all() and torch.allclose(single[0, 4:], torch.full((4,), 1e-5**0.5))


# ---------------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize("modality", ["both", "audio", "text"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_padding_invariance_and_batch_equals_one_by_one(modality, attn):
    model = make_model(attn=attn, modality_outputs=modality)
    batch = make_batch()
    with torch.no_grad():
        logits = model(**inputs_for(batch, modality)).logits
        scrambled = model(**inputs_for(scramble_padding(batch), modality)).logits
        alone = one_by_one(model, batch, modality)
    torch.testing.assert_close(scrambled, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(alone, logits, rtol=0, atol=1e-5)
    # Masks matter: without them the padded utterance's result changes.
    unmasked = {key: value for key, value in inputs_for(batch, modality).items() if "mask" not in key}
    with torch.no_grad():
        embeddings = model(**inputs_for(batch, modality)).embeddings[1]
        assert (model(**unmasked).embeddings[1] - embeddings).abs().max() > 1e-3


def test_batch_of_four_equals_one_by_one_with_hubert_encoder():
    """Another wav2vec 2.0-style encoder (HuBERT, layer-norm feature encoder) and more length patterns."""
    audio_config = HubertConfig(**{**tiny_audio_config().to_dict(), "model_type": "hubert"})
    torch.manual_seed(0)
    config = tiny_config(audio_config=audio_config)
    model = AudioTextCMAForSequenceClassification(config).eval()
    batch = make_batch(samples=(3001, 4000, 1200, 2222), tokens=(4, 9, 2, 7), seed=3)
    with torch.no_grad():
        logits = model(**batch).logits
        torch.testing.assert_close(one_by_one(model, batch, "both"), logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(model(**scramble_padding(batch)).logits, logits, rtol=0, atol=1e-5)


def test_padding_invariance_in_training_mode():
    """Train mode (batch statistics in batch norm; dropout set to 0): padded content changes neither the loss, the
    gradients nor batch norm's running statistics."""
    results = []
    for batch in (make_batch(), scramble_padding(make_batch())):
        model = make_model().train()
        loss = model(**batch, labels=torch.tensor([0, 2])).loss
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        stats = {name: buffer.clone() for name, buffer in model.named_buffers() if "running" in name}
        results.append((loss.detach(), grads, stats))
    (loss_a, grads_a, stats_a), (loss_b, grads_b, stats_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(stats_a) == 4
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-5, msg=name)
    for name in stats_a:
        torch.testing.assert_close(stats_b[name], stats_a[name], rtol=0, atol=1e-6, msg=name)


def test_masked_batch_norm_equals_batch_norm_over_valid_frames():
    torch.manual_seed(0)
    masked, reference = AudioTextCMAMaskedBatchNorm1d(5), nn.BatchNorm1d(5)
    hidden = torch.randn(3, 5, 7, requires_grad=True)
    lengths = torch.tensor([7, 2, 4])
    mask = torch.arange(7) < lengths[:, None]
    out = masked(hidden, mask)
    valid = torch.cat([hidden[index, :, :length].T for index, length in enumerate(lengths.tolist())])
    expected = reference(valid)
    got = torch.cat([out[index, :, :length].T for index, length in enumerate(lengths.tolist())])
    torch.testing.assert_close(got, expected)
    assert out[1, :, 2:].eq(0).all() and out[2, :, 4:].eq(0).all()
    torch.testing.assert_close(masked.running_mean, reference.running_mean)
    torch.testing.assert_close(masked.running_var, reference.running_var)
    assert masked.num_batches_tracked == reference.num_batches_tracked == 1
    # Padded inputs get no gradient.
    out.square().sum().backward()
    assert hidden.grad[1, :, 2:].eq(0).all() and hidden.grad[1, :, :2].ne(0).any()
    masked.eval()
    torch.testing.assert_close(masked(hidden, mask)[0], nn.functional.batch_norm(
        hidden[0:1], masked.running_mean, masked.running_var, masked.weight, masked.bias, eps=masked.eps)[0])


def test_group_norm_speech_encoder_gets_no_attention_mask():
    """wav2vec2-base-style encoders (group norm) were pre-trained without an attention mask and get none (as
    transformers documents); their valid frames are still selected from the sample mask."""
    audio_config = tiny_audio_config(feat_extract_norm="group", do_stable_layer_norm=False)
    model = make_model(audio_config=audio_config)
    masks = []
    model.audio_text_cma.audio_model.register_forward_pre_hook(
        lambda module, args, kwargs: masks.append(kwargs.get("attention_mask")), with_kwargs=True
    )
    out = model.audio_text_cma(**make_batch())
    assert masks == [None] and out.audio_frame_mask.sum(-1).tolist() == [50, 30]


def test_layer_norm_speech_encoder_gets_the_sample_mask():
    model = make_model()
    masks = []
    model.audio_text_cma.audio_model.register_forward_pre_hook(
        lambda module, args, kwargs: masks.append(kwargs.get("attention_mask")), with_kwargs=True
    )
    batch = make_batch()
    model(**batch)
    assert torch.equal(masks[0], batch["audio_attention_mask"])


def test_input_errors():
    model = make_model()
    batch = make_batch()
    with pytest.raises(ValueError, match="`input_values` are required"):
        model(input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match="`input_ids` are required"):
        model(input_values=batch["input_values"])
    with pytest.raises(ValueError, match=r"\(batch, samples\) raw waveforms"):
        model(input_ids=batch["input_ids"], input_values=batch["input_values"][:, None])
    short = dict(batch, audio_attention_mask=batch["audio_attention_mask"].clone())
    short["audio_attention_mask"][1, 20:] = 0
    # One frame needs (((1 - 1) * 2 + 3 - 1) * 2 + 3 - 1) * 5 + 10 = 40 samples (kernels 10/3/3, strides 5/2/2).
    assert model.audio_text_cma._minimum_num_samples() == 40
    with pytest.raises(ValueError, match=r"Audio \[1\] have \[20\] samples.*needs 40"):
        model(**short)


# ---------------------------------------------------------------------------------------------- freezing


def grads_by_part(model) -> dict[str, set[bool]]:
    """For each part of the model, the set of 'has a non-zero gradient' over its parameters."""
    parts = {}
    for name, parameter in model.named_parameters():
        if ".feature_extractor." in name:
            part = "feature_encoder"
        elif ".audio_model." in name:
            part = "audio_model"
        elif ".text_model." in name:
            part = "text_model"
        else:
            part = "head"
        has_grad = parameter.grad is not None and bool(parameter.grad.ne(0).any())
        parts.setdefault(part, set()).add(has_grad)
    return parts


def run_backward(model, batch=None):
    model.train()
    batch = make_batch() if batch is None else batch
    model(**batch, labels=torch.tensor([0, 2])).loss.backward()


def test_feature_encoder_frozen_by_default_and_the_rest_trains():
    model = make_model()
    run_backward(model)
    assert grads_by_part(model) == {
        "feature_encoder": {False},
        "audio_model": {True},
        "text_model": {True},
        "head": {True},
    }
    assert all(not p.requires_grad for p in model.audio_text_cma.audio_model.feature_extractor.parameters())


def test_freeze_pretrained_encoders_trains_only_the_layers_above():
    model = make_model(freeze_pretrained_encoders=True)
    run_backward(model)
    assert grads_by_part(model) == {"feature_encoder": {False}, "audio_model": {False}, "text_model": {False},
                                    "head": {True}}
    trainable = {
        name.removeprefix("audio_text_cma.").split(".")[0] for name, p in model.named_parameters() if p.requires_grad
    }
    assert trainable == {
        "audio_feature_encoder",
        "text_projection",
        "audio_to_text_attention",
        "text_to_audio_attention",
        "classifier",
    }


def test_nothing_frozen_when_switched_off():
    model = make_model(freeze_feature_encoder=False)
    run_backward(model)
    assert set().union(*grads_by_part(model).values()) == {True}
    assert all(p.requires_grad for p in model.parameters())


def test_freezing_survives_save_and_load(tmp_path):
    for overrides in (dict(), dict(freeze_pretrained_encoders=True)):
        model = make_model(**overrides)
        model.save_pretrained(tmp_path)
        loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
        expected = {name: p.requires_grad for name, p in model.named_parameters()}
        assert {name: p.requires_grad for name, p in loaded.named_parameters()} == expected
        assert not loaded.audio_text_cma.audio_model.feature_extractor._requires_grad


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_single_modality_variants_build_and_train_only_their_stream(modality):
    model = make_model(modality_outputs=modality, freeze_feature_encoder=False)
    base = model.audio_text_cma
    built = {name for name in ("audio_model", "text_model", "audio_feature_encoder", "text_projection",
                               "audio_to_text_attention", "text_to_audio_attention") if getattr(base, name) is not None}
    expected = {"audio_model", "audio_feature_encoder"} if modality == "audio" else {"text_model", "text_projection"}
    assert built == expected
    batch = inputs_for(make_batch(), modality)
    out = model(**batch, labels=torch.tensor([0, 2]))
    assert out.embeddings.shape == (2, 2 * HIDDEN)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.ne(0).any() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- losses and outputs


def test_classification_regression_and_multilabel_losses():
    batch = make_batch()
    model = make_model()
    out = model(**batch, labels=torch.tensor([1, 2]))
    torch.testing.assert_close(out.loss, nn.functional.cross_entropy(out.logits, torch.tensor([1, 2])))
    assert model.config.problem_type == "single_label_classification"

    targets = torch.tensor([0.5, -1.0])
    for loss_name, reference in (("mse", nn.functional.mse_loss), ("l1", nn.functional.l1_loss)):
        model = make_model(num_labels=1, regression_loss=loss_name)
        out = model(**batch, labels=targets)
        torch.testing.assert_close(out.loss, reference(out.logits.squeeze(-1), targets))
        assert model.config.problem_type == "regression"

    model = make_model()
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = model(**batch, labels=multi_hot)
    torch.testing.assert_close(out.loss, nn.functional.binary_cross_entropy_with_logits(out.logits, multi_hot))
    assert model.config.problem_type == "multi_label_classification"


def test_eager_matches_sdpa():
    batch = make_batch()
    with torch.no_grad():
        eager = make_model(attn="eager")(**batch)
        sdpa = make_model(attn="sdpa")(**batch)
    torch.testing.assert_close(sdpa.logits, eager.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(sdpa.embeddings, eager.embeddings, rtol=0, atol=1e-5)


def test_attentions_hidden_states_and_tuples():
    model = make_model(attn="eager")
    batch = make_batch()
    with torch.no_grad():
        out = model(**batch, output_attentions=True, output_hidden_states=True)
        as_tuple = model(**batch, return_dict=False)
    cma1, cma2 = out.cross_attentions
    assert cma1.shape == (2, 4, 50, 9) and cma2.shape == (2, 4, 9, 50)
    # Keys of the other modality's padding get no attention: tokens 5.. of utterance 1, frames 30.. of utterance 1.
    assert cma1[1, :, :, 5:].eq(0).all() and cma2[1, :, :, 30:].eq(0).all()
    torch.testing.assert_close(cma1.sum(-1), torch.ones(2, 4, 50))
    assert len(out.audio_hidden_states) == 3 and len(out.text_hidden_states) == 3
    assert len(out.audio_attentions) == 2 and len(out.text_attentions) == 2
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    torch.testing.assert_close(as_tuple[0], out.logits)
    torch.testing.assert_close(as_tuple[1], out.embeddings)


def test_gradient_checkpointing_same_loss_and_gradients():
    batch = make_batch()
    labels = torch.tensor([0, 1])
    results = []
    for checkpointing in (False, True):
        model = make_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        loss = model(**batch, labels=labels).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-5)
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_optimiser_steps_reduce_the_loss():
    model = make_model().train()
    batch, labels = make_batch(), torch.tensor([0, 2])
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "cls, auto",
    [(AudioTextCMAModel, AutoModel), (AudioTextCMAForSequenceClassification, AutoModelForSequenceClassification)],
)
def test_save_and_auto_load_identical(tmp_path, cls, auto):
    model = make_model(cls)
    model.save_pretrained(tmp_path)
    loaded = auto.from_pretrained(tmp_path).eval()
    assert type(loaded) is cls
    loaded_state = loaded.state_dict()
    assert model.state_dict().keys() == loaded_state.keys()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded_state[name], tensor, rtol=0, atol=0, msg=name)
    batch = make_batch()
    with torch.no_grad():
        first, second = model(**batch), loaded(**batch)
    # Same weights; loaded tensors sit at other memory alignments, which can change the CPU kernels' summation order.
    torch.testing.assert_close(second.embeddings, first.embeddings, rtol=0, atol=1e-6)


def test_base_model_loads_from_classification_checkpoint(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path).eval()
    batch = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(base(**batch).embeddings, model(**batch).embeddings, rtol=0, atol=1e-6)


def test_from_audio_text_pretrained_from_two_tiny_encoders(tmp_path):
    torch.manual_seed(1)
    Wav2Vec2Model(tiny_audio_config()).save_pretrained(tmp_path / "speech")
    torch.manual_seed(2)
    BertModel(tiny_text_config()).save_pretrained(tmp_path / "text")
    model = AudioTextCMAForSequenceClassification.from_audio_text_pretrained(
        str(tmp_path / "speech"), str(tmp_path / "text"), num_labels=4, hidden_size=HIDDEN, num_attention_heads=4,
        intermediate_size=HIDDEN, conv_dim=(16, 16), text_attn_implementation="eager",
    )
    assert model.config.num_labels == 4 and model.classifier.out_features == 4
    assert model.config.text_config._attn_implementation == "eager"
    base = model.audio_text_cma
    for part, reference in ((base.audio_model, Wav2Vec2Model.from_pretrained(tmp_path / "speech")),
                            (base.text_model, BertModel.from_pretrained(tmp_path / "text"))):
        loaded = part.state_dict()
        for name, tensor in reference.state_dict().items():
            if not name.startswith("pooler."):
                torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)
    assert base.text_model.pooler is None  # the token states are used; no unused pooler
    assert not any(p.requires_grad for p in base.audio_model.feature_extractor.parameters())
    model.eval()
    batch = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(one_by_one(model, batch, "both"), model(**batch).logits, rtol=0, atol=1e-5)

    model.save_pretrained(tmp_path / "joint")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "joint").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=1e-6)

    audio_only = AudioTextCMAModel.from_audio_text_pretrained(str(tmp_path / "speech"), modality_outputs="audio")
    assert audio_only.text_model is None and audio_only.audio_model is not None
    with pytest.raises(ValueError, match="`text_name_or_path` is required"):
        AudioTextCMAModel.from_audio_text_pretrained(str(tmp_path / "speech"))


# ---------------------------------------------------------------------------------------------- published sizes


def count_parameters(model: nn.Module, prefix: str = "") -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith(prefix))


def test_parameter_counts_at_published_sizes(capsys):
    """Counted on the meta device (no weights) at the paper's sizes: wav2vec 2.0 Large + BERT-base + the layers above
    them, next to CTAL-Large; the README quotes these numbers."""
    with torch.device("meta"):
        model = AudioTextCMAForSequenceClassification(AudioTextCMAConfig(num_labels=4))
        frozen_config = AudioTextCMAConfig(num_labels=4, freeze_pretrained_encoders=True)
        frozen = AudioTextCMAForSequenceClassification(frozen_config)
        ctal = CTALForSequenceClassification(CTALConfig.from_preset("ctal-large", num_labels=4))
    counts = {
        "speech encoder (wav2vec 2.0 Large)": count_parameters(model, "audio_text_cma.audio_model."),
        "of which conv feature encoder (frozen)": count_parameters(
            model, "audio_text_cma.audio_model.feature_extractor."
        ),
        "text encoder (BERT-base, no pooler)": count_parameters(model, "audio_text_cma.text_model."),
        "audio feature encoder (2 conv + BiLSTM)": count_parameters(model, "audio_text_cma.audio_feature_encoder."),
        "text projection": count_parameters(model, "audio_text_cma.text_projection."),
        "CMA-1 + CMA-2": count_parameters(model, "audio_text_cma.audio_to_text_attention.")
        + count_parameters(model, "audio_text_cma.text_to_audio_attention."),
        "classifier (4 classes)": count_parameters(model, "classifier."),
        "total": count_parameters(model),
        "trainable (feature encoder frozen)": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "trainable (both encoders frozen)": sum(p.numel() for p in frozen.parameters() if p.requires_grad),
        "CTAL-Large for classification": count_parameters(ctal),
    }
    with capsys.disabled():
        print()
        for name, value in counts.items():
            print(f"{name:45s} {value:>12,d}")
    assert counts == {
        "speech encoder (wav2vec 2.0 Large)": 315_438_720,
        "of which conv feature encoder (frozen)": 4_210_176,
        "text encoder (BERT-base, no pooler)": 108_891_648,
        # 1024*256*3+256 + 256*256*3+256 conv, 2*2*256 batch norm, 2*(4*128*(256+128)+2*4*128) BiLSTM
        "audio feature encoder (2 conv + BiLSTM)": 1_379_840,
        "text projection": 196_864,
        "CMA-1 + CMA-2": 792_576,
        "classifier (4 classes)": 4_100,
        "total": 426_703_748,
        "trainable (feature encoder frozen)": 422_493_572,
        "trainable (both encoders frozen)": 2_373_380,
        "CTAL-Large for classification": 125_699_332,
    }


def forward_flops(model: nn.Module, **inputs) -> dict[str, int]:
    """Forward FLOPs per module (`torch.utils.flop_counter`: matrix products, convolutions, attention)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**inputs)
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def test_forward_flops_at_published_sizes(capsys):
    """Cost of one forward pass over a 10 s utterance with 32 tokens at the paper's sizes, next to CTAL-Large (10 s =
    801 frames of 12.5 ms); the README quotes these numbers."""
    seconds, tokens = 10, 32
    ids = dict(input_ids=torch.zeros(1, tokens, dtype=torch.long))
    published = AudioTextCMAConfig(num_labels=4)
    # The pre-trained encoders and CTAL at full size on the meta device: shapes only, no weights, no arithmetic.
    with torch.device("meta"):
        speech = AutoModel.from_config(published.audio_config).eval()
        text = AutoModel.from_config(published.text_config, add_pooling_layer=False).eval()
        ctal = CTALForSequenceClassification(CTALConfig.from_preset("ctal-large", num_labels=4)).eval()
        speech_flops = forward_flops(speech, input_values=torch.zeros(1, 16000 * seconds))["Global"]
        text_flops = forward_flops(text, **ids)["Global"]
        ctal_flops = forward_flops(ctal, audio_features=torch.zeros(1, 1 + 16000 * seconds // 200, 160), **ids)
    # The layers above the encoders at full width through the model's own forward (it needs real tensors), with
    # encoders that keep the published output widths and frame rate but are otherwise minimal; their share is removed.
    narrow_audio = dict(published.audio_config.to_dict(), conv_dim=[8] * 7, num_hidden_layers=1, intermediate_size=8,
                        num_conv_pos_embeddings=2, num_conv_pos_embedding_groups=1)
    narrow_text = dict(published.text_config.to_dict(), num_hidden_layers=1, intermediate_size=8)
    model = AudioTextCMAForSequenceClassification(
        AudioTextCMAConfig(audio_config=narrow_audio, text_config=narrow_text, num_labels=4)
    ).eval()
    counts = forward_flops(model, input_values=torch.randn(1, 16000 * seconds), **ids)
    prefix = "AudioTextCMAForSequenceClassification.audio_text_cma"
    head_flops = counts["Global"] - counts[f"{prefix}.audio_model"] - counts[f"{prefix}.text_model"]
    gflops = {
        "speech encoder": speech_flops / 1e9,
        "text encoder": text_flops / 1e9,
        "layers above": head_flops / 1e9,
        "total": (speech_flops + text_flops + head_flops) / 1e9,
        "CTAL-Large": ctal_flops["Global"] / 1e9,
    }
    with capsys.disabled():
        print()
        for name, value in gflops.items():
            print(f"{name:20s} {value:8.2f} GFLOP")
    assert {name: round(value, 1) for name, value in gflops.items()} == {
        "speech encoder": 383.9,
        "text encoder": 5.5,
        "layers above": 0.6,
        "total": 389.9,
        "CTAL-Large": 96.0,
    }


def test_bfloat16_model_takes_float32_inputs_and_autocast_trains():
    batch = make_batch()  # float32 waveforms, as the processor returns them
    with torch.no_grad():
        logits = make_model().to(torch.bfloat16)(**batch).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    model = make_model().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, labels=torch.tensor([0, 2])).loss
    loss.backward()
    assert torch.isfinite(loss) and model.classifier.weight.grad is not None
