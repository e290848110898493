"""Throughput of `CTALFeatureExtractor` against librosa computing the same features (paper section 3.1.1).

Both compute CTAL's recipe on a batch of synthetic clips (noise, tones and chirps at 16 kHz): the extractor in one
batched torch call, librosa one utterance at a time as the authors did (melspectrogram with the same parameters and
`pad_mode="reflect"`, log, delta, CMVN). librosa runs twice: on float64 samples (the precision the extractor computes
in) and on float32 samples (librosa then computes in float32). The table gives audio seconds processed per wall
second (best of `--repeats`), the extractor's speed-up and the largest absolute difference from its features.

    python benchmarks/feature_extraction.py              # 16 clips of 10 s on the CPU
    python benchmarks/feature_extraction.py --device cuda
    python benchmarks/feature_extraction.py --threads 1  # one core each: the fair per-core comparison
    python benchmarks/feature_extraction.py --quick      # seconds-long smoke run (used by the test suite)

On a CPU shared with other busy processes, torch's multi-threaded operations wait for descheduled threads and the
extractor's figure drops several-fold; measure on an idle machine, or with `--threads 1`.

librosa is a test/benchmark dependency only (`pip install -e .[testing]`).
"""

from __future__ import annotations

import argparse
import os
import time

import librosa
import numpy as np
import torch

from ctal_hf import CTALFeatureExtractor


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


def run(batch_size: int, seconds: float, repeats: int, device: str, seed: int) -> list[dict]:
    """Time the three implementations, interleaved so that a burst of load on the machine hits all of them; returns
    one row per implementation (best time), the extractor first."""
    device = torch.device(device)
    extractor = CTALFeatureExtractor()
    clips = synthetic_clips(batch_size, seconds, extractor.sampling_rate, seed)

    def ctal() -> np.ndarray:
        batch = extractor(clips, sampling_rate=extractor.sampling_rate, return_tensors="pt", device=device)
        return batch["audio_features"].cpu().numpy()  # back on the CPU: any CUDA work has finished

    def with_librosa(dtype):
        inputs = [clip.astype(dtype) for clip in clips]
        return lambda: np.stack([librosa_features(clip, extractor) for clip in inputs])

    ours = f"CTALFeatureExtractor (torch, {device.type})"
    implementations = {
        ours: ctal,
        "librosa, float64 input": with_librosa(np.float64),
        "librosa, float32 input": with_librosa(np.float32),
    }
    outputs = {name: function() for name, function in implementations.items()}  # warm-up: librosa compiles numba
    timings = {name: [] for name in implementations}
    for _ in range(repeats):
        for name, function in implementations.items():
            start = time.perf_counter()
            function()
            timings[name].append(time.perf_counter() - start)
    best = {name: min(times) for name, times in timings.items()}
    return [
        {
            "name": name,
            "throughput": batch_size * seconds / best[name],
            "speedup": best[name] / best[ours],
            # Equal-length clips: no padding frames to leave out.
            "diff": None if name == ours else float(np.abs(outputs[name] - outputs[ours]).max()),
        }
        for name in implementations
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16, help="clips per batch (default: 16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip in seconds (default: 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation, best kept (default: 5)")
    parser.add_argument("--device", default="cpu", help="device of the extractor, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic audio (default: 0)")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice; librosa uses one core either way)"
    )
    parser.add_argument("--quick", action="store_true", help="2 clips of 2 s, 1 repeat: a smoke run, not a figure")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.seconds, args.repeats = 2, 2.0, 1

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = run(args.batch_size, args.seconds, args.repeats, args.device, args.seed)
    print(
        f"CTAL features (section 3.1.1), {args.batch_size} clips x {args.seconds:g} s at 16 kHz, best of "
        f"{args.repeats}; torch {torch.__version__} with {torch.get_num_threads()} threads, librosa "
        f"{librosa.__version__}, {os.cpu_count()} CPUs"
    )
    print(f"{'implementation':<40} {'audio s / wall s':>17} {'CTAL speed-up':>14} {'max |diff| vs CTAL':>19}")
    for row in rows:
        diff = "-" if row["diff"] is None else f"{row['diff']:.2e}"
        print(f"{row['name']:<40} {row['throughput']:>17.1f} {row['speedup']:>13.2f}x {diff:>19}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
