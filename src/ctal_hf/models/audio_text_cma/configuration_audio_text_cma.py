"""Configuration of the audio-text cross-modal attention model (Krishna D N et al., "Using Large Pre-Trained Models
with Cross-Modal Attention for Multi-Modal Emotion Recognition", 2021, arXiv:2108.09669)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.activations import ACT2FN
from transformers.configuration_utils import SubConfigSpec

from ...modeling_utils import REGRESSION_LOSSES


MODALITY_OUTPUTS = ("both", "audio", "text")

# Paper section 4: the audio encoder base is wav2vec 2.0 Large pre-trained on ~53k hours of LibriVox audiobooks
# (`facebook/wav2vec2-large-lv60`): 7 conv blocks of 512 channels (the Wav2Vec2Config defaults), 24 Transformer blocks
# of width 1024, inner 4096, 16 heads, with the layer-normalised ("stable") variant of that checkpoint.
WAV2VEC2_LARGE_LV60 = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "conv_bias": True,
}


@strict
class AudioTextCMAConfig(PreTrainedConfig):
    r"""
    Configuration of [`AudioTextCMAModel`] and [`AudioTextCMAForSequenceClassification`]: a pre-trained speech encoder
    (`audio_config`, any wav2vec 2.0-style model: wav2vec2, HuBERT, WavLM, data2vec-audio) and a pre-trained text
    encoder (`text_config`, any BERT-style model), joined by the paper's audio feature encoder, text projection,
    bidirectional cross-modal attention (CMA-1, CMA-2) and statistics pooling (sections 2.2-2.5). The defaults are the
    published ones (section 4): wav2vec 2.0 Large (LV-60) and BERT-base sub-configs, 2 conv blocks of 256 filters
    (kernel 3, stride 2), a BiLSTM of 128 per direction with dropout 0.2, width 256, 8 heads, feed-forward 256.

    Args:
        audio_config (`PreTrainedConfig` or `dict`, *optional*): the speech encoder's config (`AutoConfig`-loadable);
            defaults to wav2vec 2.0 Large (LV-60) sizes (`WAV2VEC2_LARGE_LV60`).
        text_config (`PreTrainedConfig` or `dict`, *optional*): the text encoder's config; defaults to BERT-base.
        hidden_size (`int`, defaults to 256): width of the text projection (equation 3), of the BiLSTM output (two
            directions of `hidden_size // 2`, equation 2) and of both cross-modal attentions.
        conv_dim, conv_kernel, conv_stride (`tuple[int]`, default `(256, 256)`, `(3, 3)`, `(2, 2)`): the audio feature
            encoder's Conv1d blocks (equation 1), each followed by batch norm and ReLU. Each pads `kernel // 2` frames
            on both sides, so a block of stride 2 maps T frames to `(T - 1) // 2 + 1` and two blocks give the paper's
            4x fewer frames.
        lstm_dropout (`float`, defaults to 0.2): dropout on the BiLSTM output (section 4).
        num_attention_heads (`int`, defaults to 8): heads of CMA-1 and CMA-2.
        intermediate_size (`int`, defaults to 256): inner width of the cross-modal attentions' feed-forward ("similar
            to its input", section 4).
        hidden_act (`str`, defaults to `"relu"`): activation of that feed-forward (as in the cross-modal
            Transformer of the paper's reference [3]).
        attention_dropout, hidden_dropout (`float`, default 0.0): dropout on the attention probabilities and on the
            residual branches of the cross-modal attentions; the paper names none.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of the pre-attention and pre-feed-forward layer norms.
        classifier_dropout (`float`, defaults to 0.0): dropout before the classifier; the paper names none.
        modality_outputs (`str`, defaults to `"both"`): `"both"` (the full model), `"audio"` (speech encoder + audio
            feature encoder, no cross-modal attention; Table 2 "Wav2vec2.0+CNN+BLSTM") or `"text"` (text encoder +
            projection; Table 2 "BERT fine-tuning"). Only the encoders a variant uses are built.
        freeze_feature_encoder (`bool`, defaults to `True`): keep the speech encoder's convolutional feature encoder
            frozen (section 4).
        freeze_pretrained_encoders (`bool`, defaults to `False`): freeze both pre-trained encoders entirely and train
            only the layers above them (Table 1, "no fine-tuning").
        regression_loss (`str`, defaults to `"mse"`): loss for `num_labels=1`, `"mse"` or `"l1"`.
        initializer_range (`float`, defaults to 0.02): std of the normal initialisation of the new layers.
    """

    model_type = "audio_text_cma"
    sub_configs_defaults = {
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="wav2vec2", init_kwargs=WAV2VEC2_LARGE_LV60),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    audio_config: PreTrainedConfig | dict | None = None
    text_config: PreTrainedConfig | dict | None = None
    hidden_size: int = 256
    conv_dim: list[int] | tuple[int, ...] = (256, 256)
    conv_kernel: list[int] | tuple[int, ...] = (3, 3)
    conv_stride: list[int] | tuple[int, ...] = (2, 2)
    lstm_dropout: float | int = 0.2
    num_attention_heads: int = 8
    intermediate_size: int = 256
    hidden_act: str = "relu"
    attention_dropout: float | int = 0.0
    hidden_dropout: float | int = 0.0
    layer_norm_eps: float = 1e-5
    classifier_dropout: float | int = 0.0
    modality_outputs: str = "both"
    freeze_feature_encoder: bool = True
    freeze_pretrained_encoders: bool = False
    regression_loss: str = "mse"
    initializer_range: float = 0.02

    def validate_architecture(self):
        """Part of `@strict` validation: impossible settings raise a `ValueError` naming the field."""
        if self.modality_outputs not in MODALITY_OUTPUTS:
            raise ValueError(f"`modality_outputs` must be one of {MODALITY_OUTPUTS}, got {self.modality_outputs!r}.")
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"`regression_loss` must be one of {REGRESSION_LOSSES}, got {self.regression_loss!r}.")
        for name in ("hidden_size", "num_attention_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        if self.hidden_size % 2 != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be even: the BiLSTM gives `hidden_size // 2` per direction."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        lengths = {len(self.conv_dim), len(self.conv_kernel), len(self.conv_stride)}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(
                "`conv_dim`, `conv_kernel` and `conv_stride` describe the same conv blocks: give them one non-zero "
                f"length, got {len(self.conv_dim)}, {len(self.conv_kernel)} and {len(self.conv_stride)}."
            )
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must hold positive integers, got {list(getattr(self, name))}.")
        for name in ("lstm_dropout", "attention_dropout", "hidden_dropout", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"`hidden_act` {self.hidden_act!r} is not a known activation.")


__all__ = ["AudioTextCMAConfig", "MODALITY_OUTPUTS", "WAV2VEC2_LARGE_LV60"]
