"""Training step and inference cost of CTAL and its peers on the same batches: time, throughput, peak memory, model
FLOPs and utilisation of the device's dense matrix-product rate.

Every setting runs in its own process (so its peak memory is its own: resident set size above the loaded model and
batch on CPU, `torch.cuda.max_memory_allocated` on GPU), `--steps` timed steps after `--warmup` untimed ones, and the
settings are run `--rounds` times, interleaved, so that load on the machine hits them alike; the table gives medians.
A training step is forward + backward + fused AdamW step (Trainer's default optimiser); inference is a forward pass without labels under
`torch.inference_mode()`. bf16 is autocast (mixed precision, as `Trainer(bf16=True)`). Besides wall time, each step's
process CPU time is recorded ("CPU s": summed over threads): with `--threads 1` it is the setting's cost free of the
waiting that other load on the machine adds to wall time.

For each family, size, task and mode, a baseline (fp32, the first `--attn` the family supports, no gradient
checkpointing, no compilation) is varied one factor at a time (`--variants`: other attention implementations, bf16,
gradient checkpointing, torch.compile, and for CTAL pre-training the full MLM projection `full_mlm_logits=True`, i.e.
the path before the masked-positions optimisation). Model FLOPs are counted with `torch.utils.flop_counter` on an
eager-attention copy of the model (matrix products, including attention's; recomputation not counted); utilisation
(MFU) is FLOPs / step time / the measured rate of a dense 2048^3 matrix product (`--gemm-size`) in the same dtype,
timed in every round.

    python benchmarks/model_step.py --sizes ctal-base                  # the paper's CTAL-Base batch: 4 x 400 x 24
    python benchmarks/model_step.py                                     # tiny, ctal-base and ctal-large
    python benchmarks/model_step.py --device cuda --batch-size 32
    python benchmarks/model_step.py --quick                             # smoke run in-process (the test suite)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


VARIANTS = ("bf16", "checkpointing", "compile", "full-mlm-logits")


def build(spec: dict, attn: str) -> torch.nn.Module:
    family = common.FAMILIES[spec["family"]]
    torch.manual_seed(0)
    return family.build(spec["size"], spec["task"], attn)


def model_inputs(spec: dict, device: torch.device) -> dict:
    family = common.FAMILIES[spec["family"]]
    batch = common.make_batch(spec["batch_size"], spec["frames"], spec["tokens"])
    inputs = family.inputs(common.to_device(batch, device), spec["task"], {"full_mlm_logits": spec["full_mlm_logits"]})
    if spec["mode"] == "inference":
        inputs = {key: value for key, value in inputs.items() if key not in ("labels", "mcam_labels", "mcam_label_mask", "obj_labels", "full_mlm_logits")}
    return inputs


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """Fused AdamW: the default optimiser of transformers.Trainer (`optim="adamw_torch_fused"`)."""
    return torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)


def make_step(model: torch.nn.Module, inputs: dict, spec: dict, device: torch.device, optimizer=None):
    """One training step (forward, backward, optimiser step: `optimizer`, default a new `make_optimizer(model)`) or
    one inference forward pass, synchronised. The optimiser is the step's `optimizer` attribute."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["dtype"] == "bf16")
    if spec["mode"] == "train":
        model.train()
        optimizer = optimizer or make_optimizer(model)
        forward = torch.compile(model) if spec["compile"] else model

        def step():
            with autocast:
                loss = forward(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            common.synchronize(device)

        step.optimizer = optimizer
    else:
        model.eval()
        forward = torch.compile(model) if spec["compile"] else model

        def step():
            with torch.inference_mode(), autocast:
                forward(**inputs)
            common.synchronize(device)

    return step


def conv_backward_flops(
    grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding, groups,
    output_mask, out_shape, **kwargs
) -> int:
    """FLOPs of a convolution's backward pass: the input and the weight gradient each cost what the forward product
    does, 2 x batch x output positions x weight elements. torch 2.13's counter counts the weight gradient of a grouped
    convolution as if it were ungrouped (pytorch/pytorch#183405): 16x too much for wav2vec 2.0's positional
    convolution, which would put AudioTextCMA's training step above 100% MFU. Transposed convolutions keep torch's
    formula."""
    from torch.utils.flop_counter import conv_backward_flop

    if transposed:
        return conv_backward_flop(
            grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding, groups,
            output_mask, out_shape,
        )
    forward = 2 * grad_out_shape[0] * math.prod(grad_out_shape[2:]) * math.prod(w_shape)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def count_flops(spec: dict, device: torch.device) -> int:
    """FLOPs of one step of the eager-attention fp32 model (forward, plus backward in training)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(spec, "eager").to(device)
    inputs = model_inputs(spec, device)
    model.train(spec["mode"] == "train")
    mapping = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        if spec["mode"] == "train":
            model(**inputs).loss.backward()
        else:
            with torch.no_grad():
                model(**inputs)
    return counter.get_total_flops()


def measure(spec: dict) -> dict:
    """Time and peak memory of one setting (run in a fresh process, or in-process with --quick)."""
    device = torch.device(spec["device"])
    if spec["family"] == "gemm":
        dtype = torch.bfloat16 if spec["dtype"] == "bf16" else torch.float32
        return {"flops_per_second": common.dense_gemm_rate(device, dtype, spec["size"])}
    model = build(spec, spec["attn"]).to(device)
    if spec["checkpointing"]:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    inputs = model_inputs(spec, device)
    step = make_step(model, inputs, spec, device)
    times, cpu_times = [], []
    with common.PeakMemory(device) as memory:
        start = time.perf_counter()
        step()
        first = time.perf_counter() - start
        for _ in range(spec["warmup"] - 1):
            step()
        for _ in range(spec["steps"]):
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    optimizer = getattr(step, "optimizer", None)
    state = [] if optimizer is None else [value for values in optimizer.state.values() for value in values.values()]
    result = {
        "times": times,
        "cpu_times": cpu_times,
        "first_step_seconds": first,
        "peak_bytes": memory.peak,
        "optimizer_state_bytes": sum(value.numel() * value.element_size() for value in state if torch.is_tensor(value)),
        "peak_exact": memory.exact,
        "parameters": common.parameter_count(model),
    }
    if spec.get("count_flops"):
        del model, step
        result["flops"] = count_flops(spec, device)
    return result


def plan(args: argparse.Namespace) -> list[dict]:
    """The settings: per family x size x task x mode, the baseline and its one-factor variants."""
    settings = []
    for family_name in args.families:
        family = common.FAMILIES[family_name]
        attns = [attn for attn in args.attn if attn in family.attn_implementations] or [family.attn_implementations[0]]
        for size in args.sizes:
            for task in [task for task in args.tasks if task in family.tasks]:
                for mode in args.modes:
                    base = {
                        "family": family_name,
                        "size": size,
                        "task": task,
                        "mode": mode,
                        "attn": attns[0],
                        "dtype": "fp32",
                        "checkpointing": False,
                        "compile": False,
                        "full_mlm_logits": False,
                        "batch_size": args.batch_size,
                        "frames": args.frames,
                        "tokens": args.tokens,
                        "steps": args.steps,
                        "warmup": args.warmup,
                        "device": args.device,
                        "threads": args.threads,
                        "variant": "baseline",
                        "count_flops": True,
                    }
                    settings.append(base)
                    variants = [{"attn": attn, "variant": attn} for attn in attns[1:]]
                    if "bf16" in args.variants:
                        variants.append({"dtype": "bf16", "variant": "bf16"})
                    if "checkpointing" in args.variants and mode == "train" and family.gradient_checkpointing:
                        variants.append({"checkpointing": True, "variant": "checkpointing"})
                    if "compile" in args.variants:
                        variants.append({"compile": True, "variant": "compile", "warmup": max(args.warmup, 3)})
                    if "full-mlm-logits" in args.variants and family_name == "ctal" and task == "pretraining" and mode == "train":
                        variants.append({"full_mlm_logits": True, "variant": "full-mlm-logits", "count_flops": True})
                    settings += [{**base, "count_flops": False, **variant} for variant in variants]
    return settings


def key(spec: dict) -> tuple:
    return (spec["family"], spec["size"], spec["task"], spec["mode"], spec["variant"])


def run(args: argparse.Namespace) -> dict:
    settings = plan(args)
    dtypes = sorted({spec["dtype"] for spec in settings})
    gemms = [
        {"family": "gemm", "dtype": dtype, "size": args.gemm_size, "device": args.device, "threads": args.threads}
        for dtype in dtypes
    ]
    raw = {key(spec): [] for spec in settings}
    gemm_rates = {dtype: [] for dtype in dtypes}
    for round_index in range(args.rounds):
        for spec in gemms + settings:
            # FLOPs are the same every round: count them once.
            spec = {**spec, "count_flops": spec.get("count_flops", False) and round_index == 0}
            result = measure_or_fail(spec) if args.in_process else common.run_child(__file__, spec, args.timeout)
            if spec["family"] == "gemm":
                if "error" not in result:
                    gemm_rates[spec["dtype"]].append(result["flops_per_second"])
            else:
                raw[key(spec)].append(result)
            print(f"round {round_index + 1}/{args.rounds}: {describe(spec)}: {summary(result)}", flush=True)
    rows = aggregate(settings, raw, {dtype: common.median(rates) for dtype, rates in gemm_rates.items()})
    return {"rows": rows, "gemm_flops_per_second": {dtype: common.median(rates) for dtype, rates in gemm_rates.items()}}


def measure_or_fail(spec: dict) -> dict:
    try:
        return measure(spec)
    except Exception as error:  # noqa: BLE001 - reported as the setting's result
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]}


def describe(spec: dict) -> str:
    if spec["family"] == "gemm":
        return f"dense GEMM {spec['dtype']}"
    return f"{spec['family']} {spec['size']} {spec['task']} {spec['mode']} {spec['variant']}"


def summary(result: dict) -> str:
    if "error" in result:
        return "failed: " + result["error"]
    if "flops_per_second" in result:
        return f"{result['flops_per_second'] / 1e12:.3f} TFLOP/s"
    return f"median step {common.median(result['times']) * 1e3:.1f} ms, peak {result['peak_bytes'] / 2**20:.0f} MiB"


def aggregate(settings: list[dict], raw: dict, gemm_rates: dict) -> list[dict]:
    """One row per setting: medians over rounds, throughput, memory, FLOPs, MFU and ratios to its baseline."""
    rows = []
    for spec in settings:
        results = raw[key(spec)]
        errors = [result["error"] for result in results if "error" in result]
        good = [result for result in results if "error" not in result]
        row = {name: spec[name] for name in ("family", "size", "task", "mode", "variant", "attn", "dtype", "checkpointing", "compile", "full_mlm_logits", "batch_size", "frames", "tokens")}
        if not good:
            rows.append({**row, "error": errors[0] if errors else "not run"})
            continue
        step = common.median([common.median(result["times"]) for result in good])
        row.update(
            step_seconds=step,
            step_seconds_per_round=[common.median(result["times"]) for result in good],
            cpu_seconds=common.median([common.median(result["cpu_times"]) for result in good]),
            first_step_seconds=common.median([result["first_step_seconds"] for result in good]),
            samples_per_second=spec["batch_size"] / step,
            audio_seconds_per_second=spec["batch_size"] * spec["frames"] * common.FRAME_SECONDS / step,
            peak_bytes=common.median([result["peak_bytes"] for result in good]),
            peak_exact=all(result["peak_exact"] for result in good),
            parameters=good[0]["parameters"],
        )
        flops = next((result["flops"] for result in good if "flops" in result), None)
        if flops is None and not spec["full_mlm_logits"]:
            base = next((other for other in rows if key_of_row(other)[:4] == key(spec)[:4] and other["variant"] == "baseline"), None)
            flops = base.get("flops") if base else None
        if flops:
            row["flops"] = flops
            row["achieved_flops_per_second"] = flops / step
            rate = gemm_rates.get(spec["dtype"])
            if rate:
                row["mfu"] = flops / step / rate
        rows.append(row)
    for row in rows:
        base = next((other for other in rows if key_of_row(other)[:4] == key_of_row(row)[:4] and other["variant"] == "baseline"), None)
        if base and "step_seconds" in row and "step_seconds" in base:
            row["speedup_vs_baseline"] = base["step_seconds"] / row["step_seconds"]
            row["memory_vs_baseline"] = row["peak_bytes"] / base["peak_bytes"] if base["peak_bytes"] > 0 else None
    return rows


def key_of_row(row: dict) -> tuple:
    return (row["family"], row["size"], row["task"], row["mode"], row["variant"])


def format_rows(rows: list[dict]) -> list[list]:
    table = []
    for row in rows:
        name = f"{row['family']} {row['size']} {row['task'][:5]} {row['mode'][:5]}"
        if "error" in row:
            table.append([name, row["variant"], None, "failed (below)"] + [None] * 8)
            continue
        table.append([
            name,
            row["variant"],
            f"{row['parameters'] / 1e6:.1f}",
            f"{row['step_seconds'] * 1e3:.1f}",
            f"{row['cpu_seconds']:.2f}",
            f"{row['samples_per_second']:.2f}",
            f"{row['audio_seconds_per_second']:.1f}",
            f"{row['peak_bytes'] / 2**20:.0f}",
            f"{row['flops'] / 1e9:.1f}" if "flops" in row else None,
            f"{100 * row['mfu']:.1f}" if "mfu" in row else None,
            f"{row['speedup_vs_baseline']:.2f}x" if "speedup_vs_baseline" in row else None,
            f"{row['memory_vs_baseline']:.2f}x" if row.get("memory_vs_baseline") else None,
        ])
    return table


def peer_rows(rows: list[dict]) -> list[list]:
    """CTAL's baseline against each peer's on the same batch: throughput and memory ratios."""
    table = []
    for row in rows:
        if row["family"] == "ctal" or row["variant"] != "baseline" or "error" in row:
            continue
        for variant in ("baseline", "eager"):
            ctal = next((other for other in rows if other["family"] == "ctal" and other["variant"] == variant and key_of_row(other)[1:4] == key_of_row(row)[1:4] and "error" not in other), None)
            if ctal is None:
                continue
            table.append([
                f"{row['size']} {row['task']} {row['mode']}",
                f"ctal ({ctal['attn']}) / {row['family']} ({row['attn']})",
                f"{ctal['parameters'] / 1e6:.1f} / {row['parameters'] / 1e6:.1f}",
                f"{ctal['samples_per_second'] / row['samples_per_second']:.2f}x",
                f"{ctal['peak_bytes'] / row['peak_bytes']:.2f}x" if row["peak_bytes"] > 0 else None,
            ])
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    split = lambda text: [item for item in text.split(",") if item]  # noqa: E731
    parser.add_argument("--families", type=split, default=list(common.FAMILIES), help=f"comma-separated (default: {','.join(common.FAMILIES)})")
    parser.add_argument("--sizes", type=split, default=list(common.SIZES), help=f"comma-separated (default: {','.join(common.SIZES)})")
    parser.add_argument("--tasks", type=split, default=list(common.TASKS), help="pretraining,classification (default: both)")
    parser.add_argument("--modes", type=split, default=["train", "inference"], help="train,inference (default: both)")
    parser.add_argument("--attn", type=split, default=["sdpa", "eager", "blockwise", "flex_attention"], help="attention implementations, the first is the baseline (default: sdpa,eager,blockwise,flex_attention)")
    parser.add_argument("--variants", type=split, default=list(VARIANTS), help=f"one-factor variants of the baseline (default: {','.join(VARIANTS)})")
    parser.add_argument("--batch-size", type=int, default=4, help="utterances per batch (default: 4, the paper's CTAL-Base benchmark batch)")
    parser.add_argument("--frames", type=int, default=400, help="audio frames per utterance (default: 400 = 5 s)")
    parser.add_argument("--tokens", type=int, default=24, help="tokens per utterance (default: 24)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting and round (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2; 3 with torch.compile)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of all settings (default: 3)")
    parser.add_argument("--gemm-size", type=int, default=2048, help="side of the reference matrix product (default: 2048)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per setting before it counts as failed")
    parser.add_argument("--in-process", action="store_true", help="measure in this process (memory not isolated)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.child:
        return common.child_main(measure, args.child)
    unknown = [name for name in args.families if name not in common.FAMILIES] + [size for size in args.sizes if size not in common.SIZES]
    unknown += [variant for variant in args.variants if variant not in VARIANTS]
    if unknown:
        parser.error(f"unknown families, sizes or variants {unknown}; see --help")
    if args.quick:
        args.sizes, args.batch_size, args.frames, args.tokens = ["tiny"], 1, 32, 8
        args.steps, args.warmup, args.rounds, args.in_process, args.gemm_size = 1, 1, 1, True, 256
        args.attn, args.variants = ["sdpa"], ["checkpointing", "full-mlm-logits"]
    with common.benchmark_session(args, "model_step") as (output, machine):

        results = run(args)
        print()
        print(f"Batch {args.batch_size} x {args.frames} frames ({args.frames * common.FRAME_SECONDS:g} s) x {args.tokens} tokens, "
              f"{args.steps} steps x {args.rounds} rounds, medians; {common.machine_line(machine)}")
        gemm = ", ".join(f"{dtype} {rate / 1e12:.3f} TFLOP/s" for dtype, rate in results["gemm_flops_per_second"].items() if rate)
        print(f"Dense {args.gemm_size}^3 GEMM: {gemm}")
        columns = ["model", "variant", "params M", "step ms", "CPU s", "samples/s", "audio s/s", "peak MiB", "GFLOP", "MFU %", "speed vs base", "mem vs base"]
        common.print_table(columns, format_rows(results["rows"]))
        for row in results["rows"]:
            if "error" in row:
                print(f"failed: {row['family']} {row['size']} {row['task']} {row['mode']} {row['variant']}: {row['error']}")
        peers = peer_rows(results["rows"])
        if peers:
            print()
            common.print_table(["setting", "models", "params M", "throughput ratio", "memory ratio"], peers, title="Peers on the same batches")
        common.write_results(output, "model_step", args, machine, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
