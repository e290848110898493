"""The package's one audio decoder (soundfile + soxr), used by every data loader and by the feature extractors.

Files, bytes, file-like objects and `datasets` audio dicts are decoded with soundfile in float64, down-mixed to mono
(as `librosa.to_mono`) and resampled with soxr "HQ", so a file gives the same samples in training and at inference.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import soundfile
import soxr


def _resample(samples: np.ndarray, rate: int, sampling_rate: int) -> np.ndarray:
    """1-D float64 `samples` from `rate` to `sampling_rate` with soxr "HQ": one resampler for files and arrays."""
    return soxr.resample(samples, rate, sampling_rate, quality="HQ")


AudioSource = str | os.PathLike | bytes | bytearray | io.IOBase | Mapping[str, Any]


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


__all__ = ["AudioDecodeError", "AudioSource", "audio_num_samples", "load_audio"]
