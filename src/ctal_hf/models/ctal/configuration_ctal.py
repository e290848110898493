"""CTAL configuration (paper: "CTAL: Pre-training Cross-modal Transformer for Audio-and-Language
Representations", Li et al., EMNLP 2021)."""

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN



# Paper section 4.1: N layers per stack, A heads, hidden size H (FFN 4H as in the original code).
CTAL_PRESETS: dict[str, dict] = {
    "ctal-base": {"num_hidden_layers": 3, "num_attention_heads": 12, "hidden_size": 768, "intermediate_size": 3072},
    "ctal-large": {"num_hidden_layers": 6, "num_attention_heads": 12, "hidden_size": 768, "intermediate_size": 3072},
}

# The original tokenizer's special tokens: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4.
SPECIAL_TOKEN_NAMES = ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id", "mask_token_id")

# The size fields the text and the text-referred audio stack share (the paper's N, A, H and the layer settings).
# Config files written before they were shared stored each as `text_<field>` and `audio_<field>`.
SHARED_STACK_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "layer_norm_eps",
)
LEGACY_STACK_PREFIXES = ("text_", "audio_")

# Keys besides the dataclass fields that transformers writes into config.json or passes to the constructor
# (`PreTrainedConfig.to_dict`, `from_dict`, `__post_init__`, `Trainer` (`use_cache`), `from_pretrained`
# (`fusion_config`, `distributed_config`), quantizers, `register_for_auto_class`). Keys starting with `_` are
# transformers' private bookkeeping (`_name_or_path`, `_commit_hash`, ...) and are accepted too.
TRANSFORMERS_CONFIG_KEYS = frozenset(
    {
        "model_type",
        "torch_dtype",
        "num_labels",
        "name_or_path",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "use_cache",
        "fusion_config",
        "distributed_config",
        "quantization_config",
        "auto_map",
        "transformers_weights",
    }
)


@strict
class CTALConfig(PreTrainedConfig):
    r"""
    Configuration of a CTAL model: a text encoder (paper section 3.1.2) and a text-referred audio encoder
    (section 3.1.3), the pre-training heads (section 3.2) and the fine-tuning head (section 3.3).

    Both stacks have the paper's one set of sizes (N layers each, A heads, hidden size H; section 4.1). Unknown keys
    (in keyword arguments, a config.json or `from_pretrained(..., key=value)`) are an error naming the closest
    valid key. Config files of earlier versions, with per-stack `text_*` / `audio_*` keys, load when both stacks are
    equal. Validation (`validate_*`) runs on construction, after `from_pretrained` and before `save_pretrained`;
    call `config.validate()` after editing fields by hand.

    Args:
        vocab_size (`int`, defaults to 30000): size of the byte-level BPE vocabulary.
        hidden_size (`int`, defaults to 768): hidden size H of both stacks (the paper's d_w = d_a = d).
        num_hidden_layers (`int`, defaults to 6): N, the number of layers of each stack.
        num_attention_heads (`int`, defaults to 12): A, the attention heads of every attention block.
        intermediate_size (`int`, defaults to 3072): FFN inner size.
        hidden_act (`str`, defaults to `"gelu"`): FFN and head activation (exact erf GELU).
        hidden_dropout_prob (`float`, defaults to 0.1): residual and embedding dropout.
        attention_probs_dropout_prob (`float`, defaults to 0.1): dropout on the attention probabilities.
        layer_norm_eps (`float`, defaults to 1e-12): epsilon of every LayerNorm.
        max_position_embeddings (`int`, defaults to 512): longest token sequence (with `<s>` and `</s>`).
        audio_feature_size (`int`, defaults to 160): 80 log-mel + 80 delta dimensions per frame (section 3.1.1).
        max_audio_frames (`int`, defaults to 3000): longest frame sequence (37.5 s at a 12.5 ms hop).
        audio_causal_self_attention (`bool`, defaults to `False`): the paper removes the future mask from the
            audio self-attention (bidirectional). `True` reproduces the authors' released code, whose audio
            stack was a RoBERTa decoder and therefore causal; checkpoints converted from it need `True`.
        initializer_range (`float`, defaults to 0.02): std of the normal weight initialisation.
        pad_token_id, bos_token_id, eos_token_id, unk_token_id, mask_token_id: special ids of the original
            tokenizer (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4).
        mlm_loss_weight (`float`, defaults to 1.0): weight of the MLM loss; 0 disables MLM (Table 4 row b).
        mcam_loss_weight (`float`, defaults to 1.0): weight of the MCAM loss; 0 disables MCAM (Table 4 row c).
        use_fusion (`bool`, defaults to `True`): section 3.3 fusion `(h_a^attn + h_w^attn) (+) (h_a^max + h_w^max)`;
            `False` concatenates `h_w^attn (+) h_a^attn` instead (Table 4 row d, "w/o Orthogonal Fusion").
        modality_outputs (`str`, defaults to `"both"`): `"both"`, `"text"` (Table 4 row e, "w/o Audio Outputs")
            or `"audio"` (row f, "w/o Language Outputs"); a single modality uses `h^attn (+) h^max` of that stream.
        orthogonal_loss_weight (`float`, defaults to 1.0): weight of the orthogonal regularisation (section
            3.3.1), added in training only, when fusion uses both modalities.
        classifier_head (`str`, defaults to `"paper"`): the fine-tuning head of `CTALForSequenceClassification`.
            `"paper"` follows section 3.3; `"original_code"` is the head of the authors' released fine-tuning code
            (tanh projections before pooling, `<s>` left out of the text max-pool, a tanh(Linear 2H->2H) layer
            before a bias-free classifier), for checkpoints fine-tuned with that code.
        classifier_dropout (`float`, *optional*): dropout before the classifier; defaults to `hidden_dropout_prob`.
        regression_loss (`str`, defaults to `"l1"`): loss for `num_labels=1` (`"l1"` as in the paper, or `"mse"`).
        tie_word_embeddings (`bool`, defaults to `True`): tie the MLM decoder to the word embeddings.
    """

    model_type = "ctal"

    vocab_size: int = 30000
    hidden_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    audio_feature_size: int = 160
    max_audio_frames: int = 3000
    audio_causal_self_attention: bool = False
    initializer_range: float = 0.02
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    unk_token_id: int | None = 3
    mask_token_id: int | None = 4
    mlm_loss_weight: float | int = 1.0
    mcam_loss_weight: float | int = 1.0
    use_fusion: bool = True
    modality_outputs: Literal["both", "text", "audio"] = "both"
    orthogonal_loss_weight: float | int = 1.0
    classifier_head: Literal["paper", "original_code"] = "paper"
    classifier_dropout: float | int | None = None
    regression_loss: Literal["l1", "mse"] = "l1"
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        kwargs = self._merge_legacy_stack_keys(kwargs)
        check_config_keys(kwargs)
        super().__post_init__(**kwargs)

    def _merge_legacy_stack_keys(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Set each shared field from the `text_<field>` / `audio_<field>` pair of an earlier config file; the pair
        must agree (CTAL has one set of sizes) and must not contradict the field itself. Returns the other keys."""
        kwargs = dict(kwargs)
        for field in SHARED_STACK_FIELDS:
            keys = [prefix + field for prefix in LEGACY_STACK_PREFIXES if prefix + field in kwargs]
            given = {key: kwargs.pop(key) for key in keys}
            if not given:
                continue
            keys = ", ".join(f"{key}={value!r}" for key, value in given.items())
            if len(given) == 1:
                raise ValueError(
                    f"{keys} sets one stack only, but the text and audio stacks share one `{field}`; pass "
                    f"`{field}` instead."
                )
            text_value, audio_value = given.values()
            if text_value != audio_value:
                raise ValueError(
                    f"This config gives the text and audio stacks different sizes ({keys}); CTAL has one `{field}` "
                    "for both stacks (paper section 4.1, and the authors' checkpoints), so it cannot be loaded."
                )
            default = self.__dataclass_fields__[field].default
            if getattr(self, field) not in (default, text_value):
                raise ValueError(
                    f"`{field}={getattr(self, field)!r}` contradicts {keys}; give `{field}` only."
                )
            setattr(self, field, text_value)
        return kwargs

    def validate_architecture(self):
        """Part of `@strict`-powered validation: the sizes can build a model."""
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "vocab_size",
            "max_position_embeddings",
            "audio_feature_size",
            "max_audio_frames",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        if self.hidden_size % self.num_attention_heads != 0:
            heads, hidden = self.num_attention_heads, self.hidden_size
            raise ValueError(
                f"`hidden_size` ({hidden}) must be divisible by `num_attention_heads` ({heads}); "
                f"choose e.g. {heads * max(1, hidden // heads)} or a head count that divides {hidden}."
            )
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"`hidden_act` {self.hidden_act!r} is not a known activation (see transformers ACT2FN).")

    def validate_dropout(self):
        """Part of `@strict`-powered validation: dropout probabilities are in [0, 1)."""
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value}.")

    def validate_token_ids(self):
        """Part of `@strict`-powered validation: every special id is inside the vocabulary (an error here, not
        transformers' warning: a CTAL config with an out-of-range id cannot run)."""
        for name in SPECIAL_TOKEN_NAMES:
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"`{name}` ({value}) must be in [0, vocab_size={self.vocab_size}).")

    def validate_loss_weights(self):
        """Part of `@strict`-powered validation: the loss weights leave pre-training an objective."""
        if self.mlm_loss_weight < 0 or self.mcam_loss_weight < 0 or self.orthogonal_loss_weight < 0:
            raise ValueError(
                "Loss weights (`mlm_loss_weight`, `mcam_loss_weight`, `orthogonal_loss_weight`) must be >= 0."
            )
        if self.mlm_loss_weight == 0 and self.mcam_loss_weight == 0:
            raise ValueError(
                "`mlm_loss_weight` and `mcam_loss_weight` are both 0: pre-training would have no objective."
            )

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        """As `PreTrainedConfig.from_dict`, but keyword arguments that are not config keys are an error (unless the
        caller asks for them back with `return_unused_kwargs=True`, as `PreTrainedModel.from_pretrained` does for
        loading options), and the config is validated after the keyword arguments were applied."""
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        config, unused = super().from_dict(config_dict, return_unused_kwargs=True, **kwargs)
        config.validate()
        if return_unused_kwargs:
            return config, unused
        check_config_keys(unused)
        return config

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "CTALConfig":
        """Config of one of the paper's sizes (section 4.1): `"ctal-base"` (N=3, A=12, H=768) or
        `"ctal-large"` (N=6, A=12, H=768). Extra keyword arguments override preset fields."""
        if name not in CTAL_PRESETS:
            raise ValueError(f"Unknown CTAL preset {name!r}; available presets: {sorted(CTAL_PRESETS)}.")
        return cls(**{**CTAL_PRESETS[name], **kwargs})


CONFIG_KEYS = frozenset(field.name for field in fields(CTALConfig)) | TRANSFORMERS_CONFIG_KEYS


def check_config_keys(keys: Iterable[str] | Mapping[str, Any]) -> None:
    """Raise a `ValueError` listing the keys that are neither `CTALConfig` fields nor keys transformers itself stores
    in a config, each with the closest valid key: a misspelt key would otherwise be kept as an inert attribute while
    the model is built with the default value."""
    unknown = sorted(key for key in keys if key not in CONFIG_KEYS and not key.startswith("_"))
    if not unknown:
        return
    hints = []
    for key in unknown:
        matches = difflib.get_close_matches(key, sorted(CONFIG_KEYS), n=2)
        hint = "no similar key."
        if matches:
            hint = f"did you mean `{matches[0]}`" + "".join(f" (or `{other}`)" for other in matches[1:]) + "?"
        if key.startswith(LEGACY_STACK_PREFIXES) and key.split("_", 1)[1] in SHARED_STACK_FIELDS:
            hint = f"the text and audio stacks share one `{key.split('_', 1)[1]}`, set that instead."
        hints.append(f"`{key}`: {hint}")
    raise ValueError(
        f"Unknown config key(s) {unknown}. " + " ".join(hints) + " The keys are the fields of `CTALConfig` "
        "(e.g. hidden_size, num_hidden_layers, audio_causal_self_attention)."
    )


__all__ = ["CTALConfig"]
