"""A torch bug in compiled CPU flex attention: one probe and one warning, shared by every model family that offers
`attn_implementation="flex_attention"`.

torch 2.13's compiled CPU kernel for `flex_attention` (inductor's `CppMicroGemmFP32Vec`, the transposed-B tail path of
the CPU flex template, whose column block is 16) handles an 8-wide tail of keys as if it were 16 wide when the CPU's
float vectors are 8 wide (AVX2 without AVX-512): it reads 8 key rows past the block and writes 8 scores past the row,
into the softmax's running maximum. That path is taken when the head size is 8 or 16 (a multiple of the vector width,
below 24) and the key length leaves a tail of 8 (`key_length % 16 == 8`). The output is then NaN or silently wrong,
depending on the memory that follows the keys. Uncompiled flex attention is correct, but transformers always compiles
it; AVX-512 CPUs take another path.
"""

from __future__ import annotations

import functools

import torch
from torch.nn.attention.flex_attention import flex_attention

from transformers.utils import logging


logger = logging.get_logger(__name__)

TORCH_CPU_FLEX_ATTENTION_BUG = (
    "torch's compiled CPU flex_attention returns NaN or wrong values for head size 8 or 16 when the key length % 16 "
    "== 8 on CPUs with 8-wide float vectors (AVX2 without AVX-512); the bug is in inductor's CppMicroGemmFP32Vec "
    "transposed-B tail path (found in torch 2.13)"
)
# The head sizes for which the tail path with the wrong width is taken (head size a multiple of 8, below 24).
AFFECTED_HEAD_SIZES = (8, 16)


def _flex_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    # A function of our own, so that the probe's compiled entry lives on this code object and never counts as a
    # recompilation (or turns on dynamic shapes) for the `flex_attention` that transformers compiles.
    return flex_attention(query, key, value)


@functools.cache
def cpu_flex_attention_is_broken() -> bool:
    """Whether compiled CPU flex attention hits the bug on this machine (see the module docstring); probed once per
    process.

    Attention of 24 queries over 24 keys of head size 8 (the triggering shape, tensors `(1, 1, 24, 8)`), with NaN
    in the memory right after the keys, so that reading past them shows as NaN; compared with SDPA. A fixed torch
    passes the probe, which turns the warning off and lets the skipped tests run again.
    """
    batch, heads, length, head_size = 1, 1, 24, 8
    shape = (batch, heads, length, head_size)
    numel = batch * heads * length * head_size
    generator = torch.Generator(device="cpu").manual_seed(0)  # leaves the global random state alone
    query, key, value = (torch.randn(shape, generator=generator) for _ in range(3))
    # Keys followed by NaN: a kernel that reads past them produces NaN.
    buffer = torch.full((2 * numel,), float("nan"))
    poisoned_key = buffer[:numel].view(shape)
    poisoned_key.copy_(key)
    with torch.no_grad():
        expected = torch.nn.functional.scaled_dot_product_attention(query, key, value)
        got = torch.compile(_flex_attention, dynamic=False)(query, poisoned_key, value)
    return not torch.allclose(got, expected, rtol=0.0, atol=1e-4)  # False for NaN as well


def warn_if_cpu_flex_attention_is_broken(config, head_sizes: tuple[int, ...], device: torch.device) -> None:
    """Warn once when a model with `attn_implementation="flex_attention"` runs on a CPU where the bug hits one of its
    head sizes. The probe runs only for the affected head sizes, never inside a compiled graph."""
    if (
        config._attn_implementation != "flex_attention"
        or device.type != "cpu"
        or not set(head_sizes) & set(AFFECTED_HEAD_SIZES)
        or torch.compiler.is_compiling()
    ):
        return
    if cpu_flex_attention_is_broken():
        affected = " and ".join(str(size) for size in sorted(set(head_sizes) & set(AFFECTED_HEAD_SIZES)))
        logger.warning_once(
            f"attn_implementation='flex_attention' on this CPU gives wrong results (NaN or silently off) for head "
            f"size {affected}: {TORCH_CPU_FLEX_ATTENTION_BUG}. Load the "
            f"model with attn_implementation=\"sdpa\" (or \"eager\") instead."
        )
