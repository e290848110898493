"""Blockwise attention (ctal_hf.blockwise_attention): same outputs and gradients as eager attention without dropout,
the forward pass's dropout mask reused when a block is recomputed, and the same dropout distribution as eager."""

import pytest
import torch
from torch import nn

import ctal_hf.blockwise_attention as blockwise_module
from ctal_hf.blockwise_attention import BLOCKWISE_ATTENTION, _attention_block, blockwise_attention


def eager_attention(query, key, value, mask, scaling, dropout):
    """The textbook formula (as `eager_attention_forward` of modeling_ctal, with a boolean mask)."""
    scores = query @ key.transpose(2, 3) * scaling
    if mask is not None:
        scores = scores + torch.where(mask, 0.0, torch.finfo(scores.dtype).min)
    probabilities = nn.functional.dropout(scores.softmax(-1), p=dropout, training=True)
    return probabilities @ value


def inputs(batch=2, heads=3, queries=37, keys=29, head_dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    query, key, value = (
        torch.randn(batch, heads, length, head_dim, generator=generator, requires_grad=True)
        for length in (queries, keys, keys)
    )
    # Padding: the second utterance has 20 valid keys; the mask is (B, 1, 1, K), broadcast as `sdpa_mask` makes it.
    mask = (torch.arange(keys) < torch.tensor([keys, 20])[:, None])[:, None, None, :]
    return query, key, value, mask


def gradients(output, tensors, seed=1):
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((output * weights).sum(), tensors)


@pytest.mark.parametrize("causal", [False, True])
def test_matches_eager_without_dropout(causal):
    query, key, value, mask = inputs()
    if causal:
        mask = mask & torch.ones(37, 29, dtype=torch.bool).tril()
    reference = eager_attention(query, key, value, mask, 0.3, 0.0)
    # 37 queries in blocks of 8: four full blocks and a partial one.
    output = blockwise_attention(query, key, value, mask, 0.3, 0.0, block_size=8)
    torch.testing.assert_close(output, reference, atol=1e-5, rtol=0)
    for ours, theirs in zip(gradients(output, (query, key, value)), gradients(reference, (query, key, value))):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_recomputed_blocks_reuse_the_forward_dropout_mask():
    """With dropout, the checkpointed blocks give exactly the gradients of the same blocks kept in memory (same RNG
    draws): the backward pass recomputed each block with the mask its forward pass drew."""
    query, key, value, mask = inputs()
    torch.manual_seed(123)
    output = blockwise_attention(query, key, value, mask, 0.3, 0.5, block_size=8)
    torch.manual_seed(123)
    reference = torch.cat(
        [_attention_block(query[:, :, rows], key, value, mask, 0.3, 0.5) for rows in (slice(s, s + 8) for s in range(0, 37, 8))],
        dim=2,
    )
    assert torch.equal(output, reference)
    assert (output != eager_attention(query, key, value, mask, 0.3, 0.0)).any()  # dropout did act
    for ours, theirs in zip(gradients(output, (query, key, value)), gradients(reference, (query, key, value))):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_dropout_is_distributed_as_in_eager_attention():
    """With the identity as values, the output rows ARE the dropped-out probabilities: every entry is 0 or the
    undropped probability / (1 - p), exactly as eager's, and the share of zeros is p within 5 standard deviations."""
    p, keys = 0.3, 64
    query, key, _, mask = inputs(batch=2, heads=2, queries=300, keys=keys)
    value = torch.eye(keys).expand(2, 2, keys, keys)
    probabilities = eager_attention(query, key, value, mask, 0.3, 0.0).detach()
    attended = mask.expand_as(probabilities)
    for attention in (eager_attention, blockwise_attention):
        torch.manual_seed(7)
        with torch.no_grad():
            dropped = attention(query, key, value, mask, 0.3, p)
        kept = dropped[attended] != 0
        torch.testing.assert_close(dropped[attended][kept], probabilities[attended][kept] / (1 - p), atol=1e-6, rtol=1e-5)
        assert (dropped[~attended] == 0).all()
        count = attended.sum().item()
        share = 1 - kept.float().mean().item()
        assert abs(share - p) < 5 * (p * (1 - p) / count) ** 0.5, attention.__name__


def test_registered_in_transformers_interfaces():
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert ALL_ATTENTION_FUNCTIONS[BLOCKWISE_ATTENTION] is blockwise_module.blockwise_attention_forward
    # Without its own mask function, transformers would give this implementation no mask at all (padding ignored).
    assert ALL_MASK_ATTENTION_FUNCTIONS[BLOCKWISE_ATTENTION] is sdpa_mask
