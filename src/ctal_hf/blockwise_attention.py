"""Attention whose training memory grows linearly with the sequence length, with attention-probability dropout kept.

CTAL's audio stream attends over up to 3,000 frames and the paper trains with dropout 0.1 on the attention
probabilities (section 4.1, as BERT). With that dropout, PyTorch's SDPA on CPU falls back to its math path and, like
eager attention, keeps the (batch, heads, queries, keys) probabilities of every layer for the backward pass: training
memory grows with the square of the audio length. `blockwise_attention_forward` splits the queries into blocks of
`QUERY_BLOCK_SIZE` rows and runs each block under `torch.utils.checkpoint`: the forward pass keeps only the blocks'
outputs, and the backward pass recomputes one block's probabilities at a time. The checkpoint restores the random
number generator before recomputing, so the recomputed dropout mask is the one the forward pass drew. The cost is one
more computation of the attention probabilities in the backward pass.

Without dropout (evaluation, inference, or `attention_probs_dropout_prob=0`) there is nothing to recompute: SDPA's
fused kernels never build the probabilities, and the call goes to transformers' SDPA integration unchanged.

Registered at `import ctal_hf` under the name "blockwise" in transformers' `AttentionInterface` (and its boolean mask in
`AttentionMaskInterface`), so any model that dispatches attention through that interface can use it:
`CTALForPreTraining.from_pretrained(path, attn_implementation="blockwise")` or
`model.set_attn_implementation("blockwise")`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface


BLOCKWISE_ATTENTION = "blockwise"
# Query rows per block: the block's probabilities, (batch, heads, QUERY_BLOCK_SIZE, keys), are the largest tensor the
# backward pass builds, so the peak memory of attention is linear in the number of keys.
QUERY_BLOCK_SIZE = 256


def _attention_block(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    dropout: float,
) -> torch.Tensor:
    """Eager attention of one query block: query (B, h, q, d), key/value (B, h, K, d), boolean `mask` broadcastable to
    (B, h, q, K) with True where attention is allowed. Returns (B, h, q, d)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probabilities = nn.functional.dropout(nn.functional.softmax(scores, dim=-1), p=dropout, training=True)
    return torch.matmul(probabilities, value)


def blockwise_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float,
    block_size: int = QUERY_BLOCK_SIZE,
) -> torch.Tensor:
    """Attention of query blocks of `block_size` rows, each under `torch.utils.checkpoint` when gradients are needed
    (its probabilities are recomputed, with the same dropout mask, in the backward pass).

    Args:
        query: (B, heads, Q, head_dim). key, value: (B, heads, K, head_dim).
        attention_mask: boolean, broadcastable to (B, 1, Q, K), True where attention is allowed, or None.
        scaling: factor of the scores. dropout: dropout probability on the attention probabilities.

    Returns:
        (B, heads, Q, head_dim).
    """
    recompute = torch.is_grad_enabled() and any(tensor.requires_grad for tensor in (query, key, value))
    blocks = []
    for start in range(0, query.shape[2], block_size):
        rows = slice(start, start + block_size)
        mask = attention_mask
        if mask is not None and mask.shape[-2] > 1:  # else broadcast over the queries
            mask = mask[..., rows, :]
        arguments = (query[:, :, rows], key, value, mask, scaling, dropout)
        if recompute:
            blocks.append(checkpoint(_attention_block, *arguments, use_reentrant=False, preserve_rng_state=True))
        else:
            blocks.append(_attention_block(*arguments))
    return torch.cat(blocks, dim=2)


def blockwise_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-interface entry: `blockwise_attention` with attention dropout, SDPA without.

    Args:
        module: the calling attention module.
        query: (B, heads, Q, head_dim). key, value: (B, heads, K, head_dim).
        attention_mask: boolean (transformers' `sdpa_mask`, registered for this implementation) or None.
        dropout: dropout probability on the attention probabilities (0 outside training).
        scaling: factor of the scores, default `head_dim ** -0.5`.
        is_causal: causal attention when no mask is given (as transformers' SDPA integration).

    Returns:
        The attention output (B, Q, heads, head_dim) and None (the probabilities are never kept).
    """
    if dropout == 0.0:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=0.0, scaling=scaling, is_causal=is_causal, **kwargs
        )
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    if attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True)):
        q_length, kv_length = query.shape[2], key.shape[2]
        attention_mask = torch.ones(q_length, kv_length, dtype=torch.bool, device=query.device).tril()
    output = blockwise_attention(query, key, value, attention_mask, scaling, dropout)
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(BLOCKWISE_ATTENTION, blockwise_attention_forward)
AttentionMaskInterface.register(BLOCKWISE_ATTENTION, sdpa_mask)
