"""examples/plot_data_efficiency.py end to end: runs at two training fractions, pre-trained and from random weights,
then the plot and its points."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest


ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
import plot_data_efficiency  # noqa: E402


FAST = ["--max_steps", "2", "--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "2",
        "--save_steps", "2", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
        "--report_to", "none", "--disable_tqdm", "true", "--plot_confusion_matrix", "false"]


def test_runs_both_series_then_plots(iemocap_tree, tiny_ctal_checkpoint, tmp_path):
    _, expected = iemocap_tree
    kept = [value for value in expected.values() if value["emotion"] in ("neu", "ang")]
    rows = [{"audio": str(value["path"]), "text": value["text"], "label": value["emotion"],
             "split": "test" if value["session"] == "Session5" else "train",
             "speaker_id": value["speaker"]} for value in kept]
    pd.DataFrame(rows).to_json(tmp_path / "data.jsonl", orient="records", lines=True)
    output_dir = tmp_path / "efficiency"
    arguments = ["--output_dir", str(output_dir), "--pretrained", str(tiny_ctal_checkpoint), "--fractions", "0.5,1",
                 "--metric", "ua", "--", "--dataset", str(tmp_path / "data.jsonl"), "--train_split", "train",
                 "--test_split", "test", *FAST]
    points = plot_data_efficiency.main(arguments)
    assert [(point["series"], point["train_fraction"]) for point in points] == [
        ("pre-trained", 0.5), ("pre-trained", 1.0), ("w/o pre-training", 0.5), ("w/o pre-training", 1.0)]
    for point in points:
        results = json.loads((output_dir / point["run"] / "results.json").read_text())
        assert point["value"] == results["test"]["ua"]
        # Half of the 32 training rows minus the 4 of the validation speaker (1 of 8), stratified by class.
        assert results["sizes"]["train"] == (14 if point["train_fraction"] == 0.5 else 28)
    assert (output_dir / "data_efficiency.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((output_dir / "data_efficiency.json").read_text()) == points
    # Repeated, every run is finished: nothing is trained again and the same points come back.
    mtimes = {path: path.stat().st_mtime_ns for path in output_dir.glob("*/results.json")}
    assert plot_data_efficiency.main(arguments) == points
    assert {path: path.stat().st_mtime_ns for path in output_dir.glob("*/results.json")} == mtimes


def test_plot_only_needs_finished_runs(tmp_path):
    with pytest.raises(ValueError, match="No run of examples/run_classification.py"):
        plot_data_efficiency.main(["--output_dir", str(tmp_path)])
    (tmp_path / "pretrained-0.5").mkdir()
    (tmp_path / "pretrained-0.5" / "run_config.json").write_text(json.dumps({"arguments": {}, "model_selection": "x"}))
    with pytest.raises(ValueError, match="has no results yet"):
        plot_data_efficiency.main(["--output_dir", str(tmp_path)])
