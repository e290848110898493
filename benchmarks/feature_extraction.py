"""Throughput of `CTALFeatureExtractor` against librosa computing the same features (paper section 3.1.1).

Both compute CTAL's recipe on a batch of synthetic clips (noise, tones and chirps at 16 kHz): the extractor in one
call (on CPU: SciPy's FFT on the windowed frames, in cache-sized blocks; on GPU: one batched `torch.stft`; on CPU
the `torch.stft` route is timed too, as the path before the SciPy one), librosa
one utterance at a time as the authors did (melspectrogram with the same parameters and `pad_mode="reflect"`, log,
delta, CMVN). librosa runs twice: on float64 samples (the precision the extractor computes in) and on float32 samples
(librosa then computes in float32). The floor is the FFT alone: `scipy.fft.rfft` of the same windowed, zero-padded
frames (prepared beforehand), with one worker as in the extractor. The table gives audio seconds processed per
wall second (median of `--repeats`, the implementations interleaved), the extractor's speed-up and the largest
absolute difference from its features; the result file (JSON) adds the machine and library versions.

    python benchmarks/feature_extraction.py --threads 2  # 8 clips of 10 s on the CPU, 2 torch threads / FFT workers
    python benchmarks/feature_extraction.py --device cuda
    python benchmarks/feature_extraction.py --threads 1  # one core each: the per-core comparison
    python benchmarks/feature_extraction.py --quick      # seconds-long smoke run (used by the test suite)

On a CPU shared with other busy processes, torch's multi-threaded operations wait for descheduled threads and the
extractor's figure drops several-fold; measure on an idle machine, or with `--threads 1`.

librosa is a test/benchmark dependency only (`pip install -e .[testing]`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import librosa
import numpy as np
import scipy.fft
import torch

from ctal_hf import CTALFeatureExtractor


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


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


def windowed_frames(clips: list[np.ndarray], extractor: CTALFeatureExtractor) -> list[np.ndarray]:
    """Per clip, its frames as the extractor transforms them: (T, n_fft) float64, the window applied to the first
    `win_length` samples of each frame (reflect-padded, centred), zeros after."""
    window = np.hanning(extractor.win_length + 1)[:-1]  # periodic Hann, as torch.hann_window(periodic=True)
    offset = (extractor.n_fft - extractor.win_length) // 2
    frames = []
    for clip in clips:
        padded = np.pad(clip, extractor.n_fft // 2, mode=extractor.pad_mode)
        count = extractor.num_frames(len(clip))
        view = np.lib.stride_tricks.sliding_window_view(padded[offset:], extractor.win_length)[:: extractor.hop_length][:count]
        block = np.zeros((count, extractor.n_fft))
        block[:, : extractor.win_length] = view * window
        frames.append(block)
    return frames


def run(batch_size: int, seconds: float, repeats: int, device: str, seed: int) -> list[dict]:
    """Time the implementations, interleaved so that a burst of load on the machine hits all of them; returns one
    row per implementation (median time), the extractor first."""
    device = torch.device(device)
    extractor = CTALFeatureExtractor()
    clips = synthetic_clips(batch_size, seconds, extractor.sampling_rate, seed)

    def ctal() -> np.ndarray:
        batch = extractor(clips, sampling_rate=extractor.sampling_rate, return_tensors="pt", device=device)
        return batch["audio_features"].cpu().numpy()  # back on the CPU: any CUDA work has finished

    # The same extractor with its spectra from `torch.stft` on the CPU too (the CPU path before the SciPy one).
    with_stft = CTALFeatureExtractor()
    with_stft._log_mel = with_stft._log_mel_torch

    def ctal_stft() -> np.ndarray:
        return with_stft(clips, sampling_rate=extractor.sampling_rate, return_tensors="np")["audio_features"]

    def with_librosa(dtype):
        inputs = [clip.astype(dtype) for clip in clips]
        return lambda: np.stack([librosa_features(clip, extractor) for clip in inputs])

    frames = windowed_frames(clips, extractor)

    def fft_only() -> None:
        for block in frames:
            scipy.fft.rfft(block)

    ours = f"CTALFeatureExtractor ({device.type})"
    implementations = {
        ours: ctal,
        **({"CTALFeatureExtractor, torch.stft on CPU": ctal_stft} if device.type == "cpu" else {}),
        "librosa, float64 input": with_librosa(np.float64),
        "librosa, float32 input": with_librosa(np.float32),
        "FFT alone (scipy.fft.rfft)": fft_only,
    }
    outputs = {name: function() for name, function in implementations.items()}  # warm-up: librosa compiles numba
    times = common.interleaved_times(implementations, repeats, warmup=0)
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
        rows = run(args.batch_size, args.seconds, args.repeats, args.device, args.seed)
        print(
            f"CTAL features (section 3.1.1), {args.batch_size} clips x {args.seconds:g} s at 16 kHz, median of "
            f"{args.repeats}; librosa {librosa.__version__} (one core); {common.machine_line(machine)}"
        )
        common.print_table(
            ["implementation", "audio s / wall s", "CTAL speed-up", "max |diff| vs CTAL"],
            [[row["name"], f"{row['throughput']:.1f}", f"{row['speedup']:.2f}x", "-" if row["diff"] is None else f"{row['diff']:.2e}"] for row in rows],
        )
        common.write_results(output, "feature_extraction", args, machine, {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
