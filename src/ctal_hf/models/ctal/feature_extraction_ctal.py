"""CTAL audio front-end: the frame-level acoustic surface features of paper section 3.1.1.

"The input audio signal is first transformed into frames of width 50ms and step 12.5ms. Then the 80 dimension
Mel-spectrograms are extracted from each frame and concatenated with their first order derivatives, making the feature
dimension to 160." The authors computed them with librosa (section 4.1); this module reproduces their exact recipe
(`preprocess/audio.py` of the original code) as a batched torch computation (on CPU, the spectra with SciPy):

1. centred frames: the signal is padded by `n_fft // 2` samples on each side (librosa's `pad_mode="reflect"` of 2021),
   so an utterance of `L` samples gives `T = 1 + L // hop_length` frames;
2. power spectrum of each Hann-windowed frame (window `win_length` zero-padded to `n_fft`);
3. `num_mel_bins` Slaney-scale, Slaney-normalised triangular filters between `f_min` and `f_max`;
4. natural log of `mel + log_offset`;
5. first-order delta over time (librosa's `delta`: Savitzky-Golay, `delta_width` frames, `mode="interp"`);
6. `[log-mel | delta]` per frame, then per-utterance CMVN over valid frames: `(x - mean_t) / (std_t + cmvn_eps)`.

`load_audio` is the package's one audio decoder (soundfile, channel average, soxr "HQ" resampling, float64): the
extractor reads file paths with it and the data pipeline (`ctal_hf.data.features`) reads dataset rows with it, so a file
gives the same features in training (`CTALFeatureTransform`) as at inference (`processor(audio=path)`).

Over 500 lines on purpose: as transformers' own `feature_extraction_*.py` files, one file holds the whole recipe (input
checks, batched and chunked STFT, mel, delta, CMVN) so that it can be read against the paper and the authors' code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
import scipy.sparse
import torch
import torch.nn.functional as F
from transformers.audio_utils import mel_filter_bank
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType, logging

from ...audio import AudioInput, prepare_waveforms


logger = logging.get_logger(__name__)

# Window functions that match `scipy.signal.get_window(name, n, fftbins=True)`, which librosa uses.
WINDOW_FUNCTIONS = {"hann": torch.hann_window, "hamming": torch.hamming_window, "blackman": torch.blackman_window}
PAD_MODES = ("reflect", "constant")
CPU_SPECTRUM_DTYPES = ("float64", "float32")
# Largest group of utterances computed in one batch, counted as its complex spectrum (bytes). On accelerators one
# batched STFT builds that spectrum; on CPU only blocks of it exist at a time, and the bound keeps a group's deltas and
# CMVN on cache-sized tensors: one 10 s utterance (13 MB) or several short ones (8 x 10 s at once measured 1.2x
# slower on a 2-core machine, 16 x 10 s 2.5x slower with the batched STFT: memory traffic).
SPECTRUM_BYTES = {"cpu": 16 * 2**20, "accelerator": 2**31}
# Frames per FFT block of the CPU path: the block's spectrum (0.8 MB in float64 at n_fft=2048) stays in cache, and
# below the size for which glibc maps fresh memory on every allocation (measured: 64 and 128 frames per block 1.2x
# and 1.5x slower in float64, from page faults; 512 frames 2.3x slower than 128).
CPU_BLOCK_FRAMES = 48
# Relative std under which CMVN treats a feature dimension as constant (float64 rounding is ~1e-16).
CONSTANT_STD = 1e-12


_THREAD_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """A pool of `threads` workers for the CPU path, kept for the life of the process (starting one costs 0.3 ms,
    8% of a 10 s utterance's spectra); a forked child, e.g. a `DataLoader` worker, starts its own."""
    key = (os.getpid(), threads)
    if key not in _THREAD_POOLS:
        _THREAD_POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="ctal-feature-extraction")
    return _THREAD_POOLS[key]


def _stack(log_mels: list[np.ndarray]) -> torch.Tensor:
    """Per-utterance (M, T_b) arrays as one (B, M, max T_b) tensor (without a copy for one utterance); the frames after
    an utterance's own repeat its last frame (finite values that deltas and CMVN leave out)."""
    if len(log_mels) == 1:
        return torch.from_numpy(log_mels[0])[None]
    length = max(log_mel.shape[1] for log_mel in log_mels)
    padded = [np.pad(log_mel, ((0, 0), (0, length - log_mel.shape[1])), mode="edge") for log_mel in log_mels]
    return torch.from_numpy(np.stack(padded))


def _frames_to(features: torch.Tensor, length: int) -> torch.Tensor:
    """`features` (B, T, F) cut or zero-padded to `length` frames, without a copy when nothing changes."""
    if features.shape[1] >= length:
        return features[:, :length]
    return F.pad(features, (0, 0, 0, length - features.shape[1]))


class CTALFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Computes CTAL's acoustic input features (paper section 3.1.1): per frame, `num_mel_bins` log-mel energies and
    their first-order deltas, normalised per utterance (CMVN). Defaults reproduce the authors' recipe: 16 kHz audio,
    50 ms Hann window (800 samples) every 12.5 ms (200 samples), `n_fft=2048`, centred frames with reflect padding,
    80 Slaney mel filters on 0-8000 Hz, `log(mel + 1e-6)`, delta width 9 (`mode="interp"`), CMVN with population std.
    Every recipe choice is a saved parameter, so e.g. the 25 ms / 10 ms / `n_fft=400` variant of the original config
    is `CTALFeatureExtractor(win_length=400, hop_length=160, n_fft=400)`.

    The utterances of a call are computed together (spectra on CPU with SciPy's FFT in cache-sized blocks shared over
    `torch.get_num_threads()` threads, on other devices with batched `torch.stft`s; grouped to bound memory, an
    utterance longer than a group in chunks of frames) and the result equals computing them one by one: each utterance
    is padded with its own samples, and deltas and CMVN only see its valid frames.
    The computation runs in float64 (on `device`); the returned features are float32. On CPU,
    `cpu_spectrum_dtype="float32"` computes the spectra (window, FFT, power, mel) in float32, measured 1.2-1.3x faster
    over all (the FFT alone 1.8x). Its features differ from the float64 ones by up to 3.5e-5 with CMVN and 1.2e-4
    without over the 300 utterances of the demo corpus, 2.6e-4 on a clipped tone and 2.8e-4 on a loud 7 kHz tone
    (tested at 5e-4): float32 rounding reaches the low-energy bins that `log(mel + 1e-6)` exposes. Near-silent
    stationary audio is the exception: there CMVN divides dimensions that barely change by their tiny spread and
    amplifies the rounding (measured 4e-3 on a tone at 1e-3 amplitude, 6 at 1e-5), so float32 spectra are an opt-in
    speed-up, not the default. A dimension that is constant over an utterance (digital silence; the deltas of an
    utterance of at most `delta_width` frames) gets 0 from CMVN, the exact value, where the plain formula returns
    amplified rounding noise.

    Args:
        num_mel_bins (`int`, defaults to 80): number of mel filters; the feature size is `2 * num_mel_bins`.
        sampling_rate (`int`, defaults to 16000): rate the features are computed at; other rates are resampled.
        win_length (`int`, defaults to 800): analysis window in samples (50 ms); also the shortest accepted audio.
        hop_length (`int`, defaults to 200): frame step in samples (12.5 ms).
        n_fft (`int`, defaults to 2048): FFT size (even); the window is zero-padded to it, centred.
        window_type (`str`, defaults to `"hann"`): `"hann"`, `"hamming"` or `"blackman"` (periodic).
        center (`bool`, defaults to `True`): pad `n_fft // 2` samples on both sides so frame `t` is centred on sample
            `t * hop_length`; `False` frames the raw signal (`T = 1 + (L - n_fft) // hop_length`).
        pad_mode (`str`, defaults to `"reflect"`): padding of centred frames, `"reflect"` (librosa < 0.10, used by the
            authors; numpy's repeated reflection when the pad is longer than the audio) or `"constant"` (zeros, librosa
            >= 0.10).
        power (`float`, defaults to 2.0): exponent of the magnitude spectrum (2 = power spectrogram).
        mel_scale (`str`, defaults to `"slaney"`): `"slaney"`, `"htk"` or `"kaldi"` mel scale.
        mel_norm (`str`, *optional*, defaults to `"slaney"`): `"slaney"` area normalisation of the filters, or `None`.
        f_min, f_max (`float`, default to 0.0 and 8000.0): frequency range of the mel filters in Hz.
        log_offset (`float`, defaults to 1e-6): added to the mel energies before the natural log.
        delta_width (`int`, defaults to 9): odd number of frames of the Savitzky-Golay delta (librosa `width`).
        do_cmvn (`bool`, defaults to `True`): per-utterance mean and variance normalisation of each dimension.
        cmvn_eps (`float`, defaults to 1e-16): added to the standard deviation (population std, as `numpy.std`).
        max_frames (`int`, defaults to 3000): default truncation and `"max_length"` padding length (37.5 s at 12.5 ms),
            the number of audio positions of `CTALConfig.max_audio_frames`.
        cpu_spectrum_dtype (`str`, defaults to `"float64"`): precision of the spectra on CPU, `"float64"` or
            `"float32"` (faster, with the deviation given above); accelerators compute in float64 either way.
        padding_value (`float`, defaults to 0.0): value of padding frames.
        return_attention_mask (`bool`, defaults to `True`): whether calls return `audio_attention_mask`.
    """

    model_input_names = ["audio_features", "audio_attention_mask"]

    def __init__(
        self,
        num_mel_bins: int = 80,
        sampling_rate: int = 16000,
        win_length: int = 800,
        hop_length: int = 200,
        n_fft: int = 2048,
        window_type: str = "hann",
        center: bool = True,
        pad_mode: str = "reflect",
        power: float = 2.0,
        mel_scale: str = "slaney",
        mel_norm: str | None = "slaney",
        f_min: float = 0.0,
        f_max: float = 8000.0,
        log_offset: float = 1e-6,
        delta_width: int = 9,
        do_cmvn: bool = True,
        cmvn_eps: float = 1e-16,
        max_frames: int = 3000,
        cpu_spectrum_dtype: str = "float64",
        padding_value: float = 0.0,
        return_attention_mask: bool = True,
        **kwargs,
    ):
        # `feature_size` comes back from saved configs; it is derived, so only check it.
        feature_size = kwargs.pop("feature_size", 2 * num_mel_bins)
        if feature_size != 2 * num_mel_bins:
            raise ValueError(
                f"`feature_size` ({feature_size}) must be 2 * num_mel_bins ({2 * num_mel_bins}): log-mel plus delta."
            )
        if kwargs.get("padding_side", "right") != "right":
            raise ValueError("CTALFeatureExtractor pads on the right only; remove `padding_side`.")
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.num_mel_bins = num_mel_bins
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.window_type = window_type
        self.center = center
        self.pad_mode = pad_mode
        self.power = power
        self.mel_scale = mel_scale
        self.mel_norm = mel_norm
        self.f_min = f_min
        self.f_max = f_max
        self.log_offset = log_offset
        self.delta_width = delta_width
        self.do_cmvn = do_cmvn
        self.cmvn_eps = cmvn_eps
        self.max_frames = max_frames
        self.cpu_spectrum_dtype = cpu_spectrum_dtype
        self._validate_recipe()
        # float32 filters as librosa builds them (bit-exact with `librosa.filters.mel`), applied in float64.
        # `to_dict` leaves out the `mel_filters` attribute. Shape (n_fft // 2 + 1, num_mel_bins).
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=num_mel_bins,
            min_frequency=f_min,
            max_frequency=f_max,
            sampling_rate=sampling_rate,
            norm=mel_norm,
            mel_scale=mel_scale,
            dtype=np.float32,
        )
        self._cpu_operator_cache = {}

    def _validate_recipe(self) -> None:
        for name in ("num_mel_bins", "sampling_rate", "win_length", "hop_length", "n_fft", "max_frames"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)!r}.")
        if self.n_fft % 2:
            raise ValueError(f"`n_fft` must be even, got {self.n_fft}; use e.g. {self.n_fft + 1}.")
        if not 2 <= self.win_length <= self.n_fft:
            raise ValueError(f"`win_length` ({self.win_length}) must be between 2 and n_fft ({self.n_fft}).")
        if self.hop_length > self.win_length:
            raise ValueError(
                f"`hop_length` ({self.hop_length}) must not exceed `win_length` ({self.win_length}): samples between "
                "windows would be ignored."
            )
        if self.window_type not in WINDOW_FUNCTIONS:
            raise ValueError(f"`window_type` must be one of {sorted(WINDOW_FUNCTIONS)}, got {self.window_type!r}.")
        if self.cpu_spectrum_dtype not in CPU_SPECTRUM_DTYPES:
            raise ValueError(
                f"`cpu_spectrum_dtype` must be one of {CPU_SPECTRUM_DTYPES}, got {self.cpu_spectrum_dtype!r}."
            )
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"`pad_mode` must be one of {PAD_MODES}, got {self.pad_mode!r}.")
        if not 0 <= self.f_min < self.f_max <= self.sampling_rate / 2:
            raise ValueError(
                f"Need 0 <= f_min < f_max <= sampling_rate / 2, got f_min={self.f_min}, f_max={self.f_max}, "
                f"sampling_rate={self.sampling_rate}."
            )
        if self.power <= 0 or self.log_offset <= 0 or self.cmvn_eps < 0:
            raise ValueError("`power` and `log_offset` must be > 0 and `cmvn_eps` >= 0.")
        if self.delta_width < 3 or self.delta_width % 2 == 0:
            raise ValueError(f"`delta_width` must be an odd integer >= 3 (librosa's rule), got {self.delta_width}.")

    @property
    def min_num_samples(self) -> int:
        """Shortest accepted audio in samples: one analysis window (`win_length`, or `n_fft` without centring)."""
        return self.win_length if self.center else self.n_fft

    def num_frames(self, num_samples: int) -> int:
        """Number of frames of an utterance of `num_samples` samples (at `sampling_rate`).

        Centred frames (default): `T = 1 + num_samples // hop_length` (librosa and `torch.stft` with `center=True`
        and an even `n_fft`), e.g. 1 s at 16 kHz gives 81 frames. Without centring: `1 + (num_samples - n_fft) //
        hop_length`.
        """
        if self.center:
            return 1 + num_samples // self.hop_length
        return 1 + (num_samples - self.n_fft) // self.hop_length

    def __call__(
        self,
        audio: AudioInput | Sequence[AudioInput],
        sampling_rate: int | None = None,
        padding: bool | str | PaddingStrategy = "longest",
        max_length: int | None = None,
        truncation: bool = True,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        device: str | torch.device = "cpu",
    ) -> BatchFeature:
        r"""
        Featurise one utterance or a batch.

        Args:
            audio: one utterance, a list/tuple of utterances (a batch), or a 2-D float array or tensor of shape
                `(batch, samples)`: a batch of mono utterances of equal length, one per row, as in the Wav2Vec2 and
                Whisper extractors. An utterance is
                - a 1-D float array or tensor (mono) or a list of floats;
                - inside a list, a 2-D float array or tensor: ONE multi-channel recording, `(channels, samples)` or
                  `(samples, channels)` (channels are the shorter axis), down-mixed by averaging the channels (as
                  `librosa.to_mono`). So multi-channel audio is passed as a list with one such array per utterance,
                  e.g. `[stereo]` for one recording, or as file paths;
                - a path to an audio file, decoded by `load_audio` (soundfile, down-mixed, resampled from the rate
                  in its header, which wins over `sampling_rate`).
                Integer PCM arrays are rejected: divide int16 samples by 32768 (int32 by 2**31) to get floats in
                [-1, 1]. Audio shorter than one window (`min_num_samples`, 800 samples = 50 ms by default) and audio
                with NaN/inf samples are rejected.
            sampling_rate (`int`): rate of the in-memory audio; required for arrays/tensors (there is no safe
                guess), resampled with soxr (`"HQ"`) when it differs from `self.sampling_rate`. Not needed for paths.
            padding (`bool` or `str`, defaults to `"longest"`): `True`/`"longest"` pads to the longest utterance,
                `"max_length"` to `max_length` frames (or the longest utterance if that is longer and not truncated).
            max_length (`int`, *optional*): frame count for `"max_length"` padding and truncation; defaults to
                `max_frames`.
            truncation (`bool`, defaults to `True`): keep only the first `max_length` frames of longer utterances
                (with a warning). CMVN statistics still cover the whole utterance, as in the original fine-tuning
                code (features computed, then cut); a long utterance is computed in chunks of frames, so memory is
                bounded by `max_length` frames and one chunk, not by its duration. `False` keeps every frame.
            pad_to_multiple_of (`int`, *optional*): round the padded frame count up to a multiple of this.
            return_attention_mask (`bool`, *optional*): defaults to `self.return_attention_mask` (`True`).
            return_tensors (`str`, *optional*): `"pt"` for torch tensors (left on `device`); `"np"` or `None` for
                numpy arrays.
            device (`str` or `torch.device`, defaults to `"cpu"`): where the computation runs, e.g. `"cuda"`; tensors
                on another device are moved there.

        Returns:
            [`BatchFeature`] with `audio_features` of shape (batch, T, 2 * num_mel_bins) float32 (`[log-mel | delta]`
            per frame, CMVN-normalised, padding frames set to `padding_value`) and `audio_attention_mask` of shape
            (batch, T) int64, 1 for valid frames and 0 for padding.
        """
        if isinstance(padding, bool):
            padding_strategy = PaddingStrategy.LONGEST if padding else PaddingStrategy.DO_NOT_PAD
        else:
            padding_strategy = PaddingStrategy(padding)
        if padding_strategy == PaddingStrategy.DO_NOT_PAD:
            raise ValueError(
                "CTALFeatureExtractor always returns a padded batch with `audio_attention_mask`; use "
                "padding='longest' or padding='max_length'."
            )
        max_length = self.max_frames if max_length is None else max_length
        return_attention_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        device = torch.device(device)

        waveforms = self._prepare_waveforms(audio, sampling_rate, device)
        features, num_frames = self.extract_features(waveforms, max_length if truncation else None)

        if truncation and int(num_frames.max()) > max_length:
            too_long = (num_frames > max_length).nonzero().flatten().tolist()
            logger.warning(
                f"Audio {too_long} give more than max_length={max_length} frames "
                f"({max_length * self.hop_length / self.sampling_rate:.1f} s); keeping the first {max_length} frames. "
                "Pass truncation=False to keep every frame (the model accepts `config.max_audio_frames`)."
            )
            num_frames = num_frames.clamp(max=max_length)
        target = int(num_frames.max())
        if padding_strategy == PaddingStrategy.MAX_LENGTH:
            target = max(target, max_length)
        if pad_to_multiple_of is not None:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        features = _frames_to(features, target)

        mask = torch.arange(target, device=device) < num_frames[:, None]
        if int(num_frames.min()) < target:
            features = features.masked_fill(~mask[..., None], self.padding_value)
        data = {"audio_features": features}
        if return_attention_mask:
            data["audio_attention_mask"] = mask.long()
        if return_tensors is None or TensorType(return_tensors) != TensorType.PYTORCH:
            data = {key: value.cpu().numpy() for key, value in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)

    def extract_features(
        self, waveforms: list[torch.Tensor], max_frames: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a batch of prepared waveforms (section 3.1.1).

        Consecutive utterances are computed together, in groups whose complex spectrum fits the device's
        `SPECTRUM_BYTES` (at least one utterance per group): on CPU, spectra larger than the caches cost more in memory
        traffic than batching saves; a GPU takes large groups. An utterance whose spectrum alone exceeds that budget
        is computed in chunks of frames (`_long_features`), so no spectrum longer than one chunk is ever built.

        Args:
            waveforms: B 1-D float64 tensors on one device, at `sampling_rate`, each at least `min_num_samples` long.
            max_frames: keep only the first `max_frames` frames of each utterance (CMVN still sees all of them);
                `None` keeps every frame.

        Returns:
            `features` (B, T_out, 2 * num_mel_bins) float32, `T_out = max_b min(T_b, max_frames)`, with unspecified
            values in the frames of each utterance beyond its own (kept) count, and `num_frames` (B,) int64, the full
            counts `T_b = num_frames(len(waveforms[b]))`.
        """
        device = waveforms[0].device
        frame_counts = [self.num_frames(len(waveform)) for waveform in waveforms]
        kept_counts = [count if max_frames is None else min(count, max_frames) for count in frame_counts]
        chunk_frames = self._chunk_frames(device)
        groups = self._groups(frame_counts, chunk_frames)
        spectra = [None] * len(waveforms)
        if device.type == "cpu":
            # The spectra of all groups in one pass over the threads: a pass per group alternates with torch's own
            # threads (deltas, CMVN) and measured 1.7x slower with 2 threads.
            short = [index for index, count in enumerate(frame_counts) if count <= chunk_frames]
            computed = self._log_mel_cpu([waveforms[i].numpy() for i in short], 0, [frame_counts[i] for i in short])
            for index, log_mel in zip(short, computed):
                spectra[index] = log_mel
        parts = []
        for group in groups:
            if frame_counts[group.start] > chunk_frames:  # alone in its group (see the loop above)
                parts.append(self._long_features(waveforms[group.start], frame_counts[group.start], max_frames)[None])
            else:
                counts = frame_counts[group]
                log_mel = _stack(spectra[group]) if device.type == "cpu" else self._log_mel(waveforms[group], 0, counts)
                parts.append(self._group_features(log_mel, counts))
        length = max(kept_counts)
        parts = [_frames_to(part, length) for part in parts]
        return parts[0] if len(parts) == 1 else torch.cat(parts), torch.tensor(frame_counts, device=device)

    @staticmethod
    def _groups(frame_counts: list[int], chunk_frames: int) -> list[slice]:
        """Consecutive utterances computed together: as many as fit `chunk_frames` frames padded to the longest; an
        utterance longer than that is alone in its group."""
        groups, start, longest = [], 0, 0
        for index, frames in enumerate(frame_counts):
            longest = max(longest, frames)
            if index > start and (index - start + 1) * longest > chunk_frames:
                groups.append(slice(start, index))
                start, longest = index, frames
        groups.append(slice(start, len(frame_counts)))
        return groups

    def _chunk_frames(self, device: torch.device) -> int:
        """Frames whose complex spectrum fits `SPECTRUM_BYTES` on `device` (at least two delta windows)."""
        budget = SPECTRUM_BYTES.get(device.type, SPECTRUM_BYTES["accelerator"])
        frame_bytes = (self.n_fft // 2 + 1) * torch.complex128.itemsize
        return max(budget // frame_bytes, 2 * self.delta_width)

    def _group_features(self, log_mel: torch.Tensor, frame_counts: list[int]) -> torch.Tensor:
        """`extract_features` of one group from its log-mel energies (B, num_mel_bins, T_max) float64 in one batched
        computation (deltas, CMVN): (B, T_max, 2 * num_mel_bins) float32."""
        features = torch.cat([log_mel, self._delta(log_mel, frame_counts)], dim=1)
        if self.do_cmvn:
            if min(frame_counts) == features.shape[-1]:  # no padding frames
                mean = features.mean(-1, keepdim=True)
                centred = features - mean
                std = centred.square().mean(-1, keepdim=True).sqrt()  # population std (numpy's default)
            else:
                num_frames = torch.tensor(frame_counts, device=features.device)
                invalid = (torch.arange(features.shape[-1], device=features.device) >= num_frames[:, None])[:, None]
                count = num_frames[:, None, None].to(torch.float64)
                mean = features.masked_fill(invalid, 0.0).sum(-1, keepdim=True) / count
                centred = (features - mean).masked_fill_(invalid, 0.0)
                std = torch.sqrt(centred.square().sum(-1, keepdim=True) / count)
            features = self._normalise(centred, mean, std)
        return features.transpose(1, 2).to(torch.float32, memory_format=torch.contiguous_format)

    def _normalise(self, centred: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """CMVN `(x - mean) / (std + cmvn_eps)` per dimension, given `centred` = `x - mean`. A dimension constant over
        the utterance (digital silence, the deltas of an utterance of at most `delta_width` frames) has a std of
        rounding size, which the division would blow up into noise that depends on the batch; its exact value, 0, is
        kept instead (division by infinity)."""
        constant = std <= CONSTANT_STD * (1 + mean.abs())
        return centred / torch.where(constant, torch.inf, std + self.cmvn_eps)

    def _long_features(self, waveform: torch.Tensor, num_frames: int, max_frames: int | None) -> torch.Tensor:
        """The features of one long utterance, equal to `_group_features` up to float64 rounding, computed in chunks
        of `_chunk_frames` frames: each chunk's STFT covers only its frames plus `delta_width // 2` frames of context
        on each side (what its deltas need), CMVN statistics are merged over all chunks (Chan et al.'s pairwise
        update of mean and sum of squared deviations), and only the first `max_frames` frames are kept.

        Returns: (min(num_frames, max_frames), 2 * num_mel_bins) float32.
        """
        half = self.delta_width // 2
        keep = num_frames if max_frames is None else min(num_frames, max_frames)
        chunk_frames = self._chunk_frames(waveform.device)
        kept, count, mean, squares = [], 0, 0.0, 0.0
        for start in range(0, num_frames, chunk_frames):
            stop = min(start + chunk_frames, num_frames)
            # Context frames for the deltas, and at least `delta_width` frames so the chunk's edge rule is the
            # utterance's at its first and last frames.
            first, last = max(0, start - half), min(num_frames, stop + half)
            first = min(first, last - self.delta_width)
            log_mel = self._log_mel([waveform], first, [last - first])
            features = torch.cat([log_mel, self._delta(log_mel, [last - first])], dim=1)  # (1, F, last - first)
            features = features[0, :, start - first : stop - first]
            if start < keep:
                kept.append(features[:, : keep - start])
            if self.do_cmvn:
                chunk_mean = features.mean(-1, keepdim=True)
                chunk_squares = (features - chunk_mean).square().sum(-1, keepdim=True)
                size, total = stop - start, count + stop - start
                shift = chunk_mean - mean
                mean = mean + shift * (size / total)
                squares = squares + chunk_squares + shift.square() * (count * size / total)
                count = total
        features = torch.cat(kept, dim=-1)
        if self.do_cmvn:
            features = self._normalise(features - mean, mean, torch.sqrt(squares / count))  # population std
        return features.T.to(torch.float32)

    def _log_mel(self, waveforms: list[torch.Tensor], first_frame: int, num_frames: list[int]) -> torch.Tensor:
        """Log-mel energies (B, num_mel_bins, max(num_frames)) float64 of frames [first_frame, first_frame +
        num_frames[b]) of each utterance b (steps 1-4 of the module docstring); the values after an utterance's own
        frames are unspecified but finite. On CPU, SciPy's FFT of the windowed samples (`_log_mel_cpu`); elsewhere one
        batched `torch.stft` (`_log_mel_torch`)."""
        if waveforms[0].device.type == "cpu":
            return _stack(self._log_mel_cpu([waveform.numpy() for waveform in waveforms], first_frame, num_frames))
        return self._log_mel_torch(waveforms, first_frame, num_frames)

    def _log_mel_torch(self, waveforms: list[torch.Tensor], first_frame: int, num_frames: list[int]) -> torch.Tensor:
        """`_log_mel` as one batched `torch.stft` on the waveforms' device (the GPU path): the signals are padded into
        one (B, N) matrix (`_pad_signals`), frame t at samples [t * hop_length, t * hop_length + n_fft)."""
        start = first_frame * self.hop_length
        stop = start + (max(num_frames) - 1) * self.hop_length + self.n_fft
        lengths = torch.tensor([len(waveform) for waveform in waveforms], device=waveforms[0].device)
        framed = self._pad_signals(torch.cat(waveforms), lengths, start, stop)
        window = WINDOW_FUNCTIONS[self.window_type](
            self.win_length, periodic=True, dtype=torch.float64, device=framed.device
        )
        spectrum = torch.stft(
            framed,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=window,
            center=False,  # padding already done per utterance
            return_complex=True,
        )  # (B, n_fft // 2 + 1, T)
        squared = torch.addcmul(spectrum.real.square(), spectrum.imag, spectrum.imag)  # |X|^2 = re^2 + im^2, no sqrt
        power = squared if self.power == 2 else squared.pow(self.power / 2)
        mel_filters = torch.from_numpy(self.mel_filters).to(device=framed.device, dtype=torch.float64)
        return torch.log(mel_filters.T @ power + self.log_offset)

    def _log_mel_cpu(self, waveforms: list[np.ndarray], first_frame: int, num_frames: list[int]) -> list[np.ndarray]:
        """`_log_mel` in NumPy/SciPy, per utterance: (num_mel_bins, num_frames[b]) float64 arrays, equal to
        `_log_mel_torch` up to rounding of `cpu_spectrum_dtype`.

        `torch.stft` multiplies each n_fft-sample frame by the window zero-padded to n_fft (centred). Here only the
        `win_length` windowed samples, followed by zeros, are transformed (`scipy.fft.rfft`): the two spectra differ
        by a circular shift in time, i.e. a phase factor, so their power is the same. The frames are read from each
        utterance as strided views (`_padded_segment` pads only the ends), transformed in blocks of
        `CPU_BLOCK_FRAMES` that stay in cache, through the mel filters as a sparse matrix and the log, block by
        block; the blocks are shared out over `torch.get_num_threads()` threads (NumPy and SciPy release the GIL),
        so that the extractor uses the threads torch is allowed (one in `DataLoader` workers)."""
        dtype = np.dtype(self.cpu_spectrum_dtype)
        window, mel_filters = self._cpu_operators(dtype)
        offset = (self.n_fft - self.win_length) // 2
        frames = []  # per utterance, (num_frames[b], win_length) strided view; frame t starts at t * hop + offset
        for waveform, count in zip(waveforms, num_frames):
            start = first_frame * self.hop_length + offset
            segment = self._padded_segment(waveform, start, start + (count - 1) * self.hop_length + self.win_length)
            frames.append(np.lib.stride_tricks.sliding_window_view(segment, self.win_length)[:: self.hop_length])
        log_mels = [np.empty((self.num_mel_bins, count)) for count in num_frames]
        blocks = [
            (row, start, min(start + CPU_BLOCK_FRAMES, count))
            for row, count in enumerate(num_frames)
            for start in range(0, count, CPU_BLOCK_FRAMES)
        ]

        def run(blocks: list[tuple[int, int, int]]) -> None:
            # Windowed samples in the first win_length columns; the rest stays zero (the FFT's zero-padding).
            buffer = np.zeros((CPU_BLOCK_FRAMES, self.n_fft), dtype)
            for row, start, stop in blocks:
                windowed = buffer[: stop - start]
                np.multiply(frames[row][start:stop], window, out=windowed[:, : self.win_length])
                spectrum = scipy.fft.rfft(windowed)  # (frames, bins)
                power = np.square(spectrum.real)
                power += np.square(spectrum.imag)  # |X|^2 = re^2 + im^2, no sqrt
                if self.power != 2:
                    power **= self.power / 2
                mel = mel_filters @ power.T
                mel += self.log_offset
                np.log(mel, out=log_mels[row][:, start:stop])

        threads = min(torch.get_num_threads(), len(blocks))
        if threads <= 1:
            run(blocks)
        else:
            share = -(-len(blocks) // threads)
            shares = [blocks[index : index + share] for index in range(0, len(blocks), share)]
            list(_thread_pool(threads).map(run, shares))
        return log_mels

    def _cpu_operators(self, dtype: np.dtype) -> tuple[np.ndarray, scipy.sparse.csr_array]:
        """The CPU path's window (win_length,) and mel filters as a sparse (num_mel_bins, bins) matrix in `dtype`,
        built once per dtype (building the sparse matrix costs about a tenth of a 10 s utterance's spectra)."""
        if dtype not in self._cpu_operator_cache:
            window = WINDOW_FUNCTIONS[self.window_type](self.win_length, periodic=True, dtype=torch.float64).numpy()
            self._cpu_operator_cache[dtype] = (
                window.astype(dtype),
                scipy.sparse.csr_array(self.mel_filters.T.astype(dtype)),
            )
        return self._cpu_operator_cache[dtype]

    def to_dict(self) -> dict:
        """The saved configuration (`preprocessor_config.json`): the parameters, without the derived operators."""
        output = super().to_dict()
        output.pop("_cpu_operator_cache", None)
        return output

    def _padded_segment(self, waveform: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) of `waveform` padded as in `_pad_signals` (`np.pad` with `pad_mode`, n_fft // 2
        samples per side when centred), padding only the ends the range reaches: inside the signal it is a view, and a
        long utterance computed in chunks is never copied whole. The reflection at an end reads `pad + 1` samples;
        a signal too short for one reflection per side (numpy reflects again) is padded whole."""
        pad = self.n_fft // 2 if self.center else 0
        length = len(waveform)
        first, last = start - pad, stop - pad  # in signal samples
        if first >= 0 and last <= length:
            return waveform[first:last]
        if length <= 2 * pad + 2:
            return np.pad(waveform, pad, mode=self.pad_mode)[start:stop]
        left, right = pad if first < 0 else 0, pad if last > length else 0
        begin = 0 if left else min(first, length - pad - 1)
        end = length if right else max(last, pad + 1)
        piece = np.pad(waveform[begin:end], (left, right), mode=self.pad_mode)
        return piece[first - begin + left : last - begin + left]

    def _pad_signals(
        self, flat: torch.Tensor, lengths: torch.Tensor, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """Stack B signals (concatenated in `flat`) into a (B, L_max + 2 * pad) matrix, each padded with `pad_mode`
        from its OWN samples (pad = `n_fft // 2` when centred, else 0) and followed by zeros; `start`/`stop` select
        columns [start, stop) of that matrix (default: all). Reflection follows `np.pad(mode="reflect")`, whose index
        pattern repeats with period 2 * (L - 1), so pads longer than the signal (L <= n_fft // 2, where
        `torch.nn.functional.pad` refuses) reflect again, as in librosa."""
        pad = self.n_fft // 2 if self.center else 0
        offsets = torch.cumsum(lengths, 0) - lengths
        length = lengths[:, None]
        stop = int(lengths.max()) + 2 * pad if stop is None else stop
        column = torch.arange(start, stop, device=flat.device)
        source = (column - pad).expand(len(lengths), -1)  # index into each signal, before padding rules
        if self.pad_mode == "reflect":
            period = 2 * (length - 1)
            source = source.remainder(period)
            source = torch.where(source >= length, period - source, source)
            keep = column < length + 2 * pad
        else:
            keep = (source >= 0) & (source < length)
        gathered = flat[offsets[:, None] + source.clamp(min=0).minimum(length - 1)]
        return gathered.masked_fill(~keep, 0.0)

    def _delta(self, log_mel: torch.Tensor, frame_counts: list[int]) -> torch.Tensor:
        """First-order delta over time as `librosa.feature.delta(width=delta_width, mode="interp")`, per utterance.

        Inside, delta[t] = sum_{n=1..h} n * (x[t+n] - x[t-n]) / (2 * sum n^2) (h = delta_width // 2). With
        `mode="interp"` the first and last h frames take the slope of the least-squares line through the first/last
        `delta_width` frames, which equals the inside value at frame h (resp. T - 1 - h). An utterance with fewer than
        `delta_width` frames (which librosa rejects) gets, on every frame, the least-squares slope over all its frames:
        the same rule with the window cut to the utterance (librosa's value for `width=T` when T is odd).

        Args:
            log_mel: (B, M, T_max) float64, utterance b valid in its first `frame_counts[b]` frames.

        Returns: (B, M, T_max) float64.
        """
        batch, bins, max_frames = log_mel.shape
        half = self.delta_width // 2
        scale = 2 * sum(n * n for n in range(1, half + 1))
        # Zeros after T_max only keep the sums defined when every utterance is short; those rows use the slope below.
        padded = F.pad(log_mel, (0, max(0, self.delta_width - max_frames)))
        width = padded.shape[-1] - 2 * half
        # inside[..., j] = delta at frame j + h; shifted differences (a float64 conv1d is several times slower on CPU).
        inside = padded[..., half + 1 : half + 1 + width] - padded[..., half - 1 : half - 1 + width]
        inside /= scale
        for n in range(2, half + 1):
            difference = padded[..., half + n : half + n + width] - padded[..., half - n : half - n + width]
            inside.add_(difference, alpha=n / scale)
        num_frames = torch.tensor(frame_counts, device=log_mel.device)
        position = torch.arange(max_frames, device=log_mel.device)
        source = torch.minimum(position.clamp(min=half), (num_frames[:, None] - 1 - half).clamp(min=half)) - half
        edged = inside.gather(-1, source[:, None, :].expand(batch, bins, max_frames))
        if min(frame_counts) >= self.delta_width:
            return edged

        valid = (position < num_frames[:, None]).unsqueeze(1)  # (B, 1, T_max)
        centred_time = torch.where(valid, position - (num_frames[:, None, None] - 1) / 2, 0.0)
        # The clamp gives a single frame (possible without centring) a slope of 0 instead of 0 / 0.
        spread = centred_time.square().sum(-1, keepdim=True).clamp(min=torch.finfo(log_mel.dtype).tiny)
        slope = (centred_time * log_mel).sum(-1, keepdim=True) / spread
        short = (num_frames < self.delta_width)[:, None, None]
        return torch.where(short, slope, edged)

    def _prepare_waveforms(
        self, audio: AudioInput | Sequence[AudioInput], sampling_rate: int | None, device: torch.device
    ) -> list[torch.Tensor]:
        """The accepted inputs as 1-D float64 tensors at `self.sampling_rate` on `device` (see `prepare_waveforms`)."""
        waveforms = prepare_waveforms(
            audio, sampling_rate, self.sampling_rate, self.min_num_samples, min_length_name="one analysis window"
        )
        return [waveform.to(device) for waveform in waveforms]


__all__ = ["CTALFeatureExtractor"]
