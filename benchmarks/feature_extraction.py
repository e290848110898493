"""Throughput of `CTALFeatureExtractor` against librosa computing the same features (paper section 3.1.1).

All compute CTAL's recipe on a batch of synthetic clips (noise, tones and chirps at 16 kHz): the extractor in one call
(on CPU: SciPy's FFT on the windowed frames, in cache-sized blocks shared over the torch threads; on GPU: one batched
`torch.stft`), in its default float64 and with `cpu_spectrum_dtype="float32"`; on CPU also the two routes it replaced,
timed beside it: the previous SciPy route (one thread, float64 blocks of 128 frames, signals padded into one matrix,
deltas by `conv1d`, CMVN through masks; `PreviousCPUExtractor` below keeps it) and the `torch.stft` route (the GPU
code on CPU); librosa one utterance at a time as the authors did (melspectrogram with the same parameters and
`pad_mode="reflect"`, log, delta, CMVN; NumPy's BLAS, which librosa's mel product uses, limited to the extractor's
thread count), on float64 samples (the precision the extractor computes in) and on float32 samples (librosa then
computes in float32). The floor is the FFT alone: `scipy.fft.rfft` of the same windowed,
zero-padded frames (prepared beforehand) in the extractor's blocks and threads, in float64 and in float32. The table
gives audio seconds processed per wall second (median of `--repeats`, the implementations interleaved), the
extractor's speed-up and the largest absolute difference from its features; the result file (JSON) adds the machine
and library versions. Each timed call follows `LEAD_IN` seconds of untimed calls of the same implementation (see
there).

    python benchmarks/feature_extraction.py --threads 2  # 8 clips of 10 s on the CPU, 2 threads
    python benchmarks/feature_extraction.py --device cuda
    python benchmarks/feature_extraction.py --threads 1  # one core each: the per-core comparison
    python benchmarks/feature_extraction.py --quick      # seconds-long smoke run (used by the test suite)

On a CPU shared with other busy processes, multi-threaded work waits for descheduled threads and the extractor's
figure drops several-fold; measure on an idle machine, or with `--threads 1`.

librosa and threadpoolctl are test/benchmark dependencies only (`pip install -e .[testing]`).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import librosa
import numpy as np
import scipy.fft
import scipy.sparse
import threadpoolctl
import torch
import torch.nn.functional as F

from ctal_hf import CTALFeatureExtractor
from ctal_hf.models.ctal.feature_extraction_ctal import CPU_BLOCK_FRAMES, WINDOW_FUNCTIONS


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


# Seconds of untimed calls before each timed one (not in --quick): just after another implementation a call is slower
# (up to 2x on 2 vCPUs, e.g. beside OpenBLAS's workers, which spin for about 0.1 s after librosa's mel product); the
# table gives the throughput of calls in a loop, as in bulk feature extraction.
LEAD_IN = 0.3


def librosa_features(waveform: np.ndarray, extractor: CTALFeatureExtractor) -> np.ndarray:
    """The extractor's recipe computed with librosa for one utterance, as the original `preprocess/audio.py`:
    returns (T, 2 * num_mel_bins) float32."""
    mel = librosa.feature.melspectrogram(
        y=waveform,
        sr=extractor.sampling_rate,
        n_fft=extractor.n_fft,
        hop_length=extractor.hop_length,
        win_length=extractor.win_length,
        window=extractor.window_type,
        center=extractor.center,
        pad_mode=extractor.pad_mode,
        power=extractor.power,
        n_mels=extractor.num_mel_bins,
        fmin=extractor.f_min,
        fmax=extractor.f_max,
        htk=extractor.mel_scale == "htk",
        norm=extractor.mel_norm,
    )
    log_mel = np.log(mel + extractor.log_offset)
    features = np.concatenate([log_mel, librosa.feature.delta(log_mel, width=extractor.delta_width)], axis=0)
    if extractor.do_cmvn:
        features = (features - features.mean(axis=1, keepdims=True)) / (
            features.std(axis=1, keepdims=True) + extractor.cmvn_eps
        )
    return features.T.astype(np.float32)


def synthetic_clips(count: int, seconds: float, sampling_rate: int, seed: int) -> list[np.ndarray]:
    """`count` float64 clips: a chirp, a tone and white noise at random levels, so every mel band has energy."""
    rng = np.random.default_rng(seed)
    time_axis = np.arange(int(seconds * sampling_rate)) / sampling_rate
    clips = []
    for _ in range(count):
        start, stop = rng.uniform(50, 500), rng.uniform(2000, 7500)
        chirp = np.sin(2 * np.pi * (start * time_axis + (stop - start) / (2 * seconds) * time_axis**2))
        tone = np.sin(2 * np.pi * rng.uniform(100, 4000) * time_axis)
        noise = rng.standard_normal(time_axis.size)
        clips.append(rng.uniform(0.1, 0.4) * chirp + rng.uniform(0.05, 0.3) * tone + rng.uniform(0.01, 0.1) * noise)
    return clips


def features_group_by_group(
    extractor: CTALFeatureExtractor, waveforms: list[torch.Tensor], max_frames: int | None, log_mel
) -> tuple[torch.Tensor, torch.Tensor]:
    """`extract_features` as the earlier routes computed it: group by group, the spectra (`log_mel(waveforms, 0,
    counts)`, a (B, M, T) tensor), then the deltas and CMVN of the group."""
    frame_counts = [extractor.num_frames(len(waveform)) for waveform in waveforms]
    chunk_frames = extractor._chunk_frames(waveforms[0].device)
    parts = []
    for group in extractor._groups(frame_counts, chunk_frames):
        if frame_counts[group.start] > chunk_frames:
            parts.append(extractor._long_features(waveforms[group.start], frame_counts[group.start], max_frames)[None])
        else:
            counts = frame_counts[group]
            parts.append(extractor._group_features(log_mel(waveforms[group], 0, counts), counts))
    length = max(count if max_frames is None else min(count, max_frames) for count in frame_counts)
    features = torch.cat([F.pad(part[:, :length], (0, 0, 0, max(0, length - part.shape[1]))) for part in parts])
    return features, torch.tensor(frame_counts)


class TorchSTFTExtractor(CTALFeatureExtractor):
    """The GPU code on the CPU, the route before the SciPy ones: group by group, one batched `torch.stft` each."""

    def extract_features(self, waveforms: list[torch.Tensor], max_frames: int | None = None):
        return features_group_by_group(self, waveforms, max_frames, self._log_mel_torch)


class PreviousCPUExtractor(CTALFeatureExtractor):
    """The CPU route before the current one, kept to time it beside it: group by group, the signals padded into one
    matrix by index arithmetic (`_pad_signals`), float64 FFT blocks of 128 frames in one thread, the sparse mel filters
    built on every call, deltas by a float64 `conv1d`, CMVN through masks. Same features (to float64 rounding). Not
    kept: its NaN check and the copies when padding the output (a few percent of its time)."""

    def extract_features(self, waveforms: list[torch.Tensor], max_frames: int | None = None):
        return features_group_by_group(self, waveforms, max_frames, self._previous_log_mel)

    def _previous_log_mel(self, waveforms: list[torch.Tensor], first_frame: int, counts: list[int]) -> torch.Tensor:
        start = first_frame * self.hop_length
        stop = start + (max(counts) - 1) * self.hop_length + self.n_fft
        lengths = torch.tensor([len(waveform) for waveform in waveforms])
        framed = self._pad_signals(torch.cat(waveforms), lengths, start, stop).numpy()
        batch, count = framed.shape[0], max(counts)
        offset = (self.n_fft - self.win_length) // 2
        window = WINDOW_FUNCTIONS[self.window_type](self.win_length, periodic=True, dtype=torch.float64).numpy()
        frames = np.lib.stride_tricks.sliding_window_view(framed[:, offset:], self.win_length, axis=1)
        frames = frames[:, :: self.hop_length][:, :count]
        mel_filters = scipy.sparse.csr_array(self.mel_filters.T.astype(np.float64))
        mel = np.empty((batch, self.num_mel_bins, count))
        block = np.zeros((min(128, count), self.n_fft))
        for row in range(batch):
            for first in range(0, count, 128):
                last = min(first + 128, count)
                windowed = block[: last - first]
                np.multiply(frames[row, first:last], window, out=windowed[:, : self.win_length])
                spectrum = scipy.fft.rfft(windowed)
                squared = spectrum.real**2 + spectrum.imag**2
                power = squared if self.power == 2 else squared ** (self.power / 2)
                mel[row, :, first:last] = mel_filters @ power.T
        return torch.from_numpy(np.log(mel + self.log_offset, out=mel))

    def _delta(self, log_mel: torch.Tensor, frame_counts: list[int]) -> torch.Tensor:
        batch, bins, max_frames = log_mel.shape
        num_frames = torch.tensor(frame_counts)
        valid = (torch.arange(max_frames) < num_frames[:, None]).unsqueeze(1)
        half = self.delta_width // 2
        taps = torch.arange(-half, half + 1, dtype=log_mel.dtype)
        taps = taps / taps.square().sum()
        padded = F.pad(log_mel.reshape(batch * bins, 1, max_frames), (0, max(0, self.delta_width - max_frames)))
        inside = F.conv1d(padded, taps.view(1, 1, -1)).view(batch, bins, -1)
        position = torch.arange(max_frames)
        source = torch.minimum(position.clamp(min=half), (num_frames[:, None] - 1 - half).clamp(min=half)) - half
        edged = inside.gather(-1, source[:, None, :].expand(batch, bins, max_frames))
        centred_time = torch.where(valid, position - (num_frames[:, None, None] - 1) / 2, 0.0)
        spread = centred_time.square().sum(-1, keepdim=True).clamp(min=torch.finfo(log_mel.dtype).tiny)
        slope = (centred_time * log_mel).sum(-1, keepdim=True) / spread
        return torch.where((num_frames < self.delta_width)[:, None, None], slope, edged)

    def _group_features(self, log_mel: torch.Tensor, frame_counts: list[int]) -> torch.Tensor:
        num_frames = torch.tensor(frame_counts)
        valid = (torch.arange(log_mel.shape[-1]) < num_frames[:, None]).unsqueeze(1)
        features = torch.cat([log_mel, self._delta(log_mel, frame_counts)], dim=1)
        if self.do_cmvn:
            count = num_frames[:, None, None].to(torch.float64)
            mean = features.masked_fill(~valid, 0.0).sum(-1, keepdim=True) / count
            centred = (features - mean).masked_fill(~valid, 0.0)
            std = torch.sqrt(centred.square().sum(-1, keepdim=True) / count)
            constant = std <= 1e-12 * (1 + mean.abs())
            features = torch.where(constant, 0.0, (features - mean) / (std + self.cmvn_eps))
        return features.transpose(1, 2).to(torch.float32)


def fft_blocks(clips: list[np.ndarray], extractor: CTALFeatureExtractor, dtype) -> list[np.ndarray]:
    """The frames the extractor transforms, in its blocks of `CPU_BLOCK_FRAMES`: (frames, n_fft) arrays of `dtype`,
    the window applied to the first `win_length` samples of each frame (reflect-padded, centred), zeros after."""
    window = np.hanning(extractor.win_length + 1)[:-1]  # periodic Hann, as torch.hann_window(periodic=True)
    offset = (extractor.n_fft - extractor.win_length) // 2
    blocks = []
    for clip in clips:
        padded = np.pad(clip, extractor.n_fft // 2, mode=extractor.pad_mode)
        count = extractor.num_frames(len(clip))
        view = np.lib.stride_tricks.sliding_window_view(padded[offset:], extractor.win_length)
        view = view[:: extractor.hop_length][:count]
        frames = np.zeros((count, extractor.n_fft), dtype)
        frames[:, : extractor.win_length] = view * window
        blocks += [frames[start : start + CPU_BLOCK_FRAMES] for start in range(0, count, CPU_BLOCK_FRAMES)]
    return blocks


def fft_alone(blocks: list[np.ndarray], pool: ThreadPoolExecutor, threads: int):
    """`scipy.fft.rfft` of every block, the blocks shared out over `threads` threads as the extractor does."""

    def transform(share: list[np.ndarray]) -> None:
        for block in share:
            scipy.fft.rfft(block)

    size = -(-len(blocks) // threads)
    shares = [blocks[index : index + size] for index in range(0, len(blocks), size)]

    def transform_all() -> None:
        if threads == 1:
            transform(blocks)
        else:
            list(pool.map(transform, shares))

    return transform_all


def run(batch_size: int, seconds: float, repeats: int, device: str, seed: int, lead_in: float = LEAD_IN) -> list[dict]:
    """Time the implementations, interleaved so that a burst of load on the machine hits all of them; returns one
    row per implementation (median time), the extractor first."""
    device = torch.device(device)
    extractor = CTALFeatureExtractor()
    clips = synthetic_clips(batch_size, seconds, extractor.sampling_rate, seed)

    def featurise(instance: CTALFeatureExtractor):
        def call() -> np.ndarray:
            batch = instance(clips, sampling_rate=instance.sampling_rate, return_tensors="pt", device=device)
            return batch["audio_features"].cpu().numpy()  # back on the CPU: any CUDA work has finished

        return call

    threads = torch.get_num_threads()

    def with_librosa(dtype):
        inputs = [clip.astype(dtype) for clip in clips]

        def call() -> np.ndarray:
            # NumPy's BLAS (librosa's mel product) gets the threads the extractor gets.
            with threadpoolctl.threadpool_limits(threads, user_api="blas"):
                return np.stack([librosa_features(clip, extractor) for clip in inputs])

        return call

    pool = ThreadPoolExecutor(threads)
    ours = f"CTALFeatureExtractor ({device.type})"
    implementations = {ours: featurise(extractor)}
    if device.type == "cpu":
        implementations["CTALFeatureExtractor (cpu), float32 spectra"] = featurise(
            CTALFeatureExtractor(cpu_spectrum_dtype="float32")
        )
        implementations["previous SciPy route (before)"] = featurise(PreviousCPUExtractor())
        implementations["torch.stft route on CPU (before that)"] = featurise(TorchSTFTExtractor())
    implementations.update({
        "librosa, float64 input": with_librosa(np.float64),
        "librosa, float32 input": with_librosa(np.float32),
        "FFT alone, float64 (scipy.fft.rfft)": fft_alone(fft_blocks(clips, extractor, np.float64), pool, threads),
        "FFT alone, float32 (scipy.fft.rfft)": fft_alone(fft_blocks(clips, extractor, np.float32), pool, threads),
    })
    outputs = {name: function() for name, function in implementations.items()}  # warm-up: librosa compiles numba
    times = common.interleaved_times(implementations, repeats, warmup=0, lead_in=lead_in)
    pool.shutdown()
    middle = {name: common.median(values) for name, values in times.items()}
    return [
        {
            "name": name,
            "seconds": middle[name],
            "throughput": batch_size * seconds / middle[name],
            "speedup": middle[name] / middle[ours],
            # Equal-length clips: no padding frames to leave out.
            "diff": None if outputs[name] is None or name == ours else float(np.abs(outputs[name] - outputs[ours]).max()),
        }
        for name in implementations
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--batch-size", type=int, default=8, help="clips per batch (default: 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip in seconds (default: 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation, median kept (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic audio (default: 0)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.seconds, args.repeats = 2, 2.0, 1
    with common.benchmark_session(args, "feature_extraction") as (output, machine):
        rows = run(args.batch_size, args.seconds, args.repeats, args.device, args.seed, 0.0 if args.quick else LEAD_IN)
        print(
            f"CTAL features (section 3.1.1), {args.batch_size} clips x {args.seconds:g} s at 16 kHz, median of "
            f"{args.repeats}; librosa {librosa.__version__} one utterance at a time; extractor, FFT and librosa's BLAS "
            f"on {torch.get_num_threads()} threads; {common.machine_line(machine)}"
        )
        common.print_table(
            ["implementation", "audio s / wall s", "CTAL speed-up", "max |diff| vs CTAL"],
            [[row["name"], f"{row['throughput']:.1f}", f"{row['speedup']:.2f}x", "-" if row["diff"] is None else f"{row['diff']:.2e}"] for row in rows],
        )
        common.write_results(output, "feature_extraction", args, machine, {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
