"""CTAL processor: one call prepares both input streams of the model (paper section 3.1.1), the tokens of the
linguistic stream (`CTALTokenizer`) and the acoustic frames of the audio stream (`CTALFeatureExtractor`)."""

# No `from __future__ import annotations`: ProcessorMixin reads the kwargs TypedDicts' annotations at call time.
from typing import TYPE_CHECKING

from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import AudioKwargs, ProcessingKwargs, ProcessorMixin, Unpack
from transformers.utils import TensorType

from ...processing_utils import tokenize_texts, too_long_error
from ...transcripts import check_transcripts
from .configuration_ctal import SPECIAL_TOKEN_NAMES
from .feature_extraction_ctal import AudioInput, CTALFeatureExtractor
from .tokenization_ctal import CTALTokenizer


if TYPE_CHECKING:
    from .configuration_ctal import CTALConfig


class CTALAudioKwargs(AudioKwargs, total=False):
    """`max_audio_frames`: the audio limit in frames, apart from `max_length`, which is the text limit in tokens."""

    max_audio_frames: int | None


class CTALProcessorKwargs(ProcessingKwargs, total=False):
    audio_kwargs: CTALAudioKwargs
    _defaults = {
        "text_kwargs": {"padding": True, "truncation": True},
        "audio_kwargs": {"padding": True, "truncation": True},
    }


class CTALProcessor(ProcessorMixin):
    r"""
    Wraps a [`CTALFeatureExtractor`] and a [`CTALTokenizer`]. Calling it returns, in one [`BatchFeature`] with no key
    shared between the modalities:

    - `input_ids` (B, L) and `attention_mask` (B, L): tokens `<s> ... </s>` of the normalised text and their mask;
    - `audio_features` (B, T, 160) and `audio_attention_mask` (B, T): the acoustic frames and their mask.

    Either modality alone works (audio-only or text-only calls). Keyword arguments are routed to the tokenizer and the
    feature extractor by `ProcessorMixin` (or pass `text_kwargs={...}` / `audio_kwargs={...}`). Both streams are
    limited by the model's positions (`CTALConfig.max_position_embeddings` = 512 tokens, `max_audio_frames` = 3000
    frames): by default longer inputs are truncated with a warning; with `truncation=False` they raise an error
    instead of failing inside the model. `decode`/`batch_decode` forward to the tokenizer.

    Args:
        feature_extractor ([`CTALFeatureExtractor`]): computes the audio stream's input features.
        tokenizer ([`CTALTokenizer`]): tokenises the text stream.
    """

    valid_processor_kwargs = CTALProcessorKwargs

    def __init__(self, feature_extractor: CTALFeatureExtractor, tokenizer: CTALTokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self, audio: AudioInput | list[AudioInput] | None = None, text: str | list[str] | None = None,
        **kwargs: Unpack[CTALProcessorKwargs],
    ) -> BatchFeature:  # fmt: skip
        r"""
        Prepare a batch (or one example) of audio and/or text for a CTAL model.

        Args:
            audio: one utterance or a list of utterances, as accepted by [`CTALFeatureExtractor.__call__`] (arrays,
                tensors or file paths).
            text: one transcript or a list; normalised by the tokenizer (lowercase, `.,?!` removed). An empty
                transcript (`""`, only whitespace, None) raises a `ValueError`, as in the training loaders
                (`check_transcripts`).
            sampling_rate (`int`): rate of in-memory audio (required for arrays; files carry their own).
            padding (`bool` or `str`, defaults to `True`): `True`/`"longest"` pads each modality to its longest
                example; `"max_length"` pads text to `max_length` tokens and audio to `max_audio_frames` frames.
            truncation (`bool`, defaults to `True`): cut text to `max_length` tokens (keeping `</s>`) and audio to
                `max_audio_frames` frames, with a warning naming the examples. `False` raises a `ValueError` for an
                example that does not fit, since the model could not take it.
            max_length (`int`, *optional*): text limit in tokens, `<s>` and `</s>` included; defaults to the
                tokenizer's `model_max_length` (512).
            max_audio_frames (`int`, *optional*): audio limit in frames; defaults to the feature extractor's
                `max_frames` (3000 = 37.5 s).
            return_tensors (`str`, *optional*): `"pt"` for torch tensors (all on `device`), `"np"` for numpy.
            device (`str` or `torch.device`, defaults to `"cpu"`): where the audio features are computed.
            Other tokenizer arguments (e.g. `add_special_tokens=False`) reach the tokenizer.

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` when `text` is given, and `audio_features` and
            `audio_attention_mask` when `audio` is given.
        """
        if audio is None and text is None:
            raise ValueError("Give `audio`, `text` or both to CTALProcessor.")
        kwargs = self._merge_kwargs(CTALProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        data = {}
        if text is not None:
            data.update(self._tokenize(text, **kwargs["text_kwargs"]))
        if audio is not None:
            data.update(self._featurize(audio, **kwargs["audio_kwargs"]))
        if text is not None and audio is not None and len(data["input_ids"]) != len(data["audio_features"]):
            raise ValueError(
                f"Got {len(data['input_ids'])} texts and {len(data['audio_features'])} audio; pass one transcript per "
                "utterance."
            )
        return_tensors = kwargs["text_kwargs" if text is not None else "audio_kwargs"].get("return_tensors")
        batch = BatchFeature(data, tensor_type=return_tensors)
        if return_tensors is not None and TensorType(return_tensors) == TensorType.PYTORCH:
            batch = batch.to(kwargs["audio_kwargs"].get("device", "cpu"))
        return batch

    def _tokenize(self, text, **text_kwargs) -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        check_transcripts(texts)
        return tokenize_texts(self.tokenizer, texts, **text_kwargs)

    def _featurize(self, audio, truncation=True, max_audio_frames=None, max_length=None, **audio_kwargs) -> dict:
        # `max_length` is the text limit (ProcessorMixin hands it to both modalities); audio has `max_audio_frames`.
        max_audio_frames = self.feature_extractor.max_frames if max_audio_frames is None else max_audio_frames
        features = self.feature_extractor(
            audio, max_length=max_audio_frames, truncation=truncation, return_attention_mask=True, **audio_kwargs
        )
        num_frames = features["audio_attention_mask"].sum(-1)
        if not truncation and num_frames.max() > max_audio_frames:
            too_long = [index for index, count in enumerate(num_frames.tolist()) if count > max_audio_frames]
            seconds = max_audio_frames * self.feature_extractor.hop_length / self.feature_extractor.sampling_rate
            limit = f"max_audio_frames={max_audio_frames} frames"
            raise too_long_error("Audio", too_long, limit, f"audio positions, {seconds:g} s", "frames")
        return dict(features)


def processor_for_config(tokenizer: CTALTokenizer, config: "CTALConfig") -> CTALProcessor:
    """The processor of a model with `config`: `tokenizer` (checked against the config's vocabulary and special ids)
    and the feature extractor with the original recipe, both truncating to the model's positions."""
    # The processor truncates to this; a converted checkpoint has 510 text positions, not the tokenizer's 512.
    tokenizer.model_max_length = config.max_position_embeddings
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model only {config.vocab_size} "
            "word embeddings (`vocab_size`): use the tokenizer saved with the model, or build the model with "
            f"vocab_size={len(tokenizer)}."
        )
    for name in SPECIAL_TOKEN_NAMES:
        if getattr(tokenizer, name) != getattr(config, name):
            raise ValueError(
                f"The tokenizer's {name} is {getattr(tokenizer, name)} but the model's is {getattr(config, name)}: "
                "use the tokenizer saved with the model (CTAL's special tokens are <s>=0 <pad>=1 </s>=2 <unk>=3 "
                "<mask>=4)."
            )
    feature_extractor = CTALFeatureExtractor(max_frames=config.max_audio_frames)
    if feature_extractor.feature_size != config.audio_feature_size:
        raise ValueError(
            f"The feature extractor produces {feature_extractor.feature_size}-dimensional frames but the model expects "
            f"{config.audio_feature_size} (`audio_feature_size`)."
        )
    return CTALProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


__all__ = ["CTALProcessor", "processor_for_config"]
