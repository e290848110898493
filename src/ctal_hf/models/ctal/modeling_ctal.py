"""PyTorch CTAL: a text encoder and a text-referred audio encoder (Li et al., EMNLP 2021, section 3).

Shapes: B = batch, L = tokens, T = audio frames, F = audio feature size (160), H = hidden size.

Over 500 lines on purpose: as transformers' own `modeling_*.py` files, one file holds a model family's layers, its
pre-trained base class and its heads, so that the whole forward pass reads in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import causal_mask_function, create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput, logging, torch_compilable_check
from transformers.utils.generic import can_return_tuple

from ...modeling_utils import sequence_classification_loss
from ..flex_attention_cpu import warn_if_cpu_flex_attention_is_broken
from .configuration_ctal import CTALConfig


logger = logging.get_logger(__name__)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention. `attention_mask` is additive, (B, 1, Q, K). Returns (B, Q, heads, head_dim)
    and the attention probabilities (B, heads, Q, K)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class CTALMultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) of the paper. Self-attention when `key_value_states` is None; cross-modal attention
    (section 3.1.3: queries from the audio stream, keys and values from the final text states) otherwise."""

    def __init__(self, config: CTALConfig, is_causal: bool = False):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob
        # Set explicitly: transformers' SDPA integration treats a module without `is_causal` as causal.
        self.is_causal = is_causal

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, q_len, _ = hidden_states.shape
        kv_states = hidden_states if key_value_states is None else key_value_states
        query = self.query(hidden_states).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        kv_shape = (batch, kv_states.shape[1], self.num_heads, self.head_dim)
        key = self.key(kv_states).view(kv_shape).transpose(1, 2)
        value = self.value(kv_states).view(kv_shape).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=self.is_causal,
        )
        return attn_output.reshape(batch, q_len, self.num_heads * self.head_dim).contiguous(), attn_weights


class CTALAddNorm(nn.Module):
    """`LayerNorm(dropout(dense(x)) + residual)`: the post-LN sub-layer output of the paper's equations. `dense` maps
    `input_size` (H, or the FFN size) to H."""

    def __init__(self, config: CTALConfig, input_size: int):
        super().__init__()
        self.dense = nn.Linear(input_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class CTALAttentionBlock(nn.Module):
    """Attention followed by add & LayerNorm, e.g. `H~ = LayerNorm(MultiHead(H, H, H) + H)`."""

    def __init__(self, config: CTALConfig, is_causal: bool = False):
        super().__init__()
        self.self = CTALMultiHeadAttention(config, is_causal=is_causal)
        self.output = CTALAddNorm(config, config.hidden_size)

    def forward(self, hidden_states, attention_mask=None, key_value_states=None):
        attn_output, attn_weights = self.self(hidden_states, attention_mask, key_value_states)
        return self.output(attn_output, hidden_states), attn_weights


class CTALFeedForward(nn.Module):
    """`H = LayerNorm(FFN(X) + X)` with `FFN(X) = W2 act(W1 X)`."""

    def __init__(self, config: CTALConfig):
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.output = CTALAddNorm(config, config.intermediate_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(self.act(self.intermediate(hidden_states)), hidden_states)


class CTALTextLayer(GradientCheckpointingLayer):
    """One text encoding layer (section 3.1.2): bidirectional self-attention, then the FFN, both post-LN."""

    def __init__(self, config: CTALConfig):
        super().__init__()
        self.attention = CTALAttentionBlock(config)
        self.feed_forward = CTALFeedForward(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None):
        hidden_states, self_weights = self.attention(hidden_states, attention_mask)
        return self.feed_forward(hidden_states), self_weights


class CTALAudioLayer(GradientCheckpointingLayer):
    """One text-referred audio encoding layer (section 3.1.3): audio self-attention (bidirectional, or causal with
    `config.audio_causal_self_attention`), cross-modal attention to the final text states H_w^N, then the FFN."""

    def __init__(self, config: CTALConfig):
        super().__init__()
        self.attention = CTALAttentionBlock(config, is_causal=config.audio_causal_self_attention)
        self.crossattention = CTALAttentionBlock(config)
        self.feed_forward = CTALFeedForward(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        text_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cross_attention_mask: torch.Tensor | None = None,
    ):
        hidden_states, self_weights = self.attention(hidden_states, attention_mask)
        hidden_states, cross_weights = self.crossattention(hidden_states, cross_attention_mask, text_states)
        return self.feed_forward(hidden_states), self_weights, cross_weights


class CTALTextEmbeddings(nn.Module):
    """Linguistic embedding (section 3.1.1): token embedding + learned absolute position embedding (positions start
    at 0; right padding keeps valid positions unchanged), LayerNorm, dropout."""

    def __init__(self, config: CTALConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        length = inputs_embeds.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"The text has {length} tokens but the model has {self.position_embeddings.num_embeddings} positions "
                "(`max_position_embeddings`); truncate it, e.g. with the processor's `truncation=True`."
            )
        positions = self.position_embeddings.weight[:length].unsqueeze(0)
        return self.dropout(self.LayerNorm(inputs_embeds + positions))


class CTALAudioEmbeddings(nn.Module):
    """Audio embedding (section 3.1.1): a projection of the F-dimensional frames plus a learned position embedding,
    LayerNorm, dropout."""

    def __init__(self, config: CTALConfig):
        super().__init__()
        self.projection = nn.Linear(config.audio_feature_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_audio_frames, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, audio_features: torch.Tensor) -> torch.Tensor:
        length = audio_features.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"The audio has {length} frames but the model has {self.position_embeddings.num_embeddings} positions "
                "(`max_audio_frames`); truncate it, e.g. with the feature extractor's `max_frames`."
            )
        positions = self.position_embeddings.weight[:length].unsqueeze(0)
        # The feature extractor returns float32; a half-precision model takes the features in its own dtype.
        features = audio_features.to(self.projection.weight.dtype)
        return self.dropout(self.LayerNorm(self.projection(features) + positions))


class CTALTextEncoder(nn.Module):
    """The text encoding module: N text layers (section 3.1.2)."""

    def __init__(self, config: CTALConfig):
        super().__init__()
        self.layer = nn.ModuleList([CTALTextLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states, attention_mask, output_attentions: bool, output_hidden_states: bool):
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            hidden_states, weights = layer(hidden_states, attention_mask)
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return hidden_states, all_hidden, all_attentions


class CTALTextReferredAudioEncoder(nn.Module):
    """The text-referred audio encoding module: N audio layers, each attending to the final text states
    (section 3.1.3)."""

    def __init__(self, config: CTALConfig):
        super().__init__()
        self.layer = nn.ModuleList([CTALAudioLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden_states,
        text_states,
        attention_mask,
        cross_attention_mask,
        output_attentions: bool,
        output_hidden_states: bool,
    ):
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        all_cross = () if output_attentions else None
        for layer in self.layer:
            # Tensors positional so gradient checkpointing propagates their gradients.
            hidden_states, weights, cross_weights = layer(
                hidden_states, text_states, attention_mask, cross_attention_mask
            )
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
                all_cross += (cross_weights,)
        return hidden_states, all_hidden, all_attentions, all_cross


class CTALPreTrainedModel(PreTrainedModel):
    config: CTALConfig
    config_class = CTALConfig
    base_model_prefix = "ctal"
    main_input_name = "input_ids"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CTALTextLayer", "CTALAudioLayer", "CTALTextEmbeddings", "CTALAudioEmbeddings"]
    _supports_sdpa = True
    # Flash attention's unpadding assumes queries and keys share one padding mask, which the audio-to-text
    # cross-attention breaks (frames vs tokens).
    _supports_flash_attn = False
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The loss is a per-batch mean: Trainer must not treat it as normalised by `num_items_in_batch` (which would
    # mis-scale it under gradient accumulation).
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (CTALMLMHead, CTALMCAMHead)):
            init.zeros_(module.bias)


@dataclass
class CTALModelOutput(ModelOutput):
    r"""
    Outputs of [`CTALModel`].

    Args:
        text_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`):
            H_w^N, the final states of the text encoder.
        audio_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, audio_frames, hidden_size)`):
            H_a^N, the final states of the text-referred audio encoder (None when no audio was given).
        text_hidden_states (`tuple(torch.FloatTensor)`, with `output_hidden_states=True`): the embeddings and each
            text layer's output, each `(batch_size, text_length, hidden_size)`.
        audio_hidden_states (`tuple(torch.FloatTensor)`, with `output_hidden_states=True`): the embeddings and each
            audio layer's output, each `(batch_size, audio_frames, hidden_size)`.
        text_attentions (`tuple(torch.FloatTensor)`, with `output_attentions=True`): text self-attention
            probabilities per layer, each `(batch_size, heads, text_length, text_length)` (eager attention only).
        audio_attentions (`tuple(torch.FloatTensor)`, with `output_attentions=True`): audio self-attention
            probabilities per layer, each `(batch_size, heads, audio_frames, audio_frames)` (eager attention only).
        cross_attentions (`tuple(torch.FloatTensor)`, with `output_attentions=True`): audio-to-text attention
            probabilities per layer, each `(batch_size, heads, audio_frames, text_length)` (eager attention only).
    """

    text_last_hidden_state: torch.FloatTensor | None = None
    audio_last_hidden_state: torch.FloatTensor | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    audio_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class CTALModel(CTALPreTrainedModel):
    """The bare CTAL model: text encoder + text-referred audio encoder (paper Figure 1, section 3.1)."""

    # Loading the encoder from a pre-training or fine-tuning checkpoint leaves their heads behind, by design.
    _keys_to_ignore_on_load_unexpected = [
        r"^mlm_head\.",
        r"^mcam_head\.",
        r"^audio_pooling\.",
        r"^classifier\.",
        r"^(text|audio|fusion)_projection\.",
        r"^audio_attention\.",
    ]

    def __init__(self, config: CTALConfig):
        super().__init__(config)
        self.text_embeddings = CTALTextEmbeddings(config)
        self.text_encoder = CTALTextEncoder(config)
        self.audio_embeddings = CTALAudioEmbeddings(config)
        self.audio_encoder = CTALTextReferredAudioEncoder(config)
        # Fixed at construction, like the attention modules' `is_causal`: a later config edit cannot split the two.
        self.audio_causal_self_attention = config.audio_causal_self_attention
        self.post_init()

    def get_input_embeddings(self):
        return self.text_embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.text_embeddings.word_embeddings = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        audio_features: torch.FloatTensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> CTALModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`): byte-level BPE token ids, starting
                with `<s>` (see `CTALProcessor`). Right padding.
            attention_mask (`torch.Tensor` of shape `(batch_size, text_length)`, *optional*): 1 for tokens, 0 for pad.
            audio_features (`torch.FloatTensor` of shape `(batch_size, audio_frames, audio_feature_size)`,
                *optional*): acoustic frames from `CTALFeatureExtractor`; without them only the text encoder runs.
            audio_attention_mask (`torch.Tensor` of shape `(batch_size, audio_frames)`, *optional*): 1 for frames,
                0 for padding.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`, *optional*):
                token embeddings to use instead of `input_ids`.
            output_attentions (`bool`, *optional*): return attention probabilities (eager attention).
            output_hidden_states (`bool`, *optional*): return the states of every layer.
            return_dict (`bool`, *optional*): return a [`CTALModelOutput`] (default) or a tuple.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
        self._check_inputs(input_ids, attention_mask, audio_features, audio_attention_mask, inputs_embeds)
        if output_attentions and self.config._attn_implementation != "eager":
            logger.warning_once(
                f"`output_attentions=True` needs `attn_implementation='eager'`; with "
                f"{self.config._attn_implementation!r} the attention tuples hold None."
            )

        text_states = self.text_embeddings(input_ids, inputs_embeds)
        head_size = self.config.hidden_size // self.config.num_attention_heads
        warn_if_cpu_flex_attention_is_broken(self.config, head_sizes=(head_size,), device=text_states.device)
        text_mask = create_bidirectional_mask(config=self.config, inputs_embeds=text_states, attention_mask=attention_mask)
        text_states, text_hidden, text_attentions = self.text_encoder(
            text_states, text_mask, output_attentions, output_hidden_states
        )
        if audio_features is None:
            return CTALModelOutput(
                text_last_hidden_state=text_states, text_hidden_states=text_hidden, text_attentions=text_attentions
            )

        audio_states = self.audio_embeddings(audio_features)
        audio_mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=audio_states,
            attention_mask=audio_attention_mask,
            and_mask_function=causal_mask_function if self.audio_causal_self_attention else None,
        )
        cross_mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=audio_states,
            attention_mask=attention_mask,
            encoder_hidden_states=text_states,
        )
        audio_states, audio_hidden, audio_attentions, cross_attentions = self.audio_encoder(
            audio_states, text_states, audio_mask, cross_mask, output_attentions, output_hidden_states
        )
        return CTALModelOutput(
            text_last_hidden_state=text_states,
            audio_last_hidden_state=audio_states,
            text_hidden_states=text_hidden,
            audio_hidden_states=audio_hidden,
            text_attentions=text_attentions,
            audio_attentions=audio_attentions,
            cross_attentions=cross_attentions,
        )


    def _check_inputs(self, input_ids, attention_mask, audio_features, audio_attention_mask, inputs_embeds) -> None:
        """Errors naming the tensors and their shapes for inputs that would otherwise fail deep inside the model (a
        reshape or index error) or be read wrongly. Shapes only, plus one reduction over the token ids (the only
        check that reads values, and so the only one that waits for the device)."""
        text_name, text = ("input_ids", input_ids) if input_ids is not None else ("inputs_embeds", inputs_embeds)
        if input_ids is not None:
            if input_ids.ndim != 2 or input_ids.is_floating_point() or input_ids.is_complex():
                raise ValueError(
                    f"`input_ids` must be integer token ids of shape (batch, text_length), got shape "
                    f"{tuple(input_ids.shape)} and dtype {input_ids.dtype}; tokenise the text with `CTALProcessor`."
                )
            vocab_size = self.text_embeddings.word_embeddings.num_embeddings
            torch_compilable_check(
                ((input_ids >= 0) & (input_ids < vocab_size)).all(),
                lambda: f"`input_ids` hold ids from {int(input_ids.min())} to {int(input_ids.max())}, outside the "
                f"model's vocabulary [0, {vocab_size}) (`vocab_size`): tokenise with the tokenizer saved with this "
                "model, or build the model with that tokenizer's `len(tokenizer)` as `vocab_size`.",
            )
        elif inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"`inputs_embeds` must have shape (batch, text_length, {self.config.hidden_size}), got "
                f"{tuple(inputs_embeds.shape)}."
            )
        batch_size, text_length = text.shape[:2]
        if attention_mask is not None and tuple(attention_mask.shape) != (batch_size, text_length):
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)} but `{text_name}` has shape "
                f"{tuple(text.shape)}: the mask needs one entry per token, shape ({batch_size}, {text_length})."
            )
        if audio_features is None:
            if audio_attention_mask is not None:
                raise ValueError("`audio_attention_mask` was given without `audio_features`; pass both or neither.")
            return
        if audio_features.ndim != 3 or audio_features.shape[-1] != self.config.audio_feature_size:
            raise ValueError(
                f"`audio_features` must have shape (batch, frames, {self.config.audio_feature_size}), got "
                f"{tuple(audio_features.shape)}; compute them with `CTALFeatureExtractor`."
            )
        if audio_features.shape[0] != batch_size:
            raise ValueError(
                f"`audio_features` hold {audio_features.shape[0]} utterances (shape {tuple(audio_features.shape)}) "
                f"but `{text_name}` hold {batch_size} texts (shape {tuple(text.shape)}): pass one transcript per "
                "utterance, in the same order."
            )
        if audio_attention_mask is not None and tuple(audio_attention_mask.shape) != tuple(audio_features.shape[:2]):
            raise ValueError(
                f"`audio_attention_mask` has shape {tuple(audio_attention_mask.shape)} but `audio_features` have "
                f"shape {tuple(audio_features.shape)}: the mask needs one entry per frame, shape "
                f"{tuple(audio_features.shape[:2])}."
            )


class CTALPredictionTransform(nn.Module):
    """dense -> activation -> LayerNorm, shared by the MLM and MCAM heads."""

    def __init__(self, config: CTALConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.act(self.dense(hidden_states)))


class CTALMLMHead(nn.Module):
    """Masked language modelling head (section 3.2.1); the decoder weight is tied to the word embeddings."""

    def __init__(self, config: CTALConfig):
        super().__init__()
        self.transform = CTALPredictionTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, text_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(text_states)) + self.bias


class CTALMCAMHead(nn.Module):
    """Masked cross-modal acoustic modelling head (section 3.2.2): predicts the F-dimensional frames."""

    def __init__(self, config: CTALConfig):
        super().__init__()
        self.transform = CTALPredictionTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.audio_feature_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.audio_feature_size))

    def forward(self, audio_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(audio_states)) + self.bias


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits `(N, V)` of the N labelled tokens against their ids `(N,)`, averaged (0 when
    N = 0)."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits.float(), targets)


def masked_acoustic_loss(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between predicted and original frames, averaged over every selected frame x feature element of the batch
    (section 3.2.2); unselected and padded frames never count (0 when nothing is selected)."""
    mask = mask.bool()
    if not mask.any():
        return predictions.sum() * 0.0
    return nn.functional.l1_loss(predictions[mask].float(), targets[mask].float())


@dataclass
class CTALForPreTrainingOutput(ModelOutput):
    r"""
    Outputs of [`CTALForPreTraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, with labels): `mlm_loss_weight * mlm_loss + mcam_loss_weight *
            mcam_loss` over the tasks that are enabled and have labels.
        mlm_loss (`torch.FloatTensor` of shape `()`): cross-entropy over the masked tokens.
        mcam_loss (`torch.FloatTensor` of shape `()`): L1 over the masked frames.
        mlm_logits (`torch.FloatTensor`): `(batch_size, text_length, vocab_size)`; with `labels` (and
            `full_mlm_logits=False`) only the labelled tokens' rows, `(num_labelled, vocab_size)`, in the order of
            `labels[labels != -100]`.
        mcam_predictions (`torch.FloatTensor` of shape `(batch_size, audio_frames, audio_feature_size)`).
        text_last_hidden_state, audio_last_hidden_state, text_hidden_states, audio_hidden_states, text_attentions,
            audio_attentions, cross_attentions: as in [`CTALModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mcam_loss: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    mcam_predictions: torch.FloatTensor | None = None
    text_last_hidden_state: torch.FloatTensor | None = None
    audio_last_hidden_state: torch.FloatTensor | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    audio_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class CTALForPreTraining(CTALPreTrainedModel):
    """CTAL with the MLM and MCAM heads (section 3.2). Both tasks run in one forward pass: the audio stream attends to
    the text encoding of the MLM-masked text. `config.mlm_loss_weight = 0` or `config.mcam_loss_weight = 0` gives the
    single-task ablations (Table 4 rows b and c)."""

    _tied_weights_keys = {"mlm_head.decoder.weight": "ctal.text_embeddings.word_embeddings.weight"}

    def __init__(self, config: CTALConfig):
        super().__init__(config)
        self.ctal = CTALModel(config)
        self.mlm_head = CTALMLMHead(config)
        self.mcam_head = CTALMCAMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.mlm_head.decoder = new_embeddings
        # `resize_token_embeddings` swaps the decoder: the output bias follows its vocabulary size.
        old_bias = self.mlm_head.bias
        if old_bias.shape[0] != new_embeddings.out_features:
            bias = old_bias.new_zeros(new_embeddings.out_features)
            kept = min(old_bias.shape[0], bias.shape[0])
            bias[:kept] = old_bias.data[:kept]
            self.mlm_head.bias = nn.Parameter(bias)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        audio_features: torch.FloatTensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        mcam_labels: torch.FloatTensor | None = None,
        mcam_label_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        full_mlm_logits: bool = False,
    ) -> CTALForPreTrainingOutput:
        r"""
        Args:
            input_ids, attention_mask, audio_features, audio_attention_mask, inputs_embeds, output_attentions,
                output_hidden_states, return_dict: as in [`CTALModel`]; `input_ids` and `audio_features` are the
                masked inputs (see `DataCollatorForCTALPretraining`).
            labels (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*): original ids of the masked
                tokens, -100 elsewhere.
            mcam_labels (`torch.FloatTensor` of shape `(batch_size, audio_frames, audio_feature_size)`, *optional*):
                the original (unmasked) frames.
            mcam_label_mask (`torch.Tensor` of shape `(batch_size, audio_frames)`, *optional*): 1 for the frames
                selected for MCAM (the loss counts only these).
            full_mlm_logits (`bool`, defaults to `False`): with `labels`, the vocabulary projection runs only at
                the labelled tokens (about 15%; as ModernBERT's `sparse_prediction`), which is most of the head's cost
                and memory, and `mlm_logits` holds their rows only. `True` computes the logits of every token,
                `(batch_size, text_length, vocab_size)`, as without labels. The losses are the same either way.
        """
        if (mcam_labels is None) != (mcam_label_mask is None):
            raise ValueError("Pass `mcam_labels` and `mcam_label_mask` together (targets and the frames they cover).")
        text = input_ids if input_ids is not None else inputs_embeds
        targets = [("labels", labels, text, 2, "input_ids")]
        targets += [("mcam_labels", mcam_labels, audio_features, 3, "audio_features")]
        targets += [("mcam_label_mask", mcam_label_mask, audio_features, 2, "audio_features")]
        for name, target, source, dims, source_name in targets:
            if target is not None and source is not None and tuple(target.shape) != tuple(source.shape[:dims]):
                raise ValueError(
                    f"`{name}` has shape {tuple(target.shape)} but `{source_name}` has shape {tuple(source.shape)}; "
                    f"expected {tuple(source.shape[:dims])} (build the batch with `DataCollatorForCTALPretraining`)."
                )
        outputs = self.ctal(
            input_ids=input_ids,
            attention_mask=attention_mask,
            audio_features=audio_features,
            audio_attention_mask=audio_attention_mask,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        labelled = None if labels is None else labels != -100
        text_states = outputs.text_last_hidden_state
        sparse = labelled is not None and not full_mlm_logits
        mlm_logits = self.mlm_head(text_states[labelled] if sparse else text_states)
        mlm_loss = mcam_loss = loss = None
        if labels is not None and self.config.mlm_loss_weight > 0:
            mlm_loss = masked_lm_loss(mlm_logits if sparse else mlm_logits[labelled], labels[labelled])
            loss = self.config.mlm_loss_weight * mlm_loss
        mcam_predictions = None
        if outputs.audio_last_hidden_state is not None:
            mcam_predictions = self.mcam_head(outputs.audio_last_hidden_state)

        if mcam_labels is not None and self.config.mcam_loss_weight > 0:
            if mcam_predictions is None:
                raise ValueError("`mcam_labels` were given without `audio_features`.")
            mcam_loss = masked_acoustic_loss(mcam_predictions, mcam_labels, mcam_label_mask)
            weighted = self.config.mcam_loss_weight * mcam_loss
            loss = weighted if loss is None else loss + weighted

        return CTALForPreTrainingOutput(
            loss=loss,
            mlm_loss=mlm_loss,
            mcam_loss=mcam_loss,
            mlm_logits=mlm_logits,
            mcam_predictions=mcam_predictions,
            **outputs,
        )


class CTALAttentionPooling(nn.Module):
    """Attention pooling over time (section 3.3): `h^attn = Softmax(v . tanh(W . H)) . H`, padding excluded."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = self.score(torch.tanh(self.dense(hidden_states))).squeeze(-1)
        return masked_softmax_pool(scores, hidden_states, mask)


def masked_softmax_pool(scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`Softmax(scores) . values` over time: scores `(B, T)`, values `(B, T, H)` -> `(B, H)`, padding excluded."""
    if mask is not None:
        scores = scores.masked_fill(~mask.bool(), torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("bt,bth->bh", weights, values)


def masked_max_pool(hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """MaxPool over time of `(B, T, H)` states, padding excluded -> `(B, H)`."""
    if mask is not None:
        hidden_states = hidden_states.masked_fill(~mask.bool()[..., None], torch.finfo(hidden_states.dtype).min)
    return hidden_states.max(dim=1).values


def orthogonal_loss(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """`|a . s| / (||a|| ||s||)` averaged over the batch (section 3.3.1, with the denominator the paper intends)."""
    return nn.functional.cosine_similarity(first, second, dim=-1, eps=1e-8).abs().mean()


@dataclass
class CTALSequenceClassifierOutput(ModelOutput):
    r"""
    Outputs of [`CTALForSequenceClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, with labels): task loss, plus `orthogonal_loss_weight *
            orthogonal_loss` in training.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`).
        embeddings (`torch.FloatTensor` of shape `(batch_size, 2 * hidden_size)`): the utterance representation fed to
            the classifier (h^fuse with fusion; with `classifier_head="original_code"` the fused vector after
            tanh(Linear 2H->2H), the speaker embedding of the released code); cosine-score it for speaker
            verification.
        orthogonal_loss (`torch.FloatTensor` of shape `()`): the orthogonal regularisation term (section 3.3.1), when
            fusion uses both modalities.
        text_hidden_states, audio_hidden_states, text_attentions, audio_attentions, cross_attentions: as in
            [`CTALModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    orthogonal_loss: torch.FloatTensor | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    audio_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class CTALForSequenceClassification(CTALPreTrainedModel):
    """CTAL with the fine-tuning head of section 3.3: audio attention pooling + max pooling, text `<s>` state + max
    pooling, the fusion `h^fuse = (h_a^attn + h_w^attn) (+) (h_a^max + h_w^max)` and a linear classifier on h^fuse.
    Ablations (Table 4): `use_fusion=False` gives `h_w^attn (+) h_a^attn` (row d); `modality_outputs="text"` (row e)
    or `"audio"` (row f) gives `h^attn (+) h^max` of one stream. Classification (cross-entropy), regression
    (`num_labels=1`; L1 as in the paper or MSE with `regression_loss="mse"`) and multi-label classification (BCE)
    follow `config.problem_type`.

    `config.classifier_head="original_code"` computes the head of the authors' released fine-tuning code instead:
    `t = tanh(text_projection(H_w^N))`, `a = tanh(audio_projection(H_a^N))`; text pooled `t[:, 0]` and max-pooled over
    `t[:, 1:]` (without `<s>`); audio pooled `Softmax(audio_attention(a)) . a` (a biased score) and max-pooled over
    `a`; the same fusion or ablation of these vectors, then `tanh(fusion_projection(.))` (2H -> 2H) and a bias-free
    classifier. The released code defines a classifier dropout but never applies it: `classifier_dropout=0.0`
    trains as it did."""

    def __init__(self, config: CTALConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.ctal = CTALModel(config)
        hidden = config.hidden_size
        uses_text, uses_audio = config.modality_outputs != "audio", config.modality_outputs != "text"
        if config.classifier_head == "original_code":
            self.text_projection = nn.Linear(hidden, hidden) if uses_text else None
            self.audio_projection = nn.Linear(hidden, hidden) if uses_audio else None
            self.audio_attention = nn.Linear(hidden, 1) if uses_audio else None
            self.fusion_projection = nn.Linear(2 * hidden, 2 * hidden)
        else:
            self.audio_pooling = CTALAttentionPooling(hidden) if uses_audio else None
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, config.num_labels, bias=config.classifier_head == "paper")
        self.post_init()

    def _pool(self, outputs: CTALModelOutput, attention_mask, audio_attention_mask):
        """The four pooled vectors of section 3.3, each `(B, H)` (None for a modality that is not used)."""
        text_attn = text_max = audio_attn = audio_max = None
        original = self.config.classifier_head == "original_code"
        if self.config.modality_outputs != "audio":
            text = outputs.text_last_hidden_state
            if original:
                text = torch.tanh(self.text_projection(text))
                text_max = masked_max_pool(text[:, 1:], None if attention_mask is None else attention_mask[:, 1:])
            else:
                text_max = masked_max_pool(text, attention_mask)
            text_attn = text[:, 0]
        if self.config.modality_outputs != "text":
            audio = outputs.audio_last_hidden_state
            if original:
                audio = torch.tanh(self.audio_projection(audio))
                audio_attn = masked_softmax_pool(self.audio_attention(audio).squeeze(-1), audio, audio_attention_mask)
            else:
                audio_attn = self.audio_pooling(audio, audio_attention_mask)
            audio_max = masked_max_pool(audio, audio_attention_mask)
        return text_attn, text_max, audio_attn, audio_max

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        audio_features: torch.FloatTensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> CTALSequenceClassifierOutput:
        r"""
        Args:
            input_ids, attention_mask, audio_features, audio_attention_mask, inputs_embeds, output_attentions,
                output_hidden_states, return_dict: as in [`CTALModel`].
            labels (`torch.Tensor`, *optional*): class ids `(batch_size,)`, regression targets `(batch_size,)` for
                `num_labels=1`, or multi-hot `(batch_size, num_labels)` floats for multi-label classification.
        """
        if audio_features is None and self.config.modality_outputs != "text":
            raise ValueError(
                f"`audio_features` are required with `modality_outputs={self.config.modality_outputs!r}`."
            )
        outputs = self.ctal(
            input_ids=input_ids,
            attention_mask=attention_mask,
            audio_features=audio_features,
            audio_attention_mask=audio_attention_mask,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        text_attn, text_max, audio_attn, audio_max = self._pool(outputs, attention_mask, audio_attention_mask)

        ortho = None
        if self.config.modality_outputs == "audio":
            embeddings = torch.cat([audio_attn, audio_max], dim=-1)
        elif self.config.modality_outputs == "text":
            embeddings = torch.cat([text_attn, text_max], dim=-1)
        elif self.config.use_fusion:
            embeddings = torch.cat([audio_attn + text_attn, audio_max + text_max], dim=-1)
            ortho = orthogonal_loss(audio_attn, text_attn) + orthogonal_loss(audio_max, text_max)
        else:
            embeddings = torch.cat([text_attn, audio_attn], dim=-1)
        if self.config.classifier_head == "original_code":
            embeddings = torch.tanh(self.fusion_projection(embeddings))

        logits = self.classifier(self.dropout(embeddings))
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(self.config, logits, labels)
            if ortho is not None and self.training and self.config.orthogonal_loss_weight > 0:
                loss = loss + self.config.orthogonal_loss_weight * ortho

        return CTALSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            embeddings=embeddings,
            orthogonal_loss=ortho,
            text_hidden_states=outputs.text_hidden_states,
            audio_hidden_states=outputs.audio_hidden_states,
            text_attentions=outputs.text_attentions,
            audio_attentions=outputs.audio_attentions,
            cross_attentions=outputs.cross_attentions,
        )


__all__ = [
    "CTALModel",
    "CTALForPreTraining",
    "CTALForSequenceClassification",
    "CTALPreTrainedModel",
    "CTALModelOutput",
    "CTALForPreTrainingOutput",
    "CTALSequenceClassifierOutput",
]
