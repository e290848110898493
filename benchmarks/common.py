"""Shared parts of the benchmark scripts: the machine description written into every result file, timing (interleaved
repeats, medians), peak memory, child processes, model sizes and the model families compared on the same batches.

Scripts import it as `common` (their own folder is first on `sys.path` when run as `python benchmarks/<script>.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch


RESULT_PREFIX = "BENCHMARK-RESULT "
FRAME_SECONDS = 0.0125  # CTAL's hop: 200 samples at 16 kHz (paper section 3.1.1)
PACKAGES = ("torch", "transformers", "numpy", "scipy", "ctal_hf", "librosa", "matplotlib")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "neon", "sve")


# ---------------------------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def _memory_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info(device: str = "cpu") -> dict:
    """What a figure depends on: CPU (model, cores usable, vector extensions), memory, load, threads, accelerator and
    library versions."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    info = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": _memory_total_gb(),
        "load_average": [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": device,
        "versions": versions,
    }
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(torch.device(device))
        info["accelerator"] = {
            "name": properties.name,
            "memory_gb": round(properties.total_memory / 2**30, 1),
            "capability": f"{properties.major}.{properties.minor}",
            "cuda": torch.version.cuda,
        }
    return info


# ---------------------------------------------------------------------------------------------- arguments


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON result file (default: benchmark-results/<script>-<date-time>.json in the working directory)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run of every code path, not a figure")


def check_device(device: str) -> None:
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device is available here; use --device cpu.")


def result_path(output: Path | None, script: str, overwrite: bool) -> Path:
    """The file a run writes: `output`, which must not exist unless `overwrite`, or a new time-stamped file."""
    if output is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        output = Path("benchmark-results") / f"{script}-{stamp}.json"
    if output.exists() and not overwrite:
        raise SystemExit(f"{output} exists: pass another --output, or --overwrite to replace it.")
    return output


@contextlib.contextmanager
def benchmark_session(args: argparse.Namespace, script: str) -> Iterator[tuple[Path, dict]]:
    """The set-up every benchmark script shares: check `--device`, run with `--threads` torch threads (restored on
    exit), and yield the result path (refusing an existing one without `--overwrite`) and the machine description."""
    check_device(args.device)
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        yield result_path(args.output, script, args.overwrite), machine_info(args.device)
    finally:
        torch.set_num_threads(threads)


def write_results(path: Path, script: str, arguments: argparse.Namespace, machine: dict, results: dict) -> None:
    """Write `{"script", "arguments", "machine", "results"}` as JSON and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(os, "getloadavg"):
        machine = {**machine, "load_average_end": [round(value, 2) for value in os.getloadavg()]}
    payload = {
        "script": script,
        "arguments": {key: str(value) if isinstance(value, Path) else value for key, value in vars(arguments).items()},
        "machine": machine,
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"Results written to {path}")


def machine_line(machine: dict) -> str:
    flags = ",".join(machine["cpu_flags"]) or "-"
    line = (
        f"{machine['cpu']} ({machine['usable_cpus']} usable CPUs, {flags}), {machine['memory_gb']} GB, "
        f"torch {machine['versions']['torch']} with {machine['torch_threads']} threads, transformers "
        f"{machine['versions']['transformers']}, load average {machine['load_average']}"
    )
    if "accelerator" in machine:
        line += f"; {machine['accelerator']['name']}"
    return line


def print_table(columns: Sequence[str], rows: Sequence[Sequence], title: str | None = None) -> None:
    """Print rows under their column names, each column as wide as its widest cell."""
    cells = [[str(column) for column in columns]] + [["-" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[index]) for row in cells) for index in range(len(columns))]
    if title:
        print(title)
    for position, row in enumerate(cells):
        print("  ".join(cell.ljust(width) if index == 0 else cell.rjust(width) for index, (cell, width) in enumerate(zip(row, widths))))
        if position == 0:
            print("  ".join("-" * width for width in widths))


# ---------------------------------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, lead_in: float = 0.0
) -> dict[str, list[float]]:
    """Wall-clock seconds of each function, `repeats` times, interleaved (one call of each per round) so that a burst
    of load on the machine hits them all alike; `warmup` untimed rounds first. Untimed calls during `lead_in` seconds
    right before each timed one measure a function as in a loop of calls, not just after another one, whose worker
    threads may still hold the cores (OpenBLAS's spin for a while after each product)."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            until = time.perf_counter() + lead_in
            while time.perf_counter() < until:
                function()
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


class PeakMemory:
    """Peak memory of a code region above its start, in bytes.

    CUDA: `torch.cuda.max_memory_allocated` minus the memory allocated at the start. CPU: the process's resident set
    size high-water mark (`VmHWM`, reset at the start through `/proc/self/clear_refs`) minus the resident size at the
    start; so run each setting in its own process, where the start is "model and batch loaded". Where the reset is
    not possible (not Linux) the lifetime maximum `ru_maxrss` is used and `exact` is False.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.exact = True

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.exact = False
            self.start = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
        else:
            high_water = _status_bytes("VmHWM") if self.exact else None
            if high_water is None:
                self.exact = False
                high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak = high_water - self.start


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def dense_gemm_rate(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a dense `size`^3 matrix product on `device` in `dtype` (median of `repeats`): the reference rate for
    model FLOP utilisation."""
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    second = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)

    def product():
        torch.mm(first, second)
        synchronize(device)

    seconds = median(interleaved_times({"mm": product}, repeats)["mm"])
    return 2 * size**3 / seconds


# ------------------------------------------------------------------------------------------ child processes


def run_child(script: str, spec: dict, timeout: float | None = None) -> dict:
    """Run `python <script> --child '<spec as JSON>'` and return the dict it prints after `RESULT_PREFIX`; a failed
    child gives `{"error": <its last lines of output>}`."""
    command = [sys.executable, script, "--child", json.dumps(spec)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail) or f"exit status {completed.returncode}"}


def child_main(measure: Callable[[dict], dict], spec_json: str) -> int:
    """Entry of a child process: measure one setting, print its result as one JSON line. An exception is reported
    as the setting's error (e.g. an attention implementation this machine cannot run)."""
    spec = json.loads(spec_json)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    try:
        result = measure(spec)
    except Exception as error:  # noqa: BLE001 - any failure is a result of this setting, reported in the table
        result = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def fit_exponent(lengths: Sequence[float], values: Sequence[float], low: float, high: float) -> float | None:
    """Least-squares slope of log(value) on log(length) over the points with low <= length <= high (the growth
    exponent: 1 linear, 2 quadratic); None with fewer than two points."""
    import numpy as np

    points = [(length, value) for length, value in zip(lengths, values) if low <= length <= high and value and value > 0]
    if len(points) < 2:
        return None
    x, y = np.log([point[0] for point in points]), np.log([point[1] for point in points])
    return float(np.polyfit(x, y, 1)[0])


# ---------------------------------------------------------------------------------------- models and batches


def ctal_config(size: str, **overrides):
    """CTALConfig of a benchmark size: the paper's "ctal-base" / "ctal-large" (section 4.1) or "tiny"."""
    from ctal_hf import CTALConfig

    if size == "tiny":
        return CTALConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512, **overrides)
    return CTALConfig.from_preset(size, **overrides)


SIZES = ("tiny", "ctal-base", "ctal-large")
TASKS = ("pretraining", "classification")
NUM_LABELS = 4


def make_batch(batch_size: int, frames: int, tokens: int, vocab_size: int = 30000, seed: int = 0) -> dict:
    """A synthetic batch shared by every model family: token ids `(B, L)` starting with <s> (0), audio frames
    `(B, T, 160)`, no padding; MLM labels at 15% of the tokens (-100 elsewhere), MCAM targets on 15% of the frames,
    class labels `(B,)` in [0, NUM_LABELS)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch_size, tokens), generator=generator)
    input_ids[:, 0] = 0
    audio_features = torch.randn(batch_size, frames, 160, generator=generator)
    token_selected = torch.rand(batch_size, tokens, generator=generator) < 0.15
    token_selected[:, 1] = True  # at least one label per utterance
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones(batch_size, tokens, dtype=torch.long),
        "audio_features": audio_features,
        "audio_attention_mask": torch.ones(batch_size, frames, dtype=torch.long),
        "mlm_labels": torch.where(token_selected, input_ids, -100),
        "frame_mask": (torch.rand(batch_size, frames, generator=generator) < 0.15).long(),
        "class_labels": torch.randint(0, NUM_LABELS, (batch_size,), generator=generator),
    }


@dataclass(frozen=True)
class ModelFamily:
    """How a family is built at a benchmark size and fed the shared batch.

    build(size, task, attn_implementation) -> model; inputs(batch, task, options) -> forward keyword arguments;
    attn_implementations: those it supports; gradient_checkpointing: whether it supports it; description: one line
    for the README (how the size is matched to CTAL's); tasks: the `TASKS` it has a model for.
    """

    build: Callable[[str, str, str], torch.nn.Module]
    inputs: Callable[[dict, str, dict], dict]
    attn_implementations: tuple[str, ...]
    gradient_checkpointing: bool
    description: str
    tasks: tuple[str, ...] = TASKS


def _build_ctal(size: str, task: str, attn: str) -> torch.nn.Module:
    from ctal_hf import CTALForPreTraining, CTALForSequenceClassification

    if task == "pretraining":
        return CTALForPreTraining._from_config(ctal_config(size), attn_implementation=attn)
    return CTALForSequenceClassification._from_config(ctal_config(size, num_labels=NUM_LABELS), attn_implementation=attn)


def _ctal_inputs(batch: dict, task: str, options: dict) -> dict:
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "audio_features", "audio_attention_mask")}
    if task == "classification":
        return {**inputs, "labels": batch["class_labels"]}
    return {
        **inputs,
        "labels": batch["mlm_labels"],
        "mcam_labels": batch["audio_features"],
        "mcam_label_mask": batch["frame_mask"],
        "full_mlm_logits": options.get("full_mlm_logits", False),
    }


def lxmert_config(size: str, task: str):
    """LxmertConfig matched to CTAL at `size`: the same width, heads, FFN and vocabulary, and the same depth per stream
    (N): one language and one "object relationship" (here: audio) layer, then N - 1 cross-modality layers, whose
    parameters are those of two single-stream layers plus one cross-attention (within 5% of CTAL's encoders). Visual
    features are CTAL's 160-dimensional frames; pre-training uses the masked LM and the feature-regression loss (as
    CTAL's MLM + MCAM), classification the QA head with 4 answers."""
    from transformers import LxmertConfig

    reference = ctal_config(size)
    depth = reference.num_hidden_layers
    return LxmertConfig(
        vocab_size=reference.vocab_size,
        hidden_size=reference.hidden_size,
        num_attention_heads=reference.num_attention_heads,
        intermediate_size=reference.intermediate_size,
        l_layers=1,
        r_layers=1,
        x_layers=max(1, depth - 1),
        visual_feat_dim=160,
        task_matched=False,
        task_qa=task == "classification",
        task_obj_predict=task == "pretraining",
        task_mask_lm=task == "pretraining",
        visual_obj_loss=False,
        visual_attr_loss=False,
        visual_feat_loss=True,
        num_qa_labels=NUM_LABELS,
    )


def _build_lxmert(size: str, task: str, attn: str) -> torch.nn.Module:
    from transformers import LxmertForPreTraining, LxmertForQuestionAnswering

    model_class = LxmertForPreTraining if task == "pretraining" else LxmertForQuestionAnswering
    return model_class(lxmert_config(size, task))


def _lxmert_inputs(batch: dict, task: str, options: dict) -> dict:
    batch_size, frames, _ = batch["audio_features"].shape
    start = torch.arange(frames, dtype=torch.float32) / frames
    # One "box" per frame: its span in time (x1, x2) over the full height (y1 = 0, y2 = 1).
    boxes = torch.stack([start, start + 1 / frames, torch.zeros(frames), torch.ones(frames)], dim=-1)
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "visual_feats": batch["audio_features"],
        "visual_pos": boxes.to(batch["audio_features"].device).expand(batch_size, -1, -1),
        "visual_attention_mask": batch["audio_attention_mask"],
    }
    if task == "classification":
        return {**inputs, "labels": batch["class_labels"]}
    return {
        **inputs,
        "labels": batch["mlm_labels"],
        "obj_labels": {"feat": (batch["audio_features"], batch["frame_mask"].float())},
    }


def audio_text_cma_config(size: str):
    """AudioTextCMAConfig matched to CTAL at `size`, with random-weight encoders built from local sub-configs (no
    download): a wav2vec 2.0 speech encoder and a BERT text encoder each with CTAL's width, heads, FFN and depth per
    stream (N layers; CTAL's vocabulary for BERT), wav2vec 2.0's convolutional feature encoder (7 blocks of 512
    channels; of `hidden_size` channels at the tiny size), and the paper's layers above them at their published
    sizes (2 conv blocks, BiLSTM, cross-modal attentions of width 256; section 4)."""
    from transformers import BertConfig, Wav2Vec2Config

    from ctal_hf import AudioTextCMAConfig

    reference = ctal_config(size)
    stack = {
        "hidden_size": reference.hidden_size,
        "num_hidden_layers": reference.num_hidden_layers,
        "num_attention_heads": reference.num_attention_heads,
        "intermediate_size": reference.intermediate_size,
    }
    conv = {} if size != "tiny" else {"conv_dim": (reference.hidden_size,) * 7, "num_conv_pos_embeddings": 16}
    return AudioTextCMAConfig(
        audio_config=Wav2Vec2Config(**stack, **conv),
        text_config=BertConfig(**stack, vocab_size=reference.vocab_size),
        num_labels=NUM_LABELS,
    )


def _build_audio_text_cma(size: str, task: str, attn: str) -> torch.nn.Module:
    from ctal_hf import AudioTextCMAForSequenceClassification

    return AudioTextCMAForSequenceClassification._from_config(audio_text_cma_config(size), attn_implementation=attn)


def _audio_text_cma_inputs(batch: dict, task: str, options: dict) -> dict:
    """The shared batch as this family reads it: its own front-end takes 16 kHz waveforms, so each utterance gets
    noise of the batch's duration (frames x 200 samples, CTAL's 12.5 ms hop), and its tokens go to BERT unchanged
    (ids below both vocabularies' sizes)."""
    batch_size, frames, _ = batch["audio_features"].shape
    samples = frames * 200
    generator = torch.Generator().manual_seed(0)
    waveforms = 0.1 * torch.randn(batch_size, samples, generator=generator)
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "input_values": waveforms.to(batch["audio_features"].device),
        "audio_attention_mask": torch.ones(batch_size, samples, dtype=torch.long, device=batch["audio_features"].device),
        "labels": batch["class_labels"],
    }


# Add a family with one entry here: its builder at a size, and how it takes the shared batch.
FAMILIES: dict[str, ModelFamily] = {
    "ctal": ModelFamily(
        build=_build_ctal,
        inputs=_ctal_inputs,
        attn_implementations=("eager", "sdpa", "blockwise", "flex_attention"),
        gradient_checkpointing=True,
        description="CTALForPreTraining / CTALForSequenceClassification (this package)",
    ),
    "lxmert": ModelFamily(
        build=_build_lxmert,
        inputs=_lxmert_inputs,
        attn_implementations=("eager",),
        gradient_checkpointing=False,
        description=(
            "transformers' LxmertForPreTraining / LxmertForQuestionAnswering, same width and depth per stream "
            "(1 language + 1 audio layer + N-1 cross-modality layers), frames as visual features"
        ),
    ),
    "audio_text_cma": ModelFamily(
        build=_build_audio_text_cma,
        inputs=_audio_text_cma_inputs,
        attn_implementations=("sdpa", "eager"),
        gradient_checkpointing=True,
        description=(
            "AudioTextCMAForSequenceClassification (this package, the second family): random-weight wav2vec 2.0 and "
            "BERT encoders of CTAL's width and depth per stream, waveforms of the same duration as input"
        ),
        tasks=("classification",),
    ),
}


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def parameter_count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


# ------------------------------------------------------------------------------------------------ real data


def demo_manifest(corpus: Path | None) -> Path:
    """`corpus` (a manifest), or the package's demo corpus (espeak-ng speech, built on first use into
    ~/.cache/ctal_hf/demo_corpus or $CTAL_DEMO_CORPUS_DIR)."""
    if corpus is not None:
        if not corpus.is_file():
            raise SystemExit(f"--corpus {corpus}: no such manifest file.")
        return corpus
    from ctal_hf.data.demo_corpus import build_demo_corpus

    return build_demo_corpus()


def corpus_processor(dataset):
    """A CTALProcessor whose tokenizer is trained on the dataset's transcripts (1,000 entries, as the demo recipe)."""
    from ctal_hf import CTALFeatureExtractor, CTALProcessor, train_ctal_tokenizer
    from ctal_hf.models.ctal.tokenization_ctal import iter_transcripts

    tokenizer = train_ctal_tokenizer(iter_transcripts(dataset), vocab_size=1000)
    return CTALProcessor(feature_extractor=CTALFeatureExtractor(), tokenizer=tokenizer)
