#!/usr/bin/env python
"""Data-efficiency curves (paper Figures 2 and 3): a test metric against the share of training data, for a pre-trained
model and for the same recipe from random weights.

Run the missing runs, then plot (arguments after `--` go to examples/run_classification.py for every run; each run is
`<output_dir>/<series>-<fraction>`, and repeating the command resumes or skips finished runs):
    python examples/plot_data_efficiency.py --output_dir outputs/iemocap-efficiency --pretrained outputs/ctal-large \
        --fractions 0.1,0.2,0.5,1.0 --metric ua -- --dataset /data/IEMOCAP_full_release \
        --cross_validation leave_one_session_out

Only plot runs that exist (every subfolder of --output_dir written by run_classification.py):
    python examples/plot_data_efficiency.py --output_dir outputs/iemocap-efficiency --metric ua

Writes `data_efficiency.png` and `data_efficiency.json` (the points: mean over folds and their standard deviation for
cross-validated runs) into --output_dir. Needs matplotlib (`pip install 'ctal_hf[examples]'`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import run_classification


SERIES = {"pretrained": "pre-trained", "random": "w/o pre-training"}


def run_missing(output_dir: Path, pretrained: str, fractions: list[float], run_arguments: list[str]) -> None:
    """Runs (or resumes) run_classification.py for every series and fraction."""
    for key, model in (("pretrained", ["--model_name_or_path", pretrained]), ("random", ["--config_name", pretrained])):
        for fraction in fractions:
            run_classification.main([*run_arguments, *model, "--train_fraction", str(fraction),
                                     "--output_dir", str(output_dir / f"{key}-{fraction:g}")])


def collect_points(output_dir: Path, metric: str) -> list[dict]:
    """One point per run under `output_dir`: series, training fraction, the test metric (the mean over folds for a
    cross-validated run) and its standard deviation over folds."""
    points = []
    for config_file in sorted(output_dir.glob(f"*/{run_classification.RUN_CONFIG}")):
        run = config_file.parent
        arguments = json.loads(config_file.read_text())["arguments"]
        if (run / "cv_results.json").is_file():
            summary = json.loads((run / "cv_results.json").read_text())
            if summary["folds_missing"]:
                raise ValueError(f"{run} is an unfinished sweep (missing folds {summary['folds_missing']}); finish it "
                                 "by repeating its command, or remove it.")
            values, std, folds = summary["mean"], summary["std"].get(metric), len(summary["folds_finished"])
        elif (run / run_classification.RESULTS).is_file():
            values, std, folds = json.loads((run / run_classification.RESULTS).read_text()).get("test", {}), None, 1
        else:
            raise ValueError(f"{run} has no results yet: finish it by repeating its command, or remove it.")
        if metric not in values:
            raise ValueError(f"{run} has no test metric {metric!r}; it has {sorted(values)}.")
        points.append({
            "run": run.name,
            "series": SERIES["pretrained" if arguments["model_name_or_path"] else "random"],
            "model": arguments["model_name_or_path"] or arguments["config_name"],
            "train_fraction": arguments["train_fraction"],
            "value": values[metric],
            "std": std,
            "folds": folds,
            "model_selection": json.loads(config_file.read_text())["model_selection"],
        })
    if not points:
        raise ValueError(f"No run of examples/run_classification.py under {output_dir}.")
    return sorted(points, key=lambda point: (point["series"], point["train_fraction"]))


def plot(points: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for series in sorted({point["series"] for point in points}):
        rows = [point for point in points if point["series"] == series]
        x = [100 * point["train_fraction"] for point in rows]
        y = [point["value"] for point in rows]
        errors = [point["std"] or 0.0 for point in rows]
        axes.errorbar(x, y, yerr=errors if any(errors) else None, marker="o", capsize=3, label=series)
    axes.set_xlabel("training data used (%)")
    axes.set_ylabel(f"test {metric}" + (" (mean over folds)" if any(point["folds"] > 1 for point in points) else ""))
    selections = sorted({point["model_selection"] for point in points})
    axes.set_title("model selection: " + "; ".join(selections), fontsize=7)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    own, run_arguments = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", "--output-dir", required=True, help="folder of the runs and the plot")
    parser.add_argument("--metric", default="ua", help="test metric to plot (ua, wa, macro_f1, mae, acc2_has0, ...)")
    parser.add_argument("--pretrained", help="the pre-trained model; its config (random weights) is the baseline")
    parser.add_argument("--fractions", default="0.1,0.2,0.5,1.0", help="comma-separated shares of the training data")
    args = parser.parse_args(own)
    output_dir = Path(args.output_dir)
    try:
        import matplotlib  # noqa: F401  (checked before hours of runs, not after)
    except ImportError:
        raise ImportError("The plot needs matplotlib: pip install 'ctal_hf[examples]'.") from None
    if run_arguments:
        if not args.pretrained:
            parser.error("Running needs --pretrained (and the run_classification.py arguments after --).")
        forbidden = {"--output_dir", "--train_fraction", "--model_name_or_path", "--config_name"} & set(run_arguments)
        if forbidden:
            parser.error(f"{sorted(forbidden)} are set per run by this script; drop them after --.")
        fractions = [float(value) for value in args.fractions.split(",") if value.strip()]
        run_missing(output_dir, args.pretrained, fractions, run_arguments)
    points = collect_points(output_dir, args.metric)
    plot(points, args.metric, output_dir / "data_efficiency.png")
    (output_dir / "data_efficiency.json").write_text(json.dumps(points, indent=2) + "\n")
    for point in points:
        spread = f" +- {point['std']:.4f}" if point["std"] is not None else ""
        share = 100 * point["train_fraction"]
        print(f"{point['series']:>18} {share:5.1f}%  {args.metric} {point['value']:.4f}{spread}")
    return points


if __name__ == "__main__":
    main()
