"""Fine-tuning epoch with random versus length-grouped batches: padding and training-step time.

Batches of a real corpus (by default the package's espeak-ng demo corpus) are drawn as `transformers.Trainer` draws
them: shuffled (`train_sampling_strategy="random"`) or with its `LengthGroupedSampler`
(`train_sampling_strategy="group_by_length"` with the `length` column that `ctal_hf.add_length_column` writes).
Each batch is padded to its longest utterance (frames from the audio files' headers, tokens from the transcripts),
and a `CTALForSequenceClassification` training step (forward, backward, fused AdamW) is timed on inputs of exactly
those padded shapes and masks, alternating between the two samplers batch by batch so that load on the machine hits
both alike. The table gives the share of padded frames and the epoch time (sum of the step times, median over rounds).

    python benchmarks/length_grouping.py                      # demo corpus, batch 8, ctal-base
    python benchmarks/length_grouping.py --corpus path/to/manifest.jsonl --size tiny
    python benchmarks/length_grouping.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import model_step  # noqa: E402


def corpus_lengths(manifest: Path) -> tuple[list[int], list[int]]:
    """Frames (from the file headers, as `add_length_column`) and tokens (`<s>`/`</s>` included) per utterance."""
    from ctal_hf import add_length_column, load_manifest

    dataset = load_manifest(manifest, split="train")
    processor = common.corpus_processor(dataset)
    frames = list(add_length_column(dataset, processor)["length"])
    tokens = [len(ids) for ids in processor.tokenizer(list(dataset["text"]))["input_ids"]]
    return frames, tokens


def epoch_batches(lengths: list[int], batch_size: int, grouped: bool, seed: int) -> list[list[int]]:
    """Index lists of one epoch, drawn as Trainer draws them."""
    generator = torch.Generator().manual_seed(seed)
    if grouped:
        order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator))
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def padded_inputs(indices: list[int], frames: list[int], tokens: list[int], seed: int) -> dict:
    """Classification inputs of the batch's padded shapes: random ids and features, masks of the real lengths."""
    generator = torch.Generator().manual_seed(seed)
    batch_frames, batch_tokens = [frames[index] for index in indices], [tokens[index] for index in indices]
    size, longest_frames, longest_tokens = len(indices), max(batch_frames), max(batch_tokens)
    return {
        "input_ids": torch.randint(5, 1000, (size, longest_tokens), generator=generator),
        "attention_mask": (torch.arange(longest_tokens) < torch.tensor(batch_tokens)[:, None]).long(),
        "audio_features": torch.randn(size, longest_frames, 160, generator=generator),
        "audio_attention_mask": (torch.arange(longest_frames) < torch.tensor(batch_frames)[:, None]).long(),
        "labels": torch.randint(0, common.NUM_LABELS, (size,), generator=generator),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--corpus", type=Path, help="manifest (.jsonl/.csv/.tsv) with audio and text; default: the demo corpus")
    parser.add_argument("--batch-size", type=int, default=8, help="utterances per batch (default: 8)")
    parser.add_argument("--size", default="ctal-base", choices=common.SIZES)
    parser.add_argument("--attn", default="sdpa", help="attention implementation (default: sdpa)")
    parser.add_argument("--rounds", type=int, default=2, help="epochs per sampler, interleaved (default: 2)")
    parser.add_argument("--max-batches", type=int, help="timed batches per epoch (default: all)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.size, args.rounds, args.max_batches = 2, "tiny", 1, 3
    with common.benchmark_session(args, "length_grouping") as (output, machine):
        manifest = common.demo_manifest(args.corpus)
        frames, tokens = corpus_lengths(manifest)
        device = torch.device(args.device)
        spec = {"family": "ctal", "size": args.size, "task": "classification", "mode": "train", "dtype": "fp32", "compile": False}
        model = model_step.build(spec, args.attn).to(device)
        optimizer = model_step.make_optimizer(model)
        samplers = {"random": False, "group_by_length": True}
        epochs = {name: [] for name in samplers}
        padding = {}
        for round_index in range(args.rounds):
            batches = {name: epoch_batches(frames, args.batch_size, grouped, seed=round_index) for name, grouped in samplers.items()}
            for name, epoch in batches.items():
                real = sum(frames[index] for batch in epoch for index in batch)
                padded = sum(len(batch) * max(frames[index] for index in batch) for batch in epoch)
                padding.setdefault(name, []).append(1 - real / padded)
            count = min(len(epoch) for epoch in batches.values())
            count = count if args.max_batches is None else min(count, args.max_batches)
            steps = {
                name: [model_step.make_step(model, common.to_device(padded_inputs(batch, frames, tokens, seed=index), device), spec, device, optimizer)
                       for index, batch in enumerate(epoch[:count])]
                for name, epoch in batches.items()
            }
            if round_index == 0:
                steps["random"][0]()  # warm-up
            seconds = {name: 0.0 for name in samplers}
            for index in range(count):
                for name in samplers:
                    start = time.perf_counter()
                    steps[name][index]()
                    seconds[name] += time.perf_counter() - start
            for name in samplers:
                epochs[name].append(seconds[name])
            print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(f"{name} {seconds[name]:.1f} s" for name in samplers), flush=True)
        rows = {
            name: {
                "padded_frame_share": common.median(padding[name]),
                "epoch_seconds": common.median(epochs[name]),
                "batches": count,
            }
            for name in samplers
        }
        for name in samplers:
            rows[name]["speedup_vs_random"] = rows["random"]["epoch_seconds"] / rows[name]["epoch_seconds"]
        print(f"{manifest} (training split, {len(frames)} utterances), batch {args.batch_size}, {count} batches per epoch timed; "
              f"CTALForSequenceClassification {args.size} ({args.attn}, fp32); " + common.machine_line(machine))
        common.print_table(
            ["sampler", "padded frames %", "epoch s", "speed-up"],
            [[name, f"{100 * row['padded_frame_share']:.1f}", f"{row['epoch_seconds']:.2f}", f"{row['speedup_vs_random']:.2f}x"] for name, row in rows.items()],
        )
        common.write_results(output, "length_grouping", args, machine, {"corpus": str(manifest), "samplers": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
