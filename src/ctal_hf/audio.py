"""The package's one audio decoder (soundfile + soxr), used by every data loader and by the feature extractors.

Files, bytes, file-like objects and `datasets` audio dicts are decoded with soundfile in float64, down-mixed to mono
(as `librosa.to_mono`) and resampled with soxr "HQ", so a file gives the same samples in training and at inference.
`prepare_waveforms` is the input side of every feature extractor and processor: paths through `load_audio`, in-memory
arrays checked and resampled the same way.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import soundfile
import soxr
import torch


def _resample(samples: np.ndarray, rate: int, sampling_rate: int) -> np.ndarray:
    """1-D float64 `samples` from `rate` to `sampling_rate` with soxr "HQ": one resampler for files and arrays."""
    return soxr.resample(samples, rate, sampling_rate, quality="HQ")


AudioSource = str | os.PathLike | bytes | bytearray | io.IOBase | Mapping[str, Any]
# What the processors take as one utterance: a file path, or samples in memory.
AudioInput = str | os.PathLike | np.ndarray | torch.Tensor | Sequence[float]


class AudioDecodeError(ValueError):
    """An audio file or buffer that soundfile cannot decode, or that holds no samples."""


def _audio_name(source: Any) -> str:
    """How error messages name an audio source: its path where known."""
    if isinstance(source, Mapping):
        return str(source.get("path") or ("<in-memory array>" if source.get("array") is not None else "<in-memory bytes>"))
    if isinstance(source, (bytes, bytearray)):
        return "<in-memory bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<file-like object>"))


def _open_source(source: Any) -> tuple[Any, str]:
    """(what soundfile opens, name) for a path, raw bytes, a binary file-like object or a {"path", "bytes"} dict."""
    if hasattr(source, "read"):
        return source, _audio_name(source)
    if not isinstance(source, (Mapping, bytes, bytearray, str, os.PathLike)):
        raise TypeError(
            f"Cannot read audio from a {type(source).__name__}; expected a path, bytes, a file-like object, or a "
            "datasets audio dict."
        )
    name = _audio_name(source)
    if isinstance(source, Mapping):
        if source.get("bytes") is not None:
            return io.BytesIO(source["bytes"]), name
        if not source.get("path"):
            raise ValueError(
                f"Audio item has neither 'bytes', 'path' nor 'array' (keys: {sorted(source)}); expected the "
                "datasets audio dict of an `Audio(decode=False)` column, or {'array', 'sampling_rate'}."
            )
        source = source["path"]
    elif isinstance(source, (bytes, bytearray)):
        return io.BytesIO(source), name
    if not os.path.isfile(source):
        raise FileNotFoundError(f"No audio file at '{os.fspath(source)}'.")
    return source, name


def load_audio(source: AudioSource, sampling_rate: int = 16000) -> np.ndarray:
    """Decodes one audio item to a mono float64 waveform `(num_samples,)` at `sampling_rate`.

    The package's one decoder: `CTALFeatureExtractor` reads file paths with it and `ctal_hf.data.features`
    (`CTALFeatureTransform`) reads dataset rows with it, so training and inference see the same samples.

    Accepts a file path, raw encoded bytes, a binary file-like object (read from its current position), a datasets
    audio dict `{"path", "bytes"}` (decoded from the bytes when present), or `{"array", "sampling_rate"}` with a 1-D
    float array. Encoded audio is read with soundfile (WAV, FLAC, OGG, MP3, ...) in float64 (the precision the
    features are computed in), channels are averaged to mono (as `librosa.to_mono`), and other rates are resampled
    with soxr `"HQ"` (as in-memory arrays are by `CTALFeatureExtractor`).

    Raises:
        FileNotFoundError: the file does not exist.
        AudioDecodeError: soundfile cannot decode it, it holds no samples, or an in-memory array is not 1-D or has
            no `sampling_rate`.
        TypeError: `source` is none of the accepted kinds.
    """
    if isinstance(source, Mapping) and source.get("array") is not None:
        name = _audio_name(source)
        samples = np.asarray(source["array"], dtype=np.float64)
        rate = source.get("sampling_rate")
        if samples.ndim != 1 or rate is None:
            raise AudioDecodeError(
                f"Audio '{name}': an in-memory array must be 1-D (mono) with a 'sampling_rate', got shape "
                f"{samples.shape} and sampling_rate={rate}."
            )
    else:
        opened, name = _open_source(source)
        try:
            samples, rate = soundfile.read(opened, dtype="float64", always_2d=True)  # (samples, channels)
        except soundfile.SoundFileError as error:
            raise AudioDecodeError(f"soundfile cannot decode audio '{name}' ({error}).") from error
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise AudioDecodeError(f"Audio '{name}' contains no samples.")
    if rate != sampling_rate:
        samples = _resample(samples, rate, sampling_rate)
    return np.ascontiguousarray(samples)


def audio_num_samples(source: AudioSource, sampling_rate: int = 16000) -> int:
    """Length of an audio item in samples at `sampling_rate`, read from its header (no decoding).

    Accepts the same items as `load_audio` (a file-like object is left after its header); raises the same errors for
    missing or unreadable files.
    """
    if isinstance(source, Mapping) and source.get("array") is not None:
        num_samples, rate = len(source["array"]), source.get("sampling_rate")
        if rate is None:
            raise AudioDecodeError(f"Audio '{_audio_name(source)}': an in-memory array needs a 'sampling_rate'.")
    else:
        opened, name = _open_source(source)
        try:
            info = soundfile.info(opened)
        except soundfile.SoundFileError as error:
            raise AudioDecodeError(f"Cannot read the header of audio '{name}': {error}") from error
        num_samples, rate = info.frames, info.samplerate
    return round(num_samples * sampling_rate / rate)


def prepare_waveforms(
    audio: AudioInput | Sequence[AudioInput],
    sampling_rate: int | None,
    target_rate: int,
    min_num_samples: int = 1,
    min_length_name: str = "one sample",
) -> list[torch.Tensor]:
    """One utterance or a batch as 1-D float64 tensors at `target_rate`, with clear errors: the input side of every
    feature extractor and processor in the package.

    `audio` is one utterance, a list/tuple of utterances, or a 2-D float array/tensor `(batch, samples)` of mono
    utterances (the transformers convention of the Wav2Vec2 and Whisper extractors). An utterance is a 1-D float
    array/tensor or list of floats (mono); inside a list, a 2-D float array/tensor holding ONE multi-channel recording
    (channels on the shorter axis; averaged as `librosa.to_mono`); or a file path decoded by `load_audio` (its header's
    rate wins over `sampling_rate`). In-memory audio needs `sampling_rate` and is resampled with soxr "HQ" when it
    differs from `target_rate`. Integer PCM, dicts, encoded bytes, NaN/inf samples, empty audio and audio shorter than
    `min_num_samples` (described as `min_length_name` in the error) raise a `ValueError` naming the fix.
    """
    if isinstance(audio, (np.ndarray, torch.Tensor)) and audio.ndim >= 2:
        items = _batch_rows(audio, min_num_samples)
    else:
        # A list/tuple is a batch, unless it holds numbers (one utterance as a list of samples).
        is_single = not isinstance(audio, (list, tuple)) or (
            len(audio) > 0 and isinstance(audio[0], (int, float, np.number))
        )
        items = [audio] if is_single else list(audio)
    if not items:
        raise ValueError("No audio given: pass one utterance or a non-empty list of utterances.")
    has_arrays = any(not isinstance(item, (str, os.PathLike)) for item in items)
    if has_arrays and sampling_rate is None:
        raise ValueError(
            f"`sampling_rate` is required for in-memory audio: pass the rate it was recorded at, e.g. "
            f"sampling_rate=16000 (it is resampled to {target_rate} Hz when different). Features of audio "
            "at a wrong rate are silently wrong, so there is no default. File paths carry their own rate."
        )
    if sampling_rate is not None and (not isinstance(sampling_rate, (int, np.integer)) or sampling_rate < 1):
        raise ValueError(f"`sampling_rate` must be a positive integer (Hz), got {sampling_rate!r}.")
    return [
        _prepare_one(item, index, sampling_rate, target_rate, min_num_samples, min_length_name)
        for index, item in enumerate(items)
    ]


def _batch_rows(audio: np.ndarray | torch.Tensor, min_num_samples: int) -> list[np.ndarray | torch.Tensor]:
    """The utterances of a `(batch, samples)` array, the transformers convention (Wav2Vec2, Whisper)."""
    shape = tuple(audio.shape)
    if audio.ndim > 2:
        raise ValueError(
            f"Got a {audio.ndim}-D audio array of shape {shape}; a 2-D array is a batch `(batch, samples)` of mono "
            "utterances. Pass multi-channel recordings as a list with one `(channels, samples)` array per "
            "utterance (they are down-mixed), e.g. `list(audio)`."
        )
    if shape[1] < min_num_samples <= shape[0]:
        raise ValueError(
            f"Got a 2-D audio array of shape {shape}, read as a batch of {shape[0]} utterances of {shape[1]} "
            "samples each (a 2-D array is `(batch, samples)`). If it is ONE recording with "
            f"{shape[1]} channels (`soundfile.read` gives `(samples, channels)`), pass it in a list, `[audio]`, "
            "to have it down-mixed."
        )
    return list(audio)


def _prepare_one(
    item, index: int, sampling_rate: int | None, target_rate: int, min_num_samples: int, min_length_name: str
) -> torch.Tensor:
    if isinstance(item, (str, os.PathLike)):
        waveform, rate = torch.from_numpy(load_audio(item, target_rate)), target_rate
    else:
        waveform, rate = _as_float64_tensor(item, index), sampling_rate
        if waveform.ndim == 2:
            waveform = _downmix(waveform)
        elif waveform.ndim != 1:
            raise ValueError(
                f"Audio {index} has {waveform.ndim} dimensions (shape {tuple(waveform.shape)}); an utterance is "
                "1-D (mono) or, inside a list, 2-D (one multi-channel recording). Pass a batch as a list of "
                "utterances or as one `(batch, samples)` array."
            )
    # NaN and inf show in the extremes: one pass, without a mask the size of the audio.
    if waveform.numel() > 0 and not torch.isfinite(torch.stack(torch.aminmax(waveform))).all():
        first = int((~torch.isfinite(waveform)).nonzero()[0])
        raise ValueError(
            f"Audio {index} contains NaN or infinite samples (first at sample {first}); repair or drop it."
        )
    if rate != target_rate and waveform.numel() > 0:
        waveform = torch.from_numpy(_resample(waveform.cpu().numpy(), rate, target_rate))
    if waveform.numel() == 0:
        raise ValueError(f"Audio {index} is empty; drop it or pass at least {min_num_samples} samples.")
    if waveform.numel() < min_num_samples:
        raise ValueError(
            f"Audio {index} has {waveform.numel()} samples at {target_rate} Hz, fewer than {min_length_name} "
            f"({min_num_samples} samples = {1000 * min_num_samples / target_rate:g} ms); pad it with silence or drop "
            "it."
        )
    return waveform


def _as_float64_tensor(item, index: int) -> torch.Tensor:
    """An in-memory utterance as a float64 tensor, rejecting integer PCM and other non-float data."""
    if isinstance(item, Mapping):
        raise ValueError(
            f"Audio {index} is a dict (keys {sorted(item)}), e.g. a decoded `datasets` audio item: pass its samples "
            "and rate, `extractor(item['array'], sampling_rate=item['sampling_rate'])`, or its file path."
        )
    if isinstance(item, (bytes, bytearray)):
        raise ValueError(f"Audio {index} is encoded bytes: pass a path to the file, or decoded float samples.")
    if isinstance(item, torch.Tensor):
        tensor = item.detach()
    else:
        array = np.array(item)
        if array.dtype.kind not in "biufc":
            raise ValueError(f"Audio {index} has dtype {array.dtype}; pass real-valued float samples in [-1, 1].")
        tensor = torch.from_numpy(array)
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"Audio {index} has dtype {tensor.dtype}; pass real-valued float samples in [-1, 1].")
    if not tensor.is_floating_point():
        raise ValueError(
            f"Audio {index} holds integer PCM samples ({tensor.dtype}). Convert it to float in [-1, 1] first: divide "
            "int16 samples by 32768 (int32 by 2**31), or load the file as float (e.g. soundfile.read(path)). Unscaled "
            "integers give features on another scale than the model was trained on."
        )
    return tensor.to(torch.float64)


def _downmix(waveform: torch.Tensor) -> torch.Tensor:
    """Average the channels of one multi-channel recording (as `librosa.to_mono`); channels are the shorter axis, so
    `(channels, samples)` (librosa, torchaudio) and `(samples, channels)` (soundfile) both work."""
    return waveform.mean(dim=int(waveform.shape[0] > waveform.shape[1]))


__all__ = [
    "AudioDecodeError",
    "AudioInput",
    "AudioSource",
    "audio_num_samples",
    "load_audio",
    "prepare_waveforms",
]
