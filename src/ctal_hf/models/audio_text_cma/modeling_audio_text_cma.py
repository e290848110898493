"""PyTorch audio-text cross-modal attention model: a pre-trained wav2vec 2.0-style speech encoder and a pre-trained
BERT-style text encoder joined by bidirectional cross-modal attention and statistics pooling (Krishna D N et al.,
"Using Large Pre-Trained Models with Cross-Modal Attention for Multi-Modal Emotion Recognition", 2021, sections 2
and 4, Figure 1).

Padding is honoured everywhere, so a padded batch gives each utterance the output it gets alone: the waveform mask
goes into the speech encoder (layer-norm feature encoders) and gives its frame lengths; padded frames are zeroed
before each convolution, lengths are recomputed after each stride, batch norm takes its statistics over valid frames
only, the BiLSTM reads packed sequences, both attentions mask padded keys, and pooling covers valid positions only.

Shapes: B = batch, S = waveform samples, N = speech-encoder frames (one per 20 ms), T = audio frames after the audio
feature encoder (N / 4 by default), L = text tokens, D = `hidden_size` (256).

Over 500 lines on purpose: as transformers' own `modeling_*.py` files, one file holds a model family's layers, its
pre-trained base class and its heads, so that the whole forward pass reads in one place.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoConfig, AutoModel
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.models.bert.modeling_bert import eager_attention_forward
from transformers.utils import ModelOutput, logging
from transformers.utils.generic import can_return_tuple

from ...modeling_utils import sequence_classification_loss
from .configuration_audio_text_cma import AudioTextCMAConfig


logger = logging.get_logger(__name__)

# Floor of the variance in statistics pooling: keeps the standard deviation's gradient finite for an utterance whose
# frames are all equal (e.g. a single frame).
STATISTICS_POOLING_EPS = 1e-5


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """`(B,)` valid lengths -> `(B, max_length)` bool mask, True at valid (leading) positions."""
    return torch.arange(max_length, device=lengths.device) < lengths[:, None]


def statistics_pooling(hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Statistics pooling (section 2.5): mean and standard deviation over the valid positions of each sequence.

    Args:
        hidden_states: `(B, T, D)`.
        mask: `(B, T)` bool, True at valid positions (at least one per row).

    Returns:
        `(B, 2 * D)`: `[mean | std]`, with the population variance floored at `STATISTICS_POOLING_EPS`.
    """
    weights = mask[..., None].to(hidden_states.dtype)
    # `where`, not a product: padded positions may hold anything, even non-finite values.
    hidden_states = torch.where(mask[..., None], hidden_states, 0.0)
    count = weights.sum(dim=1)
    mean = hidden_states.sum(dim=1) / count
    variance = (torch.where(mask[..., None], hidden_states - mean[:, None], 0.0) ** 2).sum(dim=1) / count
    return torch.cat([mean, variance.clamp(min=STATISTICS_POOLING_EPS).sqrt()], dim=-1)


class AudioTextCMAMaskedBatchNorm1d(nn.BatchNorm1d):
    """`nn.BatchNorm1d` over the valid frames of a padded batch: in training the statistics (and the running
    estimates) are those of the valid frames only, exactly as `nn.BatchNorm1d` on their concatenation; padded frames
    come out as zeros."""

    def forward(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """`hidden_states (B, C, T)`, `frame_mask (B, T)` bool -> `(B, C, T)`."""
        frames = hidden_states.transpose(1, 2)
        valid = super().forward(frames[frame_mask])
        # Zeros of the output's dtype, which autocast may choose.
        normalised = valid.new_zeros(frames.shape)
        normalised[frame_mask] = valid
        return normalised.transpose(1, 2)


class AudioTextCMAConvBlock(nn.Module):
    """One block of equation 1: Conv1d (padding `kernel // 2`) -> batch norm -> ReLU (section 2.2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.batch_norm = AudioTextCMAMaskedBatchNorm1d(out_channels)
        self.activation = nn.ReLU()

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames of inputs with `lengths` valid frames (the `nn.Conv1d` length formula)."""
        (padding,), (kernel,), (stride,) = self.conv.padding, self.conv.kernel_size, self.conv.stride
        return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1

    def forward(self, hidden_states: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, C_in, T_in)`, `(B,)` -> `(B, C_out, T_out)` with zeros at padded frames, and the new `(B,)` lengths."""
        # Zeros at padded frames are what an utterance run alone sees there (the convolution's own zero padding).
        hidden_states = hidden_states.masked_fill(~lengths_to_mask(lengths, hidden_states.shape[-1])[:, None], 0.0)
        hidden_states = self.conv(hidden_states)
        lengths = self.output_lengths(lengths)
        hidden_states = self.batch_norm(hidden_states, lengths_to_mask(lengths, hidden_states.shape[-1]))
        return self.activation(hidden_states), lengths


class AudioTextCMAAudioFeatureEncoder(nn.Module):
    """The audio feature encoder (section 2.2, equations 1-2): conv blocks that reduce the frame rate (4x with the
    defaults), then one BiLSTM of `hidden_size // 2` per direction with dropout on its output."""

    def __init__(self, config: AudioTextCMAConfig, input_size: int):
        super().__init__()
        channels = [input_size, *config.conv_dim]
        self.conv_layers = nn.ModuleList(
            AudioTextCMAConvBlock(channels[index], channels[index + 1], kernel, stride)
            for index, (kernel, stride) in enumerate(zip(config.conv_kernel, config.conv_stride))
        )
        self.lstm = nn.LSTM(channels[-1], config.hidden_size // 2, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(config.lstm_dropout)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames out of the encoder for `lengths` speech-encoder frames."""
        for layer in self.conv_layers:
            lengths = layer.output_lengths(lengths)
        return lengths

    def forward(self, hidden_states: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`C (B, N, F)` with `(B,)` valid frames -> `H_A (B, T, D)` (zeros at padded frames) and `(B,)` lengths."""
        hidden_states = hidden_states.transpose(1, 2)
        for layer in self.conv_layers:
            hidden_states, lengths = layer(hidden_states, lengths)
        hidden_states = hidden_states.transpose(1, 2)
        packed = pack_padded_sequence(hidden_states, lengths.cpu(), batch_first=True, enforce_sorted=False)
        # Weights loaded by `from_pretrained` or replicated across GPUs are separate tensors; cuDNN wants one block.
        self.lstm.flatten_parameters()
        output, _ = self.lstm(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=hidden_states.shape[1])
        return self.dropout(output), lengths


class AudioTextCMAAttention(nn.Module):
    """Multi-head scaled dot-product attention from one modality to the other (equations 4-5): queries from
    `hidden_states`, keys and values from `key_value_states`, heads concatenated and projected by W_0."""

    def __init__(self, config: AudioTextCMAConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_dropout
        # Set explicitly: transformers' SDPA integration treats a module without `is_causal` as causal.
        self.is_causal = False

    def forward(
        self, hidden_states: torch.Tensor, key_value_states: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, Q, D)` queries, `(B, K, D)` keys/values, mask `(B, 1, Q, K)` or None -> `(B, Q, D)` and the
        probabilities `(B, heads, Q, K)` (eager attention only)."""
        batch, q_len, _ = hidden_states.shape
        kv_shape = (batch, key_value_states.shape[1], self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.k_proj(key_value_states).view(kv_shape).transpose(1, 2)
        value = self.v_proj(key_value_states).view(kv_shape).transpose(1, 2)
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
            is_causal=False,
        )
        return self.out_proj(attn_output.reshape(batch, q_len, -1).contiguous()), attn_weights


class AudioTextCMAFeedForward(nn.Module):
    """The feed-forward of a cross-modal attention block, inner width `intermediate_size` (section 4: the width of
    its input)."""

    def __init__(self, config: AudioTextCMAConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class AudioTextCMALayer(GradientCheckpointingLayer):
    """A cross-modal attention block, CMA-1 or CMA-2 (section 2.4, Figure 2): layer norm of the queries and of the
    keys/values before the attention, then a pre-norm feed-forward, each with a residual connection (the cross-modal
    Transformer block of the paper's reference [3])."""

    def __init__(self, config: AudioTextCMAConfig):
        super().__init__()
        self.query_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.key_value_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = AudioTextCMAAttention(config)
        self.feed_forward_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = AudioTextCMAFeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, Q, D)` queries attending to `(B, K, D)` -> `(B, Q, D)` and the attention probabilities."""
        attn_output, attn_weights = self.attention(
            self.query_layer_norm(hidden_states), self.key_value_layer_norm(key_value_states), attention_mask
        )
        hidden_states = hidden_states + self.dropout(attn_output)
        hidden_states = hidden_states + self.dropout(self.feed_forward(self.feed_forward_layer_norm(hidden_states)))
        return hidden_states, attn_weights


def _text_model_kwargs(text_config) -> dict:
    """Build BERT-style encoders without their pooler (`add_pooling_layer=False` where the class takes it): the model
    reads the token states, and an unused pooler would get no gradient."""
    model_class = MODEL_MAPPING[type(text_config)]
    return {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(model_class).parameters else {}


class AudioTextCMAPreTrainedModel(PreTrainedModel):
    config: AudioTextCMAConfig
    config_class = AudioTextCMAConfig
    base_model_prefix = "audio_text_cma"
    main_input_name = "input_values"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["AudioTextCMALayer", "AudioTextCMAAudioFeatureEncoder"]
    _supports_sdpa = True
    # Flash attention's unpadding assumes that queries and keys share one padding mask; cross-modal attention pairs
    # frames with tokens.
    _supports_flash_attn = False
    _supports_flex_attn = False
    # The loss is a per-batch mean: Trainer must not treat it as normalised by `num_items_in_batch`.
    accepts_loss_kwargs = False

    def freeze_feature_encoder(self) -> None:
        """Stop gradients into the speech encoder's convolutional feature encoder (section 4)."""
        # What wav2vec2's `freeze_feature_encoder` does; HuBERT's bare model lacks that method.
        self.base_model.audio_model.feature_extractor._freeze_parameters()

    def freeze_pretrained_encoders(self) -> None:
        """Stop gradients into both pre-trained encoders (Table 1, "no fine-tuning"); the layers above them train."""
        base = self.base_model
        for encoder in (base.audio_model, base.text_model):
            if encoder is not None:
                encoder.requires_grad_(False)
        if base.audio_model is not None:
            # Also tells wav2vec2's feature encoder not to force gradients on its input.
            self.freeze_feature_encoder()

    def _apply_freezing(self) -> None:
        """The config's freezing switches, applied at construction and again after loading weights."""
        if self.config.freeze_pretrained_encoders:
            self.freeze_pretrained_encoders()
        elif self.config.freeze_feature_encoder and self.base_model.audio_model is not None:
            self.freeze_feature_encoder()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        model = super().from_pretrained(*args, **kwargs)
        loaded = model[0] if isinstance(model, tuple) else model
        loaded._apply_freezing()
        return model

    @classmethod
    def from_audio_text_pretrained(
        cls, audio_name_or_path: str | None = None, text_name_or_path: str | None = None, **kwargs
    ) -> "AudioTextCMAPreTrainedModel":
        r"""
        Start from a pre-trained speech encoder and a pre-trained text encoder (as
        `VisionTextDualEncoderModel.from_vision_text_pretrained` does); the layers above them are newly initialised.

        Args:
            audio_name_or_path (`str`): Hub id or folder of a wav2vec 2.0-style checkpoint (wav2vec2, HuBERT, WavLM,
                data2vec-audio), e.g. `"facebook/wav2vec2-large-lv60"`; not needed with `modality_outputs="text"`.
            text_name_or_path (`str`): Hub id or folder of a BERT-style checkpoint, e.g.
                `"google-bert/bert-base-uncased"`; not needed with `modality_outputs="audio"`.
            kwargs: `audio_*` arguments go to the speech encoder's `from_pretrained` (e.g. `audio_revision=`,
                `audio_dtype=`), `text_*` arguments to the text encoder's, the rest to [`AudioTextCMAConfig`] (e.g.
                `num_labels=4`, `id2label=...`, `modality_outputs="audio"`, `freeze_pretrained_encoders=True`).

        Example:

        ```python
        >>> model = AudioTextCMAForSequenceClassification.from_audio_text_pretrained(
        ...     "facebook/wav2vec2-large-lv60", "google-bert/bert-base-uncased", num_labels=4
        ... )
        ```
        """
        audio_kwargs = {name[len("audio_") :]: kwargs.pop(name) for name in list(kwargs) if name.startswith("audio_")}
        text_kwargs = {name[len("text_") :]: kwargs.pop(name) for name in list(kwargs) if name.startswith("text_")}
        modality = kwargs.get("modality_outputs", "both")
        audio_model = text_model = None
        if modality != "text":
            if audio_name_or_path is None:
                raise ValueError(f"`audio_name_or_path` is required with modality_outputs={modality!r}.")
            audio_model = AutoModel.from_pretrained(audio_name_or_path, **audio_kwargs)
        if modality != "audio":
            if text_name_or_path is None:
                raise ValueError(f"`text_name_or_path` is required with modality_outputs={modality!r}.")
            text_config = text_kwargs.pop("config", None) or AutoConfig.from_pretrained(text_name_or_path)
            text_model = AutoModel.from_pretrained(
                text_name_or_path, config=text_config, **{**_text_model_kwargs(text_config), **text_kwargs}
            )
        # Copies: building the joint config resets its sub-configs' attention implementation; `_share_config`
        # restores the encoders' own.
        config = AudioTextCMAConfig(
            audio_config=copy.deepcopy(audio_model.config) if audio_model is not None else None,
            text_config=copy.deepcopy(text_model.config) if text_model is not None else None,
            **kwargs,
        )
        model = cls(config, audio_model=audio_model, text_model=text_model)
        logger.info(
            "The pre-trained encoders were loaded; the audio feature encoder, text projection, cross-modal attentions "
            "and classifier are newly initialised: train the model before using its predictions."
        )
        return model


@dataclass
class AudioTextCMAModelOutput(ModelOutput):
    r"""
    Outputs of [`AudioTextCMAModel`].

    Args:
        embeddings (`torch.FloatTensor` of shape `(batch_size, 4 * hidden_size)`, or `2 * hidden_size` for one
            modality): the fused utterance vector, `[mean | std]` of the audio stream then of the text stream (early
            fusion, section 2.5).
        audio_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, audio_frames, hidden_size)`): the output
            of CMA-1 (of the BiLSTM, `H_A`, with `modality_outputs="audio"`); zeros or unused values at padded frames.
        text_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`): the output of
            CMA-2 (of the projection, `H_T`, with `modality_outputs="text"`).
        audio_frame_mask (`torch.BoolTensor` of shape `(batch_size, audio_frames)`): True at the valid frames of
            `audio_last_hidden_state`.
        audio_hidden_states, audio_attentions (`tuple(torch.FloatTensor)`, with `output_hidden_states` /
            `output_attentions`): the speech encoder's, as it returns them.
        text_hidden_states, text_attentions (`tuple(torch.FloatTensor)`, with `output_hidden_states` /
            `output_attentions`): the text encoder's.
        cross_attentions (`tuple(torch.FloatTensor)`, with `output_attentions=True` and eager attention): CMA-1's
            probabilities `(batch_size, heads, audio_frames, text_length)` and CMA-2's
            `(batch_size, heads, text_length, audio_frames)`.
    """

    embeddings: torch.FloatTensor | None = None
    audio_last_hidden_state: torch.FloatTensor | None = None
    text_last_hidden_state: torch.FloatTensor | None = None
    audio_frame_mask: torch.BoolTensor | None = None
    audio_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class AudioTextCMAModel(AudioTextCMAPreTrainedModel):
    """The model of Figure 1 up to the fused utterance vector: speech encoder -> audio feature encoder (`H_A`), text
    encoder -> projection (`H_T`), CMA-1 (`H_A` attends to `H_T`) and CMA-2 (`H_T` attends to `H_A`), statistics
    pooling of each, concatenated. `modality_outputs="audio"` / `"text"` keep one stream without cross-modal attention
    (Table 2).

    Args:
        config ([`AudioTextCMAConfig`]).
        audio_model, text_model (`PreTrainedModel`, *optional*): encoders to use instead of building them from
            `config.audio_config` / `config.text_config` (see `from_audio_text_pretrained`).
    """

    # Loading the base model from a classification checkpoint leaves the classifier behind, by design.
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(
        self,
        config: AudioTextCMAConfig,
        audio_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        self.audio_model = self.audio_feature_encoder = None
        self.text_model = self.text_projection = None
        self.audio_to_text_attention = self.text_to_audio_attention = None
        if config.modality_outputs != "text":
            self.audio_model = audio_model if audio_model is not None else AutoModel.from_config(config.audio_config)
            if not hasattr(self.audio_model, "_get_feat_extract_output_lengths") or not hasattr(
                getattr(self.audio_model, "feature_extractor", None), "_freeze_parameters"
            ):
                raise ValueError(
                    f"`audio_config` ({config.audio_config.model_type}) is not a wav2vec 2.0-style speech encoder: "
                    "use wav2vec2, hubert, wavlm or data2vec-audio (a convolutional feature encoder on the raw "
                    "waveform with `_get_feat_extract_output_lengths`)."
                )
            self._share_config("audio_config", self.audio_model)
            audio_config = self.audio_model.config
            # wav2vec2 with an adapter outputs `output_hidden_size` features per frame.
            audio_size = getattr(audio_config, "output_hidden_size", None) or audio_config.hidden_size
            self.audio_feature_encoder = AudioTextCMAAudioFeatureEncoder(config, audio_size)
        if config.modality_outputs != "audio":
            if text_model is None:
                text_model = AutoModel.from_config(config.text_config, **_text_model_kwargs(config.text_config))
            self.text_model = text_model
            self._share_config("text_config", self.text_model)
            # Equation 3: a kernel-1 convolution over tokens, i.e. the same linear map at every token.
            self.text_projection = nn.Linear(self.text_model.config.hidden_size, config.hidden_size)
        if config.modality_outputs == "both":
            self.audio_to_text_attention = AudioTextCMALayer(config)  # CMA-1
            self.text_to_audio_attention = AudioTextCMALayer(config)  # CMA-2
        self.post_init()
        self._apply_freezing()

    def _share_config(self, name: str, encoder: PreTrainedModel) -> None:
        """Make `config.<name>` the encoder's config (one object, so later edits reach the encoder), keeping the
        attention implementation the encoder was built or loaded with (as `VisionTextDualEncoderModel` does)."""
        implementation = encoder.config._attn_implementation
        if implementation is None:
            # The joint config was built from this very object, which reset it: take the encoder's default.
            implementation = encoder._check_and_adjust_attn_implementation(None, is_init_check=True)
        getattr(self.config, name)._attn_implementation = implementation
        encoder.config = getattr(self.config, name)

    def get_input_embeddings(self):
        return self.text_model.get_input_embeddings() if self.text_model is not None else None

    def set_input_embeddings(self, value):
        self.text_model.set_input_embeddings(value)

    def _minimum_num_samples(self) -> int:
        """Fewest waveform samples that give the speech encoder one frame."""
        candidates = torch.arange(1, 100_000)
        return int(candidates[self.audio_model._get_feat_extract_output_lengths(candidates) >= 1][0])

    def _encode_audio(self, input_values, audio_attention_mask, output_attentions, output_hidden_states):
        """Waveforms `(B, S)` -> speech encoder -> audio feature encoder: `H_A (B, T, D)`, `(B,)` lengths and the
        speech encoder's outputs."""
        if input_values.ndim != 2:
            raise ValueError(
                f"`input_values` must be (batch, samples) raw waveforms, got shape {tuple(input_values.shape)}; "
                "prepare them with AudioTextCMAProcessor."
            )
        if audio_attention_mask is None:
            sample_mask = torch.ones_like(input_values, dtype=torch.bool)
        else:
            sample_mask = audio_attention_mask.bool()
        num_samples = sample_mask.sum(-1)
        frame_lengths = self.audio_model._get_feat_extract_output_lengths(num_samples)
        if (frame_lengths < 1).any():
            short = (frame_lengths < 1).nonzero().flatten().tolist()
            raise ValueError(
                f"Audio {short} have {num_samples[short].tolist()} samples, too few for the speech encoder to give "
                f"one frame (it needs {self._minimum_num_samples()}); pad them with silence or drop them."
            )
        # Padded samples are zeroed, as the processor pads: then their content cannot matter, even to encoders that
        # do not take a mask.
        input_values = input_values.masked_fill(~sample_mask, 0.0).to(self.audio_model.dtype)
        # wav2vec2 checkpoints with a group-norm feature encoder (e.g. wav2vec2-base) were pre-trained without an
        # attention mask and should not get one (transformers' Wav2Vec2FeatureExtractor documentation); their valid
        # frames are still selected below.
        takes_mask = getattr(self.audio_model.config, "feat_extract_norm", "layer") == "layer"
        outputs = self.audio_model(
            input_values,
            attention_mask=sample_mask.long() if takes_mask and audio_attention_mask is not None else None,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        audio_states, lengths = self.audio_feature_encoder(outputs.last_hidden_state, frame_lengths)
        return audio_states, lengths, outputs

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_values: torch.FloatTensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> AudioTextCMAModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`): the text encoder's token ids
                (`[CLS] ... [SEP]` for BERT), right-padded. Required unless `modality_outputs="audio"`.
            attention_mask (`torch.Tensor` of shape `(batch_size, text_length)`, *optional*): 1 for tokens, 0 for
                padding.
            input_values (`torch.FloatTensor` of shape `(batch_size, samples)`): raw 16 kHz waveforms as the speech
                encoder's feature extractor prepares them, right-padded. Required unless `modality_outputs="text"`.
            audio_attention_mask (`torch.Tensor` of shape `(batch_size, samples)`, *optional*): 1 for samples, 0 for
                padding (see `AudioTextCMAProcessor`).
            token_type_ids (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*): passed to the text
                encoder (BERT's default: all zeros).
            output_attentions (`bool`, *optional*): return the encoders' and the cross-modal attention probabilities
                (eager attention).
            output_hidden_states (`bool`, *optional*): return the encoders' hidden states.
            return_dict (`bool`, *optional*): return an [`AudioTextCMAModelOutput`] (default) or a tuple.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        modality = self.config.modality_outputs
        if modality != "text" and input_values is None:
            raise ValueError(f"`input_values` are required with modality_outputs={modality!r}.")
        if modality != "audio" and input_ids is None:
            raise ValueError(f"`input_ids` are required with modality_outputs={modality!r}.")

        outputs = {}
        audio_states = text_states = audio_mask = text_mask = None
        if modality != "text":
            audio_states, audio_lengths, audio_outputs = self._encode_audio(
                input_values, audio_attention_mask, output_attentions, output_hidden_states
            )
            audio_mask = lengths_to_mask(audio_lengths, audio_states.shape[1])
            outputs.update(audio_hidden_states=audio_outputs.hidden_states, audio_attentions=audio_outputs.attentions)
        if modality != "audio":
            text_outputs = self.text_model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
            )
            text_states = self.text_projection(text_outputs.last_hidden_state)
            text_mask = torch.ones_like(input_ids, dtype=torch.bool)
            if attention_mask is not None:
                text_mask = attention_mask.bool()
            outputs.update(text_hidden_states=text_outputs.hidden_states, text_attentions=text_outputs.attentions)
        if modality == "both":
            # CMA-1: H_A attends to H_T; CMA-2: H_T attends to H_A. Each masks the other modality's padding (its keys).
            audio_to_text_mask = create_bidirectional_mask(
                config=self.config,
                inputs_embeds=audio_states,
                attention_mask=text_mask,
                encoder_hidden_states=text_states,
            )
            text_to_audio_mask = create_bidirectional_mask(
                config=self.config,
                inputs_embeds=text_states,
                attention_mask=audio_mask,
                encoder_hidden_states=audio_states,
            )
            audio_attended, audio_weights = self.audio_to_text_attention(audio_states, text_states, audio_to_text_mask)
            text_attended, text_weights = self.text_to_audio_attention(text_states, audio_states, text_to_audio_mask)
            audio_states, text_states = audio_attended, text_attended
            if output_attentions:
                outputs["cross_attentions"] = (audio_weights, text_weights)

        pooled = []
        if audio_states is not None:
            pooled.append(statistics_pooling(audio_states, audio_mask))
        if text_states is not None:
            pooled.append(statistics_pooling(text_states, text_mask))
        return AudioTextCMAModelOutput(
            embeddings=torch.cat(pooled, dim=-1),
            audio_last_hidden_state=audio_states,
            text_last_hidden_state=text_states,
            audio_frame_mask=audio_mask,
            **outputs,
        )


@dataclass
class AudioTextCMASequenceClassifierOutput(ModelOutput):
    r"""
    Outputs of [`AudioTextCMAForSequenceClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, with labels): the task loss (see `sequence_classification_loss`).
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`).
        embeddings (`torch.FloatTensor` of shape `(batch_size, 4 * hidden_size)`, or `2 * hidden_size` for one
            modality): the fused utterance vector fed to the classifier; cosine-score it for speaker verification.
        audio_hidden_states, text_hidden_states, audio_attentions, text_attentions, cross_attentions: as in
            [`AudioTextCMAModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    audio_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class AudioTextCMAForSequenceClassification(AudioTextCMAPreTrainedModel):
    """[`AudioTextCMAModel`] with the classification layer on the fused utterance vector (section 2, Figure 1).
    Classification (cross-entropy, as in the paper), regression (`num_labels=1`; MSE, or L1 with
    `regression_loss="l1"`) and multi-label classification (BCE) follow `config.problem_type`.

    Args:
        config ([`AudioTextCMAConfig`]).
        audio_model, text_model (`PreTrainedModel`, *optional*): see [`AudioTextCMAModel`].
    """

    def __init__(
        self,
        config: AudioTextCMAConfig,
        audio_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        self.audio_text_cma = AudioTextCMAModel(config, audio_model=audio_model, text_model=text_model)
        streams = 2 if config.modality_outputs == "both" else 1
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(2 * streams * config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_values: torch.FloatTensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> AudioTextCMASequenceClassifierOutput:
        r"""
        Args:
            input_ids, attention_mask, input_values, audio_attention_mask, token_type_ids, output_attentions,
                output_hidden_states, return_dict: as in [`AudioTextCMAModel`].
            labels (`torch.Tensor`, *optional*): class ids `(batch_size,)`, regression targets `(batch_size,)` for
                `num_labels=1`, or multi-hot `(batch_size, num_labels)` floats for multi-label classification.
        """
        outputs = self.audio_text_cma(
            input_ids=input_ids,
            attention_mask=attention_mask,
            input_values=input_values,
            audio_attention_mask=audio_attention_mask,
            token_type_ids=token_type_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.embeddings))
        loss = sequence_classification_loss(self.config, logits, labels) if labels is not None else None
        return AudioTextCMASequenceClassifierOutput(
            loss=loss,
            logits=logits,
            embeddings=outputs.embeddings,
            audio_hidden_states=outputs.audio_hidden_states,
            text_hidden_states=outputs.text_hidden_states,
            audio_attentions=outputs.audio_attentions,
            text_attentions=outputs.text_attentions,
            cross_attentions=outputs.cross_attentions,
        )


__all__ = [
    "AudioTextCMAForSequenceClassification",
    "AudioTextCMAModel",
    "AudioTextCMAModelOutput",
    "AudioTextCMAPreTrainedModel",
    "AudioTextCMASequenceClassifierOutput",
]
