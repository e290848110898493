"""Every benchmark script runs in quick mode, prints its table and writes its JSON result (machine, library versions,
threads, results). Nothing is asserted about speed; the figures of a quick run mean nothing."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"ctal_benchmark_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A manifest of 6 short WAV utterances (tones and noise) by 2 speakers, all in the training split."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    words = ("the old farmer walked home", "a quiet child listened", "her captain opened the door")
    with (folder / "manifest.jsonl").open("w") as manifest:
        for index in range(6):
            seconds = 0.5 + 0.2 * index
            time_axis = np.arange(int(seconds * 16000)) / 16000
            audio = 0.3 * np.sin(2 * np.pi * (150 + 40 * index) * time_axis) + 0.02 * rng.standard_normal(time_axis.size)
            soundfile.write(folder / f"{index}.wav", audio, 16000)
            row = {"audio": f"{index}.wav", "text": words[index % 3], "speaker_id": index % 2, "split": "train"}
            manifest.write(json.dumps(row) + "\n")
    return folder / "manifest.jsonl"


def run_quick(name: str, tmp_path, capsys, *extra) -> tuple[str, dict]:
    threads = torch.get_num_threads()
    output = tmp_path / f"{name}.json"
    assert load(name).main(["--quick", "--threads", "1", "--output", str(output), *extra]) == 0
    assert torch.get_num_threads() == threads  # the script gave the thread setting back
    table = capsys.readouterr().out
    print(table)
    result = json.loads(output.read_text())
    assert result["script"] == name and result["arguments"]["quick"] is True
    machine = result["machine"]
    assert machine["torch_threads"] == 1 and machine["cpu"] and machine["usable_cpus"] >= 1
    assert machine["versions"]["torch"] == torch.__version__.split("+")[0] or machine["versions"]["torch"] == torch.__version__
    assert machine["versions"]["transformers"] and machine["versions"]["ctal_hf"]
    return table, result["results"]


def test_feature_extraction(tmp_path, capsys):
    table, results = run_quick("feature_extraction", tmp_path, capsys)
    names = [row["name"] for row in results["rows"]]
    assert names == [
        "CTALFeatureExtractor (cpu)",
        "CTALFeatureExtractor (cpu), float32 spectra",
        "previous SciPy route (before)",
        "torch.stft route on CPU (before that)",
        "librosa, float64 input",
        "librosa, float32 input",
        "FFT alone, float64 (scipy.fft.rfft)",
        "FFT alone, float32 (scipy.fft.rfft)",
    ]
    assert all(name in table for name in names) and "audio s / wall s" in table
    diffs = {row["name"]: row["diff"] for row in results["rows"]}
    # The routes compute the same features: float64 rounding, float32 spectra's rounding, librosa's.
    assert diffs["previous SciPy route (before)"] <= 1e-5 and diffs["torch.stft route on CPU (before that)"] <= 1e-5
    assert 0 < diffs["CTALFeatureExtractor (cpu), float32 spectra"] <= 5e-4 and diffs["librosa, float64 input"] <= 1e-4


def test_model_step(tmp_path, capsys):
    table, results = run_quick("model_step", tmp_path, capsys)
    rows = {(row["family"], row["task"], row["mode"], row["variant"]): row for row in results["rows"]}
    expected = {
        ("ctal", "pretraining", "train", variant) for variant in ("baseline", "checkpointing", "full-mlm-logits")
    } | {("lxmert", task, mode, "baseline") for task in ("pretraining", "classification") for mode in ("train", "inference")}
    # The second family has no pre-training model: classification only, with gradient checkpointing.
    expected |= {("audio_text_cma", "classification", mode, "baseline") for mode in ("train", "inference")}
    expected |= {("audio_text_cma", "classification", "train", "checkpointing")}
    assert expected <= rows.keys() and not {row for row in rows if row[:2] == ("audio_text_cma", "pretraining")}
    for row in rows.values():
        assert "error" not in row, row
        assert row["samples_per_second"] > 0 and row["peak_bytes"] is not None
    baseline = rows[("ctal", "pretraining", "train", "baseline")]
    assert baseline["flops"] > 0 and 0 < baseline["mfu"] and results["gemm_flops_per_second"]["fp32"] > 0
    # The full MLM projection does more work than the masked-positions path: counted, not timed.
    assert rows[("ctal", "pretraining", "train", "full-mlm-logits")]["flops"] > baseline["flops"]
    assert "Peers on the same batches" in table and "MFU %" in table and "ctal (sdpa) / audio_text_cma (sdpa)" in table
    assert rows[("audio_text_cma", "classification", "train", "baseline")]["flops"] > 0


def test_convolution_backward_flops_count_groups():
    """model_step's count of a convolution's backward pass: each gradient costs the forward product, grouped or not
    (torch's own formula counts a grouped weight gradient as ungrouped)."""
    from torch.utils.flop_counter import FlopCounterMode

    module = load("model_step")
    for groups in (1, 16):
        convolution = torch.nn.Conv1d(64, 64, 8, groups=groups)
        inputs = torch.randn(2, 64, 50, requires_grad=True)
        mapping = {torch.ops.aten.convolution_backward: module.conv_backward_flops}
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            output = convolution(inputs)
            forward = counter.get_total_flops()
            output.sum().backward()
        assert forward == 2 * 2 * 43 * 64 * (64 // groups) * 8  # batch x positions x weights, multiply-adds
        assert counter.get_total_flops() == 3 * forward  # + input and weight gradients


def test_profile_step(tmp_path, capsys):
    table, results = run_quick("profile_step", tmp_path, capsys)
    assert results["top_operators"] and abs(sum(results["category_shares"].values()) - 1) < 1e-6
    assert "matrix product" in results["category_shares"] and "aten::" in table


def test_audio_length(tmp_path, capsys):
    table, results = run_quick("audio_length", tmp_path, capsys)
    assert {(point["attn"], point["frames"]) for point in results["points"]} == {
        (attn, frames) for attn in ("sdpa", "blockwise") for frames in (48, 96, 144)
    }
    assert all("error" not in point for point in results["points"])
    assert set(results["exponents"]) == {"sdpa", "blockwise"} and "exponent" in table
    matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert (tmp_path / "audio_length.png").exists() == matplotlib
    assert ("no plot" in table) != matplotlib


def test_input_pipeline(tmp_path, capsys, corpus):
    table, results = run_quick("input_pipeline", tmp_path, capsys, "--corpus", str(corpus))
    assert {(row["pipeline"], row["workers"]) for row in results["rows"]} == {
        (pipeline, workers) for pipeline in ("pre-training", "fine-tuning") for workers in (0, 1)
    }
    assert all(row["examples_per_second"] > 0 and row["model_examples_per_second"] > 0 for row in results["rows"])


def test_length_grouping(tmp_path, capsys, corpus):
    table, results = run_quick("length_grouping", tmp_path, capsys, "--corpus", str(corpus))
    samplers = results["samplers"]
    assert set(samplers) == {"random", "group_by_length"} and all(row["epoch_seconds"] > 0 for row in samplers.values())
    # Sorted batches of 2 from 6 distinct lengths pad less than (or as little as) random ones: a property of the
    # sampler on this corpus, not a timing.
    assert samplers["group_by_length"]["padded_frame_share"] <= samplers["random"]["padded_frame_share"]


def test_existing_result_file_is_not_overwritten(tmp_path):
    output = tmp_path / "taken.json"
    output.write_text("{}")
    with pytest.raises(SystemExit, match="exists"):
        load("feature_extraction").main(["--quick", "--output", str(output)])
    assert output.read_text() == "{}"


def test_help(capsys):
    for name in ("feature_extraction", "model_step", "profile_step", "audio_length", "input_pipeline", "length_grouping"):
        with pytest.raises(SystemExit) as exit_info:
            load(name).main(["--help"])
        assert exit_info.value.code == 0 and "--quick" in capsys.readouterr().out
