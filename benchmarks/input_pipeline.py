"""Is the input pipeline ever the bottleneck? Examples per second delivered by a `torch.utils.data.DataLoader` (audio
decoding, CTAL feature extraction, tokenisation, padding and masking) with 0, 1 and 2 worker processes, beside the
examples per second of the model's training step on the same batches.

Pipelines, on the training split of a speech corpus (by default the package's espeak-ng demo corpus, built on first
use into ~/.cache/ctal_hf/demo_corpus):
- pre-training: the raw rows through `DataCollatorForCTALPretraining(feature_transform=CTALFeatureTransform(...))`,
  as `examples/run_pretraining.py` does without `--precompute_features`;
- fine-tuning: the same transform keeping a label column (speaker groups), padded without masking, plus class labels.

"Steady" throughput leaves out the first batch (worker start-up), which is given separately. Model rate: training
steps (forward, backward, fused AdamW) of `CTALForPreTraining` / `CTALForSequenceClassification` at `--size` on the
first batch of each pipeline, in this process. The workers and the model share the machine's cores.

    python benchmarks/input_pipeline.py                      # demo corpus, batch 8, workers 0,1,2, ctal-base
    python benchmarks/input_pipeline.py --corpus path/to/manifest.jsonl
    python benchmarks/input_pipeline.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import model_step  # noqa: E402


def pipelines(manifest: Path) -> tuple[dict, object]:
    """{name: (dataset, collate function)} and the processor."""
    from ctal_hf import CTALFeatureTransform, DataCollatorForCTALPretraining, load_manifest

    dataset = load_manifest(manifest, split="train")
    processor = common.corpus_processor(dataset)
    tokenizer = processor.tokenizer
    pretraining = DataCollatorForCTALPretraining(tokenizer, feature_transform=CTALFeatureTransform(processor), seed=0)

    # Class labels: the speakers in NUM_LABELS groups, the class count of the benchmark models (IEMOCAP's 4 emotions).
    speakers = sorted(set(dataset["speaker_id"]))
    labelled = dataset.map(lambda row: {"label": speakers.index(row["speaker_id"]) % common.NUM_LABELS})
    transform = CTALFeatureTransform(processor, keep_columns=("label",))
    padding = DataCollatorForCTALPretraining(tokenizer, mlm=False, mcam=False)

    def fine_tuning(examples):
        columns = transform({key: [example[key] for example in examples] for key in ("audio", "text", "label")})
        batch = padding([dict(zip(columns, values)) for values in zip(*columns.values())])
        batch["labels"] = torch.tensor(columns["label"])
        return batch

    return {"pre-training": (dataset, pretraining), "fine-tuning": (labelled, fine_tuning)}, processor


def loader_rate(dataset, collate, batch_size: int, workers: int, batches: int, seed: int) -> dict:
    """Iterate `batches` batches (an epoch at most): steady examples/s after the first batch, and the first batch's
    latency."""
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    start = time.perf_counter()
    first_at, examples, count = None, 0, 0
    for batch in loader:
        count += 1
        if first_at is None:
            first_at = time.perf_counter()
        else:
            examples += batch["input_ids"].shape[0]
        if count == batches:
            break
    end = time.perf_counter()
    return {
        "first_batch_seconds": first_at - start,
        "examples_per_second": examples / (end - first_at) if examples else None,
        "batches": count,
    }


def model_rate(task: str, size: str, batch: dict, steps: int, device: torch.device) -> float:
    """Examples/s of training steps of CTAL at `size` on one real batch."""
    spec = {"family": "ctal", "size": size, "task": task, "mode": "train", "dtype": "fp32", "compile": False}
    model = model_step.build(spec, "sdpa").to(device)
    inputs = {key: value.to(device) for key, value in batch.items() if key != "length"}
    step = model_step.make_step(model, inputs, spec, device)
    step()
    times = common.interleaved_times({"step": step}, steps, warmup=0)["step"]
    return batch["input_ids"].shape[0] / common.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--corpus", type=Path, help="manifest (.jsonl/.csv/.tsv) with audio and text; default: the demo corpus")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per batch (default: 8)")
    parser.add_argument("--workers", type=lambda text: [int(item) for item in text.split(",")], default=[0, 1, 2], help="default: 0,1,2")
    parser.add_argument("--batches", type=int, default=30, help="batches per measurement, at most an epoch (default: 30)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions (default: 2)")
    parser.add_argument("--size", default="ctal-base", choices=common.SIZES, help="model size for the step rate")
    parser.add_argument("--model-steps", type=int, default=3, help="timed model steps (default: 3)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.workers, args.batches, args.rounds, args.size, args.model_steps = 2, [0, 1], 2, 1, "tiny", 1
    with common.benchmark_session(args, "input_pipeline") as (output, machine):
        manifest = common.demo_manifest(args.corpus)
        named, _ = pipelines(manifest)
        raw = {(name, workers): [] for name in named for workers in args.workers}
        for round_index in range(args.rounds):
            for (name, workers), results in raw.items():
                dataset, collate = named[name]
                results.append(loader_rate(dataset, collate, args.batch_size, workers, args.batches, seed=round_index))
                print(f"round {round_index + 1}/{args.rounds}: {name}, {workers} workers: "
                      f"{results[-1]['examples_per_second'] or 0:.1f} examples/s", flush=True)
        device = torch.device(args.device)
        model = {}
        for name, (dataset, collate) in named.items():
            batch = collate([dataset[index] for index in range(min(args.batch_size, len(dataset)))])
            task = "pretraining" if name == "pre-training" else "classification"
            model[name] = model_rate(task, args.size, batch, args.model_steps, device)
        rows = []
        for (name, workers), results in raw.items():
            rate = common.median([result["examples_per_second"] for result in results if result["examples_per_second"]])
            rows.append({
                "pipeline": name,
                "workers": workers,
                "examples_per_second": rate,
                "first_batch_seconds": common.median([result["first_batch_seconds"] for result in results]),
                "model_examples_per_second": model[name],
                "input_over_model": rate / model[name] if rate else None,
            })
        print(f"{manifest} (training split), batch {args.batch_size}; model: CTAL {args.size} training step, fp32, sdpa; "
              + common.machine_line(machine))
        common.print_table(
            ["pipeline", "workers", "input examples/s", "first batch s", f"model examples/s ({args.size})", "input / model"],
            [[row["pipeline"], row["workers"], f"{row['examples_per_second']:.1f}" if row["examples_per_second"] else None,
              f"{row['first_batch_seconds']:.2f}", f"{row['model_examples_per_second']:.2f}",
              f"{row['input_over_model']:.1f}x" if row["input_over_model"] else None] for row in rows],
        )
        common.write_results(output, "input_pipeline", args, machine, {"corpus": str(manifest), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
