"""Processor of the audio-text cross-modal attention model: one call prepares the raw waveforms for the speech encoder
(a wav2vec 2.0 feature extractor) and the tokens for the text encoder (a BERT tokenizer)."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import AutoFeatureExtractor, AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import PaddingStrategy, TensorType, logging

from ...audio import AudioInput, prepare_waveforms
from ...processing_utils import tokenize_texts


logger = logging.get_logger(__name__)


class AudioTextCMAProcessor(ProcessorMixin):
    r"""
    Wraps a wav2vec 2.0 feature extractor ([`~transformers.Wav2Vec2FeatureExtractor`]: 16 kHz waveform, zero-mean
    unit-variance per utterance over its valid samples, zero padding) and a BERT-style tokenizer. Calling it returns,
    in one [`BatchFeature`] with no key shared between the modalities:

    - `input_ids` (B, L) and `attention_mask` (B, L): the tokens (`[CLS] ... [SEP]`) and their mask;
    - `input_values` (B, S) and `audio_attention_mask` (B, S): the waveforms and their sample mask, always returned
      (the model needs it to find each utterance's valid frames, whatever the feature extractor's
      `return_attention_mask` says).

    Either modality alone works. `decode`/`batch_decode` forward to the tokenizer.

    Args:
        feature_extractor ([`~transformers.Wav2Vec2FeatureExtractor`]): prepares the speech encoder's input.
        tokenizer ([`~transformers.BertTokenizer`] or another BERT-style tokenizer): tokenises the text.
    """

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
        self,
        audio: AudioInput | Sequence[AudioInput] | None = None,
        text: str | Sequence[str] | None = None,
        sampling_rate: int | None = None,
        padding: bool | str | PaddingStrategy = True,
        truncation: bool = True,
        max_length: int | None = None,
        max_audio_samples: int | None = None,
        return_tensors: str | TensorType | None = None,
        **text_kwargs,
    ) -> BatchFeature:
        r"""
        Prepare a batch (or one example) of audio and/or text.

        Args:
            audio: one utterance or a list: 1-D float arrays/tensors (or one multi-channel recording as a 2-D array,
                averaged to mono) at `sampling_rate`, or file paths decoded by `ctal_hf.load_audio` (see
                `ctal_hf.audio.prepare_waveforms`); resampled to the feature extractor's rate (16 kHz).
            text: one transcript or a list.
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
            text_kwargs: further tokenizer arguments.

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` when `text` is given, and `input_values` and
            `audio_attention_mask` when `audio` is given.
        """
        if audio is None and text is None:
            raise ValueError("Give `audio`, `text` or both to AudioTextCMAProcessor.")
        data = {}
        if text is not None:
            text_kwargs.setdefault("return_token_type_ids", False)
            data.update(
                tokenize_texts(self.tokenizer, text, padding, truncation, max_length, return_tensors, **text_kwargs)
            )
        if audio is not None:
            data.update(self._featurize(audio, sampling_rate, padding, truncation, max_audio_samples, return_tensors))
        sizes = {len(value) for value in data.values()}
        if len(sizes) > 1:
            raise ValueError(
                f"Got {len(data.get('input_ids', []))} texts and {len(data.get('input_values', []))} audio; pass "
                "one transcript per utterance."
            )
        return BatchFeature(data, tensor_type=return_tensors)

    def _featurize(self, audio, sampling_rate, padding, truncation, max_audio_samples, return_tensors) -> dict:
        rate = self.feature_extractor.sampling_rate
        waveforms = [waveform.numpy() for waveform in prepare_waveforms(audio, sampling_rate, rate)]
        if max_audio_samples is not None:
            too_long = [index for index, waveform in enumerate(waveforms) if len(waveform) > max_audio_samples]
            if too_long and not truncation:
                raise ValueError(
                    f"Audio {too_long} have more than max_audio_samples={max_audio_samples} samples "
                    f"({max_audio_samples / rate:g} s); shorten them or pass truncation=True to keep their start."
                )
            if too_long:
                logger.warning(
                    f"Audio {too_long} have more than {max_audio_samples} samples ({max_audio_samples / rate:g} s); "
                    f"keeping the first {max_audio_samples}."
                )
        features = self.feature_extractor(
            waveforms,
            sampling_rate=rate,
            padding=padding,
            max_length=max_audio_samples,
            truncation=max_audio_samples is not None and truncation,
            return_attention_mask=True,
            return_tensors=return_tensors,
        )
        return {"input_values": features["input_values"], "audio_attention_mask": features["attention_mask"]}


__all__ = ["AudioTextCMAProcessor"]
