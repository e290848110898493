"""Where the time of one training step (or inference pass) goes: the top operators by self time under
`torch.profiler`, each with its share of the step and a category, and the share spent in matrix products (the
essential work) against everything else (normalisation, activation, dropout, softmax, copies, the optimiser).

The setting is built exactly as in `model_step.py` (same models, batch, mixed precision and options).

    python benchmarks/profile_step.py                                   # CTAL-Base pre-training step, 4 x 400 x 24
    python benchmarks/profile_step.py --full-mlm-logits                 # the same before the MLM optimisation
    python benchmarks/profile_step.py --family lxmert --attn eager
    python benchmarks/profile_step.py --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import model_step  # noqa: E402


# Operators that are matrix products (including fused attention kernels); by self time, so nothing is counted twice.
MATRIX_OPERATORS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    "aten::_flash_attention_forward",
    "aten::_flash_attention_backward",
    "aten::_efficient_attention_forward",
    "aten::_efficient_attention_backward",
    "aten::_scaled_dot_product_cudnn_attention",
    "aten::_scaled_dot_product_cudnn_attention_backward",
)
CATEGORIES = (
    ("optimiser", ("_fused_adam", "_foreach_", "aten::addcdiv", "aten::lerp")),
    ("softmax", ("softmax",)),
    ("dropout", ("dropout", "bernoulli", "aten::native_dropout")),
    ("layer norm", ("layer_norm",)),
    ("activation", ("gelu", "tanh")),
    ("embedding", ("embedding",)),
    ("loss", ("cross_entropy", "nll_loss", "log_softmax", "l1_loss", "smooth_l1")),
    ("copy / layout", ("copy_", "clone", "contiguous", "cat", "index", "gather", "scatter", "masked_select", "nonzero", "fill_", "zero_", "empty", "to_copy", "as_strided", "transpose", "view")),
    ("elementwise", ("add", "mul", "div", "sub", "where", "masked_fill", "sum", "mean", "abs", "sign", "pow", "eq", "ne", "lt", "gt")),
)


def category(name: str) -> str:
    if name in MATRIX_OPERATORS:
        return "matrix product"
    for label, fragments in CATEGORIES:
        if any(fragment in name for fragment in fragments):
            return label
    return "other"


def profile_setting(spec: dict, steps: int, top: int) -> dict:
    device = torch.device(spec["device"])
    model = model_step.build(spec, spec["attn"]).to(device)
    if spec["checkpointing"]:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    step = model_step.make_step(model, model_step.model_inputs(spec, device), spec, device)
    for _ in range(spec["warmup"]):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
    device_time = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [event for event in profiler.key_averages() if event.key.startswith("aten::") or event.key.startswith("Optimizer")]
    operators = [event for event in events if event.key.startswith("aten::")]
    total = sum(getattr(event, device_time) for event in operators)
    rows = sorted(
        (
            {
                "operator": event.key,
                "category": category(event.key),
                "milliseconds_per_step": getattr(event, device_time) / 1e3 / steps,
                "share": getattr(event, device_time) / total,
                "calls_per_step": event.count / steps,
            }
            for event in operators
        ),
        key=lambda row: -row["milliseconds_per_step"],
    )
    shares = {}
    for row in rows:
        shares[row["category"]] = shares.get(row["category"], 0.0) + row["share"]
    return {
        "operator_milliseconds_per_step": total / 1e3 / steps,
        "top_operators": rows[:top],
        "category_shares": dict(sorted(shares.items(), key=lambda item: -item[1])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--family", default="ctal", choices=list(common.FAMILIES))
    parser.add_argument("--size", default="ctal-base", choices=common.SIZES)
    parser.add_argument("--task", default="pretraining", choices=common.TASKS)
    parser.add_argument("--mode", default="train", choices=("train", "inference"))
    parser.add_argument("--attn", default="sdpa", help="attention implementation (default: sdpa)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument("--full-mlm-logits", action="store_true", help="CTAL pre-training: full MLM projection")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (default: 3)")
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first (default: 2)")
    parser.add_argument("--top", type=int, default=15, help="operators listed (default: 15)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch_size, args.frames, args.tokens, args.steps, args.warmup = "tiny", 1, 32, 8, 1, 1
    if args.task not in common.FAMILIES[args.family].tasks:
        parser.error(f"--task {args.task}: {args.family} has models for {common.FAMILIES[args.family].tasks}")
    if args.attn not in common.FAMILIES[args.family].attn_implementations:
        parser.error(f"--attn {args.attn}: {args.family} supports {common.FAMILIES[args.family].attn_implementations}")
    common.check_device(args.device)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        output = common.result_path(args.output, "profile_step", args.overwrite)
        machine = common.machine_info(args.device)
        spec = {
            "family": args.family, "size": args.size, "task": args.task, "mode": args.mode, "attn": args.attn,
            "dtype": args.dtype, "checkpointing": args.checkpointing, "compile": False,
            "full_mlm_logits": args.full_mlm_logits, "batch_size": args.batch_size, "frames": args.frames,
            "tokens": args.tokens, "warmup": args.warmup, "device": args.device,
        }
        results = profile_setting(spec, args.steps, args.top)
        print(f"{args.family} {args.size} {args.task} {args.mode}, {args.attn}, {args.dtype}, batch {args.batch_size} x "
              f"{args.frames} frames x {args.tokens} tokens; {common.machine_line(machine)}")
        print(f"Operator time per step: {results['operator_milliseconds_per_step']:.1f} ms; by category: "
              + ", ".join(f"{name} {100 * share:.1f}%" for name, share in results["category_shares"].items()))
        rows = [
            [row["operator"], row["category"], f"{row['milliseconds_per_step']:.2f}", f"{100 * row['share']:.1f}", f"{row['calls_per_step']:g}"]
            for row in results["top_operators"]
        ]
        common.print_table(["operator", "category", "ms / step", "% of step", "calls / step"], rows)
        common.write_results(output, "profile_step", args, machine, {"setting": spec, **results})
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
