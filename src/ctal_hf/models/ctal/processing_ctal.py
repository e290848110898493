"""CTAL processor: one call prepares both input streams of the model (paper section 3.1.1), the tokens of the
linguistic stream (`CTALTokenizer`) and the acoustic frames of the audio stream (`CTALFeatureExtractor`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import PaddingStrategy, TensorType, logging

from .feature_extraction_ctal import AudioInput, CTALFeatureExtractor
from .tokenization_ctal import CTALTokenizer, check_transcripts


logger = logging.get_logger(__name__)


class CTALProcessor(ProcessorMixin):
    r"""
    Wraps a [`CTALFeatureExtractor`] and a [`CTALTokenizer`]. Calling it returns, in one [`BatchFeature`] with no key
    shared between the modalities:

    - `input_ids` (B, L) and `attention_mask` (B, L): tokens `<s> ... </s>` of the normalised text and their mask;
    - `audio_features` (B, T, 160) and `audio_attention_mask` (B, T): the acoustic frames and their mask.

    Either modality alone works (audio-only or text-only calls). Both streams are limited by the model's positions
    (`CTALConfig.max_position_embeddings` = 512 tokens, `max_audio_frames` = 3000 frames): by default longer inputs are
    truncated with a warning; with `truncation=False` they raise an error instead of failing inside the model.
    `decode`/`batch_decode` forward to the tokenizer.

    Args:
        feature_extractor ([`CTALFeatureExtractor`]): computes the audio stream's input features.
        tokenizer ([`CTALTokenizer`]): tokenises the text stream.
    """

    def __init__(self, feature_extractor: CTALFeatureExtractor, tokenizer: CTALTokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self,
        audio: AudioInput | Sequence[AudioInput] | None = None,
        text: str | Sequence[str] | None = None,
        sampling_rate: int | None = None,
        padding: bool | str | PaddingStrategy = True,
        truncation: bool = True,
        max_length: int | None = None,
        max_audio_frames: int | None = None,
        return_tensors: str | TensorType | None = None,
        device: str | torch.device = "cpu",
        **text_kwargs,
    ) -> BatchFeature:
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
            text_kwargs: further tokenizer arguments (e.g. `add_special_tokens=False`).

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` when `text` is given, and `audio_features` and
            `audio_attention_mask` when `audio` is given.
        """
        if audio is None and text is None:
            raise ValueError("Give `audio`, `text` or both to CTALProcessor.")
        data = {}
        if text is not None:
            data.update(self._tokenize(text, padding, truncation, max_length, return_tensors, text_kwargs))
        if audio is not None:
            data.update(
                self._featurize(audio, sampling_rate, padding, truncation, max_audio_frames, return_tensors, device)
            )
        sizes = {len(value) for value in data.values()}
        if len(sizes) > 1:
            raise ValueError(
                f"Got {len(data.get('input_ids', []))} texts and {len(data.get('audio_features', []))} audio; pass "
                "one transcript per utterance."
            )
        batch = BatchFeature(data, tensor_type=return_tensors)
        if return_tensors is not None and TensorType(return_tensors) == TensorType.PYTORCH:
            batch = batch.to(device)
        return batch

    def _tokenize(self, text, padding, truncation, max_length, return_tensors, text_kwargs) -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        check_transcripts(texts)
        max_length = self.tokenizer.model_max_length if max_length is None else max_length
        # Always let the tokenizer truncate: its overflow tells which texts did not fit, in a single pass.
        encoded = self.tokenizer(
            texts,
            padding=padding,
            truncation=True,
            max_length=max_length,
            return_tensors=return_tensors,
            **text_kwargs,
        )
        too_long = [index for index, encoding in enumerate(encoded.encodings) if encoding.overflowing]
        if too_long and not truncation:
            raise ValueError(
                f"Texts {too_long} have more than max_length={max_length} tokens (the model's text positions); "
                "shorten them or pass truncation=True to keep their first tokens."
            )
        if too_long:
            logger.warning(f"Texts {too_long} have more than {max_length} tokens; keeping the first {max_length}.")
        return dict(encoded)

    def _featurize(self, audio, sampling_rate, padding, truncation, max_audio_frames, return_tensors, device) -> dict:
        max_audio_frames = self.feature_extractor.max_frames if max_audio_frames is None else max_audio_frames
        features = self.feature_extractor(
            audio,
            sampling_rate=sampling_rate,
            padding=padding,
            max_length=max_audio_frames,
            truncation=truncation,
            return_attention_mask=True,
            return_tensors=return_tensors,
            device=device,
        )
        num_frames = features["audio_attention_mask"].sum(-1)
        if not truncation and num_frames.max() > max_audio_frames:
            too_long = [index for index, count in enumerate(num_frames.tolist()) if count > max_audio_frames]
            seconds = max_audio_frames * self.feature_extractor.hop_length / self.feature_extractor.sampling_rate
            raise ValueError(
                f"Audio {too_long} have more than max_audio_frames={max_audio_frames} frames (the model's audio "
                f"positions, {seconds:g} s); shorten them or pass truncation=True to keep their first frames."
            )
        return dict(features)


__all__ = ["CTALProcessor"]
