"""How the cost of a CTAL training step grows with the audio length: time and peak memory per utterance from 250 to
3,000 frames (3 to 37.5 s; the text grows with it, 24 tokens per 400 frames as in the paper's benchmark batch), for
each attention implementation, with the growth exponent fitted between 1,000 and 3,000 frames (1 = linear,
2 = quadratic) and a log-log plot. Memory is given with and without the optimiser's moments (AdamW: 8 bytes per
parameter, resident whatever the length), which flatten the total's growth.

Each point is a pre-training step (forward, backward, fused AdamW) of `CTALForPreTraining` with the paper's dropout
(0.1, attention probabilities included), measured in its own process as in `model_step.py` (peak memory above the
loaded model and batch), the points interleaved over `--rounds`.

    python benchmarks/audio_length.py                       # ctal-base, batch 2, eager / sdpa / blockwise
    python benchmarks/audio_length.py --attn blockwise      # only the linear-memory attention
    python benchmarks/audio_length.py --quick

The plot needs matplotlib (`pip install matplotlib`, or the `benchmarks` extra); without it the table and JSON are
written and the plot is skipped with a message. Eager and SDPA attention at 3,000 frames need about 6 GB per
utterance on CPU (the table in benchmarks/README.md); lower `--frames` on a smaller machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import model_step  # noqa: E402


def tokens_for(frames: int) -> int:
    """Text length growing with the audio: 24 tokens per 400 frames (the paper's benchmark batch), at least 8."""
    return max(8, round(frames * 24 / 400))


def run(args: argparse.Namespace) -> dict:
    specs = [
        {
            "family": "ctal", "size": args.size, "task": "pretraining", "mode": "train", "attn": attn,
            "dtype": args.dtype, "checkpointing": False, "compile": False, "full_mlm_logits": False,
            "batch_size": args.batch_size, "frames": frames, "tokens": tokens_for(frames), "steps": args.steps,
            "warmup": args.warmup, "device": args.device, "threads": args.threads, "variant": attn,
        }
        for frames in args.frames
        for attn in args.attn
    ]
    raw = {(spec["attn"], spec["frames"]): [] for spec in specs}
    for round_index in range(args.rounds):
        for spec in specs:
            result = model_step.measure_or_fail(spec) if args.in_process else common.run_child(model_step.__file__, spec, args.timeout)
            raw[(spec["attn"], spec["frames"])].append(result)
            print(f"round {round_index + 1}/{args.rounds}: {spec['attn']} {spec['frames']} frames: {model_step.summary(result)}", flush=True)
    points = []
    for spec in specs:
        good = [result for result in raw[(spec["attn"], spec["frames"])] if "error" not in result]
        point = {"attn": spec["attn"], "frames": spec["frames"], "tokens": spec["tokens"]}
        if good:
            step = common.median([common.median(result["times"]) for result in good])
            peak = common.median([result["peak_bytes"] for result in good])
            state = common.median([result["optimizer_state_bytes"] for result in good])
            point.update(
                seconds_per_sample=step / args.batch_size,
                cpu_seconds_per_sample=common.median([common.median(result["cpu_times"]) for result in good]) / args.batch_size,
                peak_bytes_per_sample=peak / args.batch_size,
                # Without the optimiser's moments, which are resident from the first step on, whatever the length.
                activation_bytes_per_sample=(peak - state) / args.batch_size,
            )
        else:
            point["error"] = raw[(spec["attn"], spec["frames"])][0]["error"]
        points.append(point)
    low, high = args.fit_range
    exponents = {}
    for attn in args.attn:
        mine = [point for point in points if point["attn"] == attn and "error" not in point]
        lengths = [point["frames"] for point in mine]
        exponents[attn] = {
            "time": common.fit_exponent(lengths, [point["seconds_per_sample"] for point in mine], low, high),
            "cpu_time": common.fit_exponent(lengths, [point["cpu_seconds_per_sample"] for point in mine], low, high),
            "memory": common.fit_exponent(lengths, [point["peak_bytes_per_sample"] for point in mine], low, high),
            "memory_without_optimizer_state": common.fit_exponent(
                lengths, [point["activation_bytes_per_sample"] for point in mine], low, high
            ),
        }
    return {"points": points, "exponents": exponents, "fit_range": [low, high]}


def plot(results: dict, path: Path, title: str) -> bool:
    """Log-log plot of time and memory per utterance against frames, one line per attention implementation."""
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib).")
        return False
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for attn in results["exponents"]:
        mine = [point for point in results["points"] if point["attn"] == attn and "error" not in point]
        frames = [point["frames"] for point in mine]
        for axis, field, scale, exponent in (
            (axes[0], "seconds_per_sample", 1.0, results["exponents"][attn]["time"]),
            (axes[1], "peak_bytes_per_sample", 2**-30, results["exponents"][attn]["memory"]),
        ):
            label = attn if exponent is None else f"{attn} (exponent {exponent:.2f})"
            line = axis.plot(frames, [point[field] * scale for point in mine], marker="o", label=label)[0]
        for axis, field, scale, exponent, label in (
            (axes[0], "cpu_seconds_per_sample", 1.0, results["exponents"][attn]["cpu_time"], "CPU time"),
            (axes[1], "activation_bytes_per_sample", 2**-30, results["exponents"][attn]["memory_without_optimizer_state"],
             "w/o optimiser state"),
        ):
            axis.plot(
                frames,
                [point[field] * scale for point in mine],
                linestyle="--",
                color=line.get_color(),
                label=f"{attn} {label}" + ("" if exponent is None else f" ({exponent:.2f})"),
            )
    low, high = results["fit_range"]
    for axis, label in ((axes[0], "step time per utterance (s): wall, CPU dashed"), (axes[1], "peak memory per utterance (GiB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks([point["frames"] for point in results["points"]], minor=False)
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("audio frames (12.5 ms)")
        axis.set_ylabel(label)
        axis.axvspan(low, high, alpha=0.08, color="grey")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"Plot written to {path}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    numbers = lambda text: [int(item) for item in text.split(",") if item]  # noqa: E731
    parser.add_argument("--size", default="ctal-base", choices=common.SIZES)
    parser.add_argument("--attn", type=lambda text: text.split(","), default=["eager", "sdpa", "blockwise"], help="default: eager,sdpa,blockwise")
    parser.add_argument("--frames", type=numbers, default=[250, 500, 1000, 1500, 2000, 3000], help="default: 250,500,1000,1500,2000,3000")
    parser.add_argument("--fit-range", type=numbers, default=[1000, 3000], help="frames between which exponents are fitted (default: 1000,3000)")
    parser.add_argument("--batch-size", type=int, default=2, help="utterances per batch (default: 2)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--steps", type=int, default=2, help="timed steps per point and round (default: 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (default: 2)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per point before it counts as failed")
    parser.add_argument("--in-process", action="store_true", help="measure in this process (memory not isolated)")
    parser.add_argument("--plot", type=Path, help="PNG path (default: the JSON path with .png)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if len(args.fit_range) != 2:
        parser.error("--fit-range takes two frame counts, e.g. 1000,3000")
    unknown = [attn for attn in args.attn if attn not in common.FAMILIES["ctal"].attn_implementations]
    if unknown:
        parser.error(f"unknown attention implementations {unknown}")
    if args.quick:
        args.size, args.frames, args.fit_range, args.batch_size = "tiny", [48, 96, 144], [48, 144], 1
        args.attn, args.steps, args.warmup, args.rounds, args.in_process = ["sdpa", "blockwise"], 1, 1, 1, True
    with common.benchmark_session(args, "audio_length") as (output, machine):
        results = run(args)
        title = (f"CTAL {args.size} pre-training step, batch {args.batch_size}, {args.dtype}, dropout 0.1; "
                 f"{machine['cpu'] if args.device == 'cpu' else machine.get('accelerator', {}).get('name', args.device)}")
        print(title + "; " + common.machine_line(machine))
        columns = ["frames", "tokens"] + [
            f"{attn} {unit}" for attn in args.attn for unit in ("s/utt", "CPU s/utt", "GiB/utt", "GiB/utt w/o opt")
        ]
        rows = []
        for frames in args.frames:
            row = [frames, tokens_for(frames)]
            for attn in args.attn:
                point = next(point for point in results["points"] if point["attn"] == attn and point["frames"] == frames)
                if "error" in point:
                    row += ["failed"] * 4
                else:
                    row += [f"{point['seconds_per_sample']:.3f}", f"{point['cpu_seconds_per_sample']:.3f}",
                            f"{point['peak_bytes_per_sample'] / 2**30:.3f}", f"{point['activation_bytes_per_sample'] / 2**30:.3f}"]
            rows.append(row)
        row = [f"exponent {args.fit_range[0]}-{args.fit_range[1]}", ""]
        for attn in args.attn:
            row += [f"{value:.2f}" if value is not None else None for value in results["exponents"][attn].values()]
        common.print_table(columns, rows + [row])
        plot_path = args.plot or output.with_suffix(".png")
        if plot(results, plot_path, title):
            results["plot"] = str(plot_path)
        common.write_results(output, "audio_length", args, machine, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
