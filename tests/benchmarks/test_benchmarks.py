"""The feature-extraction benchmark runs (quick mode) and prints its table; nothing is asserted about speed."""

import importlib.util
from pathlib import Path

import pytest


SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "feature_extraction.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("ctal_feature_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_feature_extraction_benchmark_quick(benchmark, capsys):
    assert benchmark.main(["--quick"]) == 0
    table = capsys.readouterr().out
    print(table)
    rows = [line for line in table.splitlines() if line.startswith(("CTALFeatureExtractor", "librosa"))]
    assert len(rows) == 3 and "audio s / wall s" in table and "max |diff| vs CTAL" in table
    float64_diff = float(rows[1].split()[-1])
    assert float64_diff <= 1e-4  # same features as librosa on float64 input


def test_feature_extraction_benchmark_help(benchmark, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--help"])
    assert exit_info.value.code == 0 and "--quick" in capsys.readouterr().out
