"""Processor of the audio-text cross-modal attention model: one call prepares the raw waveforms for the speech encoder
(a wav2vec 2.0 feature extractor) and the tokens for the text encoder (a BERT tokenizer)."""

# No `from __future__ import annotations`: ProcessorMixin reads the kwargs TypedDicts' annotations at call time.
from transformers import AutoFeatureExtractor, AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import AudioKwargs, ProcessingKwargs, ProcessorMixin, Unpack
from transformers.utils import logging

from ...audio import AudioInput, prepare_waveforms
from ...processing_utils import tokenize_texts
from ...transcripts import check_transcripts


logger = logging.get_logger(__name__)


class AudioTextCMAAudioKwargs(AudioKwargs, total=False):
    """`max_audio_samples`: the audio limit in samples, apart from `max_length`, which is the text limit in tokens."""

    max_audio_samples: int | None


class AudioTextCMAProcessorKwargs(ProcessingKwargs, total=False):
    audio_kwargs: AudioTextCMAAudioKwargs
    _defaults = {
        "text_kwargs": {"padding": True, "truncation": True, "return_token_type_ids": False},
        "audio_kwargs": {"padding": True, "truncation": True},
    }


class AudioTextCMAProcessor(ProcessorMixin):
    r"""
    Wraps a wav2vec 2.0 feature extractor ([`~transformers.Wav2Vec2FeatureExtractor`]: 16 kHz waveform, zero-mean
    unit-variance per utterance over its valid samples, zero padding) and a BERT-style tokenizer. Calling it returns,
    in one [`BatchFeature`] with no key shared between the modalities:

    - `input_ids` (B, L) and `attention_mask` (B, L): the tokens (`[CLS] ... [SEP]`) and their mask;
    - `input_values` (B, S) and `audio_attention_mask` (B, S): the waveforms and their sample mask, always returned
      (the model needs it to find each utterance's valid frames, whatever the feature extractor's
      `return_attention_mask` says).

    Either modality alone works. Keyword arguments are routed to the tokenizer and the feature extractor by
    `ProcessorMixin` (or pass `text_kwargs={...}` / `audio_kwargs={...}`). `decode`/`batch_decode` forward to the
    tokenizer.

    Args:
        feature_extractor ([`~transformers.Wav2Vec2FeatureExtractor`]): prepares the speech encoder's input.
        tokenizer ([`~transformers.BertTokenizer`] or another BERT-style tokenizer): tokenises the text.
    """

    valid_processor_kwargs = AudioTextCMAProcessorKwargs

    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    @classmethod
    def from_audio_text_pretrained(
        cls, audio_name_or_path: str, text_name_or_path: str, **kwargs
    ) -> "AudioTextCMAProcessor":
        """The processor of the two pre-trained encoders that `AudioTextCMAModel.from_audio_text_pretrained` starts
        from: the speech checkpoint's feature extractor (asked for attention masks) and the text checkpoint's
        tokenizer. `audio_*` / `text_*` keyword arguments go to the respective `from_pretrained`."""
        audio_kwargs = {name[len("audio_") :]: kwargs.pop(name) for name in list(kwargs) if name.startswith("audio_")}
        text_kwargs = {name[len("text_") :]: kwargs.pop(name) for name in list(kwargs) if name.startswith("text_")}
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}: prefix them with `audio_` or `text_`.")
        feature_extractor = AutoFeatureExtractor.from_pretrained(
            audio_name_or_path, **{"return_attention_mask": True, **audio_kwargs}
        )
        return cls(feature_extractor, AutoTokenizer.from_pretrained(text_name_or_path, **text_kwargs))

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_values", "audio_attention_mask"]

    def __call__(
        self, audio: AudioInput | list[AudioInput] | None = None, text: str | list[str] | None = None,
        **kwargs: Unpack[AudioTextCMAProcessorKwargs],
    ) -> BatchFeature:  # fmt: skip
        r"""
        Prepare a batch (or one example) of audio and/or text.

        Args:
            audio: one utterance, a list, or a `(batch, samples)` array: float waveforms at `sampling_rate` (a
                multi-channel recording inside a list is averaged to mono) or file paths decoded by
                `ctal_hf.load_audio` (see `ctal_hf.audio.prepare_waveforms`); resampled to the feature extractor's
                rate (16 kHz).
            text: one transcript or a list. An empty transcript (`""`, only whitespace, None) raises a `ValueError`,
                as in the training loaders (`check_transcripts`).
            sampling_rate (`int`): rate of in-memory audio (required for arrays; files carry their own).
            padding (`bool` or `str`, defaults to `True`): `True`/`"longest"` pads each modality to its longest
                example; `"max_length"` pads text to `max_length` tokens and audio to `max_audio_samples` samples.
            truncation (`bool`, defaults to `True`): cut text to `max_length` tokens (keeping `[SEP]`) and audio to
                `max_audio_samples`, with a warning naming the examples. `False` raises a `ValueError` for a text the
                model cannot take, or audio over the limit.
            max_length (`int`, *optional*): text limit in tokens, special tokens included; defaults to the
                tokenizer's `model_max_length` (512 for BERT).
            max_audio_samples (`int`, *optional*): audio limit in samples at 16 kHz (e.g. `16000 * 20` for 20 s);
                none by default (the speech encoder has relative positions).
            return_tensors (`str`, *optional*): `"pt"` for torch tensors, `"np"` for numpy.
            Other tokenizer arguments reach the tokenizer (`token_type_ids` are not returned by default: one segment).

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` when `text` is given, and `input_values` and
            `audio_attention_mask` when `audio` is given.
        """
        if audio is None and text is None:
            raise ValueError("Give `audio`, `text` or both to AudioTextCMAProcessor.")
        kwargs = self._merge_kwargs(
            AudioTextCMAProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        data = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            check_transcripts(texts)
            data.update(tokenize_texts(self.tokenizer, texts, **kwargs["text_kwargs"]))
        if audio is not None:
            data.update(self._featurize(audio, **kwargs["audio_kwargs"]))
        if text is not None and audio is not None and len(data["input_ids"]) != len(data["input_values"]):
            raise ValueError(
                f"Got {len(data['input_ids'])} texts and {len(data['input_values'])} audio; pass one transcript per "
                "utterance."
            )
        return_tensors = kwargs["text_kwargs" if text is not None else "audio_kwargs"].get("return_tensors")
        return BatchFeature(data, tensor_type=return_tensors)

    def _featurize(
        self, audio, sampling_rate=None, truncation=True, max_audio_samples=None, max_length=None, **audio_kwargs
    ) -> dict:
        # `max_length` is the text limit (ProcessorMixin hands it to both modalities); audio has `max_audio_samples`.
        rate = self.feature_extractor.sampling_rate
        waveforms = [waveform.numpy() for waveform in prepare_waveforms(audio, sampling_rate, rate)]
        if max_audio_samples is not None:
            too_long = [index for index, waveform in enumerate(waveforms) if len(waveform) > max_audio_samples]
            seconds = f"{max_audio_samples / rate:g} s"
            if too_long and not truncation:
                raise ValueError(
                    f"Audio {too_long} have more than max_audio_samples={max_audio_samples} samples ({seconds}); "
                    "shorten them or pass truncation=True to keep their start."
                )
            if too_long:
                logger.warning(
                    f"Audio {too_long} have more than {max_audio_samples} samples ({seconds}); keeping the first "
                    f"{max_audio_samples}."
                )
        features = self.feature_extractor(
            waveforms,
            sampling_rate=rate,
            max_length=max_audio_samples,
            truncation=max_audio_samples is not None and truncation,
            return_attention_mask=True,
            **audio_kwargs,
        )
        return {"input_values": features["input_values"], "audio_attention_mask": features["attention_mask"]}


__all__ = ["AudioTextCMAProcessor"]
