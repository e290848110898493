"""CTAL configuration (paper: "CTAL: Pre-training Cross-modal Transformer for Audio-and-Language
Representations", Li et al., EMNLP 2021)."""

from __future__ import annotations

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

from ...modeling_utils import REGRESSION_LOSSES


# Paper section 4.1: N layers per stack, A heads, hidden size H (FFN 4H as in the original code).
CTAL_PRESETS: dict[str, dict] = {
    "ctal-base": {"num_hidden_layers": 3, "num_attention_heads": 12, "hidden_size": 768, "intermediate_size": 3072},
    "ctal-large": {"num_hidden_layers": 6, "num_attention_heads": 12, "hidden_size": 768, "intermediate_size": 3072},
}

# The original tokenizer's special tokens: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4.
SPECIAL_TOKEN_NAMES = ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id", "mask_token_id")

# Fields each stack (text, audio) has under a `text_` / `audio_` prefix.
STACK_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "layer_norm_eps",
)

MODALITY_OUTPUTS = ("both", "audio", "text")


class CTALConfig(PreTrainedConfig):
    r"""
    Configuration of a CTAL model: a text encoder (paper section 3.1.2) and a text-referred audio encoder
    (section 3.1.3), the pre-training heads (section 3.2) and the fine-tuning head (section 3.3).

    Each stack has its own size fields (`text_*` and `audio_*`). The shortcuts `hidden_size`,
    `num_hidden_layers`, `num_attention_heads`, `intermediate_size`, `hidden_act`, `hidden_dropout_prob`,
    `attention_probs_dropout_prob` and `layer_norm_eps` set both stacks at once (a `text_*`/`audio_*` value
    given explicitly wins); as attributes they read the audio stack's value and writing them sets both stacks
    (e.g. `CTALConfig.from_pretrained(path, hidden_size=256)`; call `validate_ctal()` after editing fields).

    Args:
        vocab_size (`int`, defaults to 30000): size of the byte-level BPE vocabulary.
        text_hidden_size, audio_hidden_size (`int`, defaults to 768): hidden size d_w / d_a of each stack.
        text_num_hidden_layers, audio_num_hidden_layers (`int`, defaults to 6): N of each stack.
        text_num_attention_heads, audio_num_attention_heads (`int`, defaults to 12): A of each stack.
        text_intermediate_size, audio_intermediate_size (`int`, defaults to 3072): FFN inner size.
        text_hidden_act, audio_hidden_act (`str`, defaults to `"gelu"`): FFN activation (exact erf GELU).
        text_hidden_dropout_prob, audio_hidden_dropout_prob (`float`, defaults to 0.1): residual/embedding dropout.
        text_attention_probs_dropout_prob, audio_attention_probs_dropout_prob (`float`, defaults to 0.1).
        text_layer_norm_eps, audio_layer_norm_eps (`float`, defaults to 1e-12).
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
            `False` concatenates `h_w^attn (+) h_a^attn` instead (Table 4 row d).
        modality_outputs (`str`, defaults to `"both"`): `"both"`, `"audio"` (Table 4 row e) or `"text"`
            (row f); a single modality uses `h^attn (+) h^max` of that stream.
        orthogonal_loss_weight (`float`, defaults to 1.0): weight of the orthogonal regularisation (section
            3.3.1), added in training only, when fusion uses both modalities.
        classifier_dropout (`float`, *optional*): dropout before the classifier; defaults to
            `audio_hidden_dropout_prob`.
        regression_loss (`str`, defaults to `"l1"`): loss for `num_labels=1` (`"l1"` as in the paper, or `"mse"`).
    """

    model_type = "ctal"

    def __init__(
        self,
        vocab_size: int = 30000,
        hidden_size: int | None = None,
        num_hidden_layers: int | None = None,
        num_attention_heads: int | None = None,
        intermediate_size: int | None = None,
        hidden_act: str | None = None,
        hidden_dropout_prob: float | None = None,
        attention_probs_dropout_prob: float | None = None,
        layer_norm_eps: float | None = None,
        text_hidden_size: int | None = None,
        text_num_hidden_layers: int | None = None,
        text_num_attention_heads: int | None = None,
        text_intermediate_size: int | None = None,
        text_hidden_act: str | None = None,
        text_hidden_dropout_prob: float | None = None,
        text_attention_probs_dropout_prob: float | None = None,
        text_layer_norm_eps: float | None = None,
        audio_hidden_size: int | None = None,
        audio_num_hidden_layers: int | None = None,
        audio_num_attention_heads: int | None = None,
        audio_intermediate_size: int | None = None,
        audio_hidden_act: str | None = None,
        audio_hidden_dropout_prob: float | None = None,
        audio_attention_probs_dropout_prob: float | None = None,
        audio_layer_norm_eps: float | None = None,
        max_position_embeddings: int = 512,
        audio_feature_size: int = 160,
        max_audio_frames: int = 3000,
        audio_causal_self_attention: bool = False,
        initializer_range: float = 0.02,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        unk_token_id: int = 3,
        mask_token_id: int = 4,
        mlm_loss_weight: float = 1.0,
        mcam_loss_weight: float = 1.0,
        use_fusion: bool = True,
        modality_outputs: str = "both",
        orthogonal_loss_weight: float = 1.0,
        classifier_dropout: float | None = None,
        regression_loss: str = "l1",
        tie_word_embeddings: bool = True,
        **kwargs,
    ):
        shared = {
            "hidden_size": hidden_size if hidden_size is not None else 768,
            "num_hidden_layers": num_hidden_layers if num_hidden_layers is not None else 6,
            "num_attention_heads": num_attention_heads if num_attention_heads is not None else 12,
            "intermediate_size": intermediate_size if intermediate_size is not None else 3072,
            "hidden_act": hidden_act if hidden_act is not None else "gelu",
            "hidden_dropout_prob": hidden_dropout_prob if hidden_dropout_prob is not None else 0.1,
            "attention_probs_dropout_prob": attention_probs_dropout_prob
            if attention_probs_dropout_prob is not None
            else 0.1,
            "layer_norm_eps": layer_norm_eps if layer_norm_eps is not None else 1e-12,
        }
        explicit = locals()
        for stack in ("text", "audio"):
            for field in STACK_FIELDS:
                value = explicit[f"{stack}_{field}"]
                setattr(self, f"{stack}_{field}", value if value is not None else shared[field])

        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.audio_feature_size = audio_feature_size
        self.max_audio_frames = max_audio_frames
        self.audio_causal_self_attention = audio_causal_self_attention
        self.initializer_range = initializer_range
        self.unk_token_id = unk_token_id
        self.mask_token_id = mask_token_id
        self.mlm_loss_weight = mlm_loss_weight
        self.mcam_loss_weight = mcam_loss_weight
        self.use_fusion = use_fusion
        self.modality_outputs = modality_outputs
        self.orthogonal_loss_weight = orthogonal_loss_weight
        self.classifier_dropout = classifier_dropout
        self.regression_loss = regression_loss
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.validate_ctal()

    def validate_ctal(self) -> None:
        """Raise a `ValueError` naming the field for impossible settings."""
        for stack in ("text", "audio"):
            hidden = getattr(self, f"{stack}_hidden_size")
            heads = getattr(self, f"{stack}_num_attention_heads")
            for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
                if getattr(self, f"{stack}_{field}") < 1:
                    raise ValueError(f"`{stack}_{field}` must be a positive integer, got {getattr(self, f'{stack}_{field}')}.")
            if hidden % heads != 0:
                raise ValueError(
                    f"`{stack}_hidden_size` ({hidden}) must be divisible by `{stack}_num_attention_heads` ({heads}); "
                    f"choose e.g. {heads * max(1, hidden // heads)} or a head count that divides {hidden}."
                )
            if getattr(self, f"{stack}_hidden_act") not in ACT2FN:
                raise ValueError(f"`{stack}_hidden_act` {getattr(self, f'{stack}_hidden_act')!r} is not a known activation.")
            for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
                value = getattr(self, f"{stack}_{field}")
                if not 0.0 <= value < 1.0:
                    raise ValueError(f"`{stack}_{field}` must be in [0, 1), got {value}.")
        for name in ("vocab_size", "max_position_embeddings", "audio_feature_size", "max_audio_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        for name in SPECIAL_TOKEN_NAMES:
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"`{name}` ({value}) must be in [0, vocab_size={self.vocab_size}).")
        if self.modality_outputs not in MODALITY_OUTPUTS:
            raise ValueError(f"`modality_outputs` must be one of {MODALITY_OUTPUTS}, got {self.modality_outputs!r}.")
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"`regression_loss` must be one of {REGRESSION_LOSSES}, got {self.regression_loss!r}.")
        if self.mlm_loss_weight < 0 or self.mcam_loss_weight < 0 or self.orthogonal_loss_weight < 0:
            raise ValueError("Loss weights (`mlm_loss_weight`, `mcam_loss_weight`, `orthogonal_loss_weight`) must be >= 0.")
        if self.mlm_loss_weight == 0 and self.mcam_loss_weight == 0:
            raise ValueError("`mlm_loss_weight` and `mcam_loss_weight` are both 0: pre-training would have no objective.")
        if self.modality_outputs == "both" and self.text_hidden_size != self.audio_hidden_size:
            raise ValueError(
                f"The fine-tuning head combines text and audio vectors, so `text_hidden_size` ({self.text_hidden_size}) "
                f"must equal `audio_hidden_size` ({self.audio_hidden_size}) when `modality_outputs='both'`."
            )

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "CTALConfig":
        """Config of one of the paper's sizes (section 4.1): `"ctal-base"` (N=3, A=12, H=768) or
        `"ctal-large"` (N=6, A=12, H=768). Extra keyword arguments override preset fields."""
        if name not in CTAL_PRESETS:
            raise ValueError(f"Unknown CTAL preset {name!r}; available presets: {sorted(CTAL_PRESETS)}.")
        return cls(**{**CTAL_PRESETS[name], **kwargs})


def _both_stacks(field: str) -> property:
    def read(self) -> object:
        return getattr(self, f"audio_{field}")

    def write(self, value) -> None:
        setattr(self, f"text_{field}", value)
        setattr(self, f"audio_{field}", value)

    return property(read, write, doc=f"The audio stack's `{field}`; setting it sets both stacks.")


# The shortcuts are properties, not stored fields: the saved config holds only the `text_*` / `audio_*` values.
for _field in STACK_FIELDS:
    setattr(CTALConfig, _field, _both_stacks(_field))
