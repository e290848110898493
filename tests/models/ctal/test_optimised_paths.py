"""The speed and memory optimisations keep the model's results (fp32, losses and gradients within 1e-5): MLM logits at
the labelled tokens only versus the full projection, and the "blockwise" attention versus eager attention."""

import pytest
import torch

import ctal_hf.blockwise_attention as blockwise_module
from ctal_hf import BLOCKWISE_ATTENTION, CTALConfig, CTALForPreTraining


def config(**overrides) -> CTALConfig:
    values = dict(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        max_audio_frames=80,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    values.update(overrides)
    return CTALConfig(**values)


def model(attn="eager", **overrides) -> CTALForPreTraining:
    torch.manual_seed(0)
    return CTALForPreTraining._from_config(config(**overrides), attn_implementation=attn).train()


def pretraining_batch(labelled=(2, 5, 6)):
    """Two utterances, both streams right-padded in the second; MLM labels at the token positions `labelled`."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 300, (2, 11), generator=generator)
    attention_mask = torch.ones(2, 11, dtype=torch.long)
    attention_mask[1, 8:] = 0
    audio_features = torch.randn(2, 70, 160, generator=generator)
    audio_attention_mask = torch.ones(2, 70, dtype=torch.long)
    audio_attention_mask[1, 50:] = 0
    labels = torch.full_like(input_ids, -100)
    for position in labelled:
        labels[:, position] = input_ids[:, position]
    mcam_label_mask = torch.zeros(2, 70, dtype=torch.long)
    mcam_label_mask[:, 10:20] = 1
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        audio_features=audio_features,
        audio_attention_mask=audio_attention_mask,
        labels=labels,
        mcam_labels=audio_features.clone(),
        mcam_label_mask=mcam_label_mask,
    )


def loss_and_gradients(model, batch, **kwargs):
    model.zero_grad()
    outputs = model(**batch, **kwargs)
    outputs.loss.backward()
    return outputs, {name: parameter.grad.clone() for name, parameter in model.named_parameters()}


def assert_same(first, second, atol=1e-5):
    (out_a, grads_a), (out_b, grads_b) = first, second
    for name in ("loss", "mlm_loss", "mcam_loss"):
        torch.testing.assert_close(out_a[name], out_b[name], atol=atol, rtol=0)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("labelled", [(2, 5, 6), ()])
def test_mlm_logits_at_labelled_tokens_only_keep_losses_and_gradients(labelled):
    pretraining = model()
    batch = pretraining_batch(labelled)
    full = loss_and_gradients(pretraining, batch, full_mlm_logits=True)
    sparse = loss_and_gradients(pretraining, batch)
    assert_same(sparse, full)
    selected = batch["labels"] != -100
    assert full[0].mlm_logits.shape == (2, 11, 300)
    assert sparse[0].mlm_logits.shape == (int(selected.sum()), 300)
    torch.testing.assert_close(sparse[0].mlm_logits, full[0].mlm_logits[selected], atol=1e-5, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_blockwise_attention_without_dropout_equals_eager(causal):
    batch = pretraining_batch()
    eager = loss_and_gradients(model("eager", audio_causal_self_attention=causal), batch)
    blockwise = loss_and_gradients(model(BLOCKWISE_ATTENTION, audio_causal_self_attention=causal), batch)
    assert_same(blockwise, eager)


def test_blockwise_attention_with_dropout_recomputes_the_same_training_step(monkeypatch):
    """With the paper's dropout (hidden and attention 0.1), 70 frames in blocks of 16 and layer-level gradient
    checkpointing on top, the step equals the same blocks kept in memory: the recomputation redraws the same masks."""
    monkeypatch.setattr(blockwise_module, "QUERY_BLOCK_SIZE", 16)
    batch = pretraining_batch()
    results = []
    for recompute in (True, False):
        if not recompute:
            monkeypatch.setattr(blockwise_module, "checkpoint", lambda function, *args, **kwargs: function(*args))
        pretraining = model(BLOCKWISE_ATTENTION, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
        pretraining.activation_checkpointing_enable()
        torch.manual_seed(1)
        results.append(loss_and_gradients(pretraining, batch))
    assert_same(*results, atol=1e-6)
    no_dropout = loss_and_gradients(model(BLOCKWISE_ATTENTION), batch)[0]
    assert not torch.allclose(results[0][0].loss, no_dropout.loss)  # dropout acted
