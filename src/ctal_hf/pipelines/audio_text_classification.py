"""`pipeline("audio-text-classification")`: a fine-tuned audio + text sequence classifier (emotion, sentiment, any
labelled task; paper section 4.2) applied to new utterances, with an optional speech recogniser for missing
transcripts.

Model-agnostic: any `AutoModelForSequenceClassification` whose `AutoProcessor` takes
`processor(audio=[...], text=[...], sampling_rate=..., padding=True, truncation=True, return_tensors="pt")`.
Registered with transformers at `import ctal_hf`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Pipeline, PreTrainedConfig, pipeline
from transformers.pipelines.automatic_speech_recognition import AutomaticSpeechRecognitionPipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from ..audio import load_audio


INPUT_KEYS = ("audio", "text", "sampling_rate")


def is_regression(config: PreTrainedConfig) -> bool:
    """Whether the model predicts one value: `problem_type="regression"`, or one label with no problem type set (as
    the models' losses decide)."""
    return config.problem_type == "regression" or (config.problem_type is None and config.num_labels == 1)


def scores_from_logits(logits: torch.Tensor, config: PreTrainedConfig) -> torch.Tensor:
    """Scores of a sequence classifier's `logits` `(batch, num_labels)`, computed in float32 as from a `Trainer`
    prediction: softmax over labels for single-label classification, a sigmoid per label for multi-label
    classification, the logits themselves (the predicted values) for regression."""
    logits = logits.float()
    if is_regression(config):
        return logits
    if config.problem_type == "multi_label_classification":
        return logits.sigmoid()
    return logits.softmax(-1)


def load_asr_pipeline(asr_model: Any, device: torch.device) -> AutomaticSpeechRecognitionPipeline:
    """`asr_model` as a speech-recognition pipeline: returned as is when it is one, loaded on `device` from a model id
    or folder."""
    if isinstance(asr_model, AutomaticSpeechRecognitionPipeline):
        return asr_model
    if isinstance(asr_model, (str, os.PathLike)):
        return pipeline("automatic-speech-recognition", model=os.fspath(asr_model), device=device)
    raise TypeError(
        f"asr_model must be an automatic-speech-recognition pipeline or a model id / folder, got "
        f"{type(asr_model).__name__}."
    )


class AudioTextClassificationPipeline(Pipeline):
    """Audio + text classification (or regression) of utterances with any `AutoModelForSequenceClassification` whose
    processor takes audio and text, such as [`CTALForSequenceClassification`] with [`CTALProcessor`].

    ```python
    >>> import ctal_hf  # registers the task
    >>> from transformers import pipeline

    >>> classifier = pipeline("audio-text-classification", model="path/to/fine-tuned-folder")
    >>> classifier({"audio": "utterance.wav", "text": "i can't believe it"})
    [{'label': 'angry', 'score': 0.71}, {'label': 'neutral', 'score': 0.18}, ...]
    >>> classifier([{"audio": "a.wav", "text": "hello"}, {"audio": "b.flac", "text": "fine"}], batch_size=8)
    >>> classifier("no_transcript.wav", asr_model="openai/whisper-small")  # transcribe first
    {'transcript': 'i cannot believe it', 'scores': [...]}
    ```

    Each input is a dict `{"audio": ..., "text": ...}` (optionally `"sampling_rate"` for an in-memory array), or the
    audio alone. The audio is a file path (any format soundfile reads), raw encoded bytes, a 1-D waveform (NumPy array,
    tensor or list; at `sampling_rate`, else the processor's rate), or a `datasets` audio dict (`{"array",
    "sampling_rate"}` or `{"path", "bytes"}`); it is decoded with `ctal_hf.load_audio` at the processor's sampling
    rate, as the processor decodes files in training. Without `"text"` the transcript comes from `asr_model`.

    Outputs per input: for classification, `[{"label", "score"}, ...]` sorted by score (softmax probabilities, or one
    sigmoid per label for multi-label models; `top_k` keeps the best); for regression, `{"value": float}`. When the
    transcript came from `asr_model`, the output is `{"transcript": str, "scores": [...]}` or
    `{"transcript": str, "value": float}`.

    Batching (`batch_size`) runs the processor once over each batch, so padding is the processor's own.

    Args:
        top_k (`int`, *optional*): number of labels returned, best first; all by default. Classification only.
        asr_model (`AutomaticSpeechRecognitionPipeline` or `str`, *optional*): speech recogniser for inputs without a
            transcript: a pipeline, or a model id / folder loaded as one on this pipeline's device. Pass a loaded
            pipeline to avoid reloading it at each call.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def _sanitize_parameters(self, top_k: int | None = None, asr_model: Any = None, **kwargs):
        if kwargs:
            raise TypeError(
                f"Unknown arguments {sorted(kwargs)} for the audio-text-classification pipeline; it takes top_k, "
                "asr_model, batch_size and num_workers."
            )
        preprocess_params, postprocess_params = {}, {}
        if asr_model is not None:
            preprocess_params["asr_model"] = load_asr_pipeline(asr_model, self.device)
        if top_k is not None:
            if is_regression(self.model.config):
                raise ValueError("top_k selects labels of a classifier; this model predicts one value (regression).")
            if not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
            postprocess_params["top_k"] = top_k
        return preprocess_params, {}, postprocess_params

    def __call__(self, inputs: Any, **kwargs) -> Any:
        """Classify one input or a list of inputs (see the class docstring for the input forms and the outputs);
        `top_k`, `asr_model`, `batch_size` and `num_workers` apply to this call."""
        return super().__call__(inputs, **kwargs)

    @property
    def sampling_rate(self) -> int:
        """The rate the processor's feature extractor expects; every input is decoded to it."""
        return self.processor.feature_extractor.sampling_rate

    def _decode(self, audio: Any, sampling_rate: int | None, rate: int) -> np.ndarray:
        """One audio input as a mono float64 waveform `(num_samples,)` at `rate`."""
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu().numpy()
        if isinstance(audio, (np.ndarray, list, tuple)):
            audio = {"array": np.asarray(audio), "sampling_rate": sampling_rate or self.sampling_rate}
        elif sampling_rate is not None:
            raise ValueError("`sampling_rate` applies to in-memory waveforms; audio files and bytes carry their own.")
        return load_audio(audio, sampling_rate=rate)

    def preprocess(self, inputs: Any, asr_model: AutomaticSpeechRecognitionPipeline | None = None) -> dict:
        if isinstance(inputs, Mapping) and "audio" in inputs:
            unknown = sorted(set(inputs) - set(INPUT_KEYS))
            if unknown:
                raise ValueError(f"Unknown input keys {unknown}; an input has 'audio', 'text' and 'sampling_rate'.")
            audio, text, sampling_rate = inputs["audio"], inputs.get("text"), inputs.get("sampling_rate")
        elif isinstance(inputs, Mapping) and not {"array", "path", "bytes"} & set(inputs):
            raise ValueError(
                f"An input dict needs 'audio' (got keys {sorted(inputs)}); give "
                "{'audio': path or waveform, 'text': transcript}."
            )
        else:
            audio, text, sampling_rate = inputs, None, None
        if text is not None and not isinstance(text, str):
            raise TypeError(f"'text' must be a string (the utterance's transcript), got {type(text).__name__}.")
        waveform = self._decode(audio, sampling_rate, self.sampling_rate)
        transcript = None
        if text is None:
            if asr_model is None:
                raise ValueError(
                    "An input has no transcript ('text'). Give one, or pass asr_model= (an "
                    "automatic-speech-recognition pipeline or model id) to transcribe the audio first."
                )
            asr_rate = asr_model.feature_extractor.sampling_rate
            speech = waveform if asr_rate == self.sampling_rate else self._decode(audio, sampling_rate, asr_rate)
            transcript = text = asr_model({"raw": speech.astype(np.float32), "sampling_rate": asr_rate})["text"].strip()
            if not transcript:
                where = f"'{os.fspath(audio)}'" if isinstance(audio, (str, os.PathLike)) else "of an input"
                raise ValueError(
                    f"asr_model heard no words in the audio {where} (an empty transcript): give the input's "
                    "transcript as 'text', or leave the input out."
                )
        return {"audio": waveform, "text": text, "transcript": transcript}

    def _collate(self, items: Sequence[dict]) -> dict:
        """One processor call over a batch of preprocessed inputs; the ASR transcripts ride along."""
        batch = self.processor(
            audio=[item["audio"] for item in items],
            text=[item["text"] for item in items],
            sampling_rate=self.sampling_rate,
            padding=True,
            truncation=True,
            return_tensors="pt",
        )
        return {**batch, "transcript": [item["transcript"] for item in items]}

    def _forward(self, model_inputs: dict) -> dict:
        transcripts = model_inputs.pop("transcript")
        model_inputs = {
            name: value.to(self.model.dtype) if value.is_floating_point() else value
            for name, value in model_inputs.items()
        }
        # `logits` first: the batch iterator reads the batch size from the first output.
        return {"logits": self.model(**model_inputs).logits, "transcript": transcripts}

    def postprocess(self, model_outputs: dict, top_k: int | None = None) -> Any:
        config = self.model.config
        scores = scores_from_logits(model_outputs["logits"], config)[0]
        transcript = model_outputs["transcript"]
        if isinstance(transcript, list):  # a batch of one, not unrolled by the batch iterator
            transcript = transcript[0]
        if is_regression(config):
            result = {"value": scores[0].item()}
            return result if transcript is None else {"transcript": transcript, **result}
        order = scores.argsort(descending=True, stable=True)[:top_k]
        labelled = [{"label": config.id2label[int(index)], "score": scores[index].item()} for index in order]
        return labelled if transcript is None else {"transcript": transcript, "scores": labelled}

    def run_single(self, inputs, preprocess_params, forward_params, postprocess_params):
        model_inputs = self._collate([self.preprocess(inputs, **preprocess_params)])
        return self.postprocess(self.forward(model_inputs, **forward_params), **postprocess_params)

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        # As `Pipeline.get_iterator`, with the processor as the collate function: the default one pads per key and
        # knows only the keys of text-only or audio-only models.
        if "TOKENIZERS_PARALLELISM" not in os.environ:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        if isinstance(inputs, Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = min(num_workers, 1)
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self._collate)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)


__all__ = ["AudioTextClassificationPipeline", "is_regression", "load_asr_pipeline", "scores_from_logits"]
