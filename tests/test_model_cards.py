"""The committed Hub cards (model_cards/<preset>/README.md) and the card template they are rendered from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import ModelCard

from ctal_hf import CTALConfig
from ctal_hf.model_card import PAPER_RESULTS, render_model_card, render_published_card, write_model_card


CARDS = Path(__file__).resolve().parents[1] / "model_cards"
PRESETS = ("ctal-base", "ctal-large")


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n"), "a Hub card starts with a YAML header"
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


@pytest.mark.parametrize("name", PRESETS)
def test_committed_card_equals_a_fresh_render(name):
    committed = (CARDS / name / "README.md").read_text(encoding="utf-8")
    assert committed == render_published_card(name), f"model_cards/{name} is stale: run `python -m ctal_hf.model_card`"


@pytest.mark.parametrize("name", PRESETS)
def test_committed_card_metadata(name):
    metadata, body = split_card((CARDS / name / "README.md").read_text(encoding="utf-8"))
    assert metadata["license"] == "apache-2.0"
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "feature-extraction"
    assert "librispeech_asr" in metadata["datasets"]
    assert {"ctal", "audio", "multimodal"} <= set(metadata["tags"])
    (index,) = metadata["model-index"]
    assert index["name"] == name
    reported = {}
    for result in index["results"]:
        assert "paper" in result["source"]["name"].lower() and "not verified" in result["source"]["name"]
        assert result["source"]["url"].startswith("https://aclanthology.org/")
        for metric in result["metrics"]:
            assert metric["verified"] is False
            reported[metric["name"].split()[0]] = metric["value"]
    assert reported == PAPER_RESULTS[name]
    assert {result["dataset"]["type"] for result in index["results"]} == {"iemocap", "cmu_mosei", "librispeech_asr"}
    # huggingface_hub parses it back into the same evaluation results.
    assert len(ModelCard((CARDS / name / "README.md").read_text(encoding="utf-8")).data.eval_results) == 7


@pytest.mark.parametrize("name", PRESETS)
def test_committed_card_sections(name):
    _, body = split_card((CARDS / name / "README.md").read_text(encoding="utf-8"))
    for needle in (
        "## Intended uses and limitations",
        "## How to use",
        "import ctal_hf",
        f'AutoModel.from_pretrained("ctal-hf/{name}")',
        "CTALForSequenceClassification.from_pretrained",
        "how the checkpoint was converted",
        "ctal-convert-original",
        "## Paper vs. released code",
        "audio_causal_self_attention=True",
        "Orthogonal loss",
        'mcam_mode="per_frame"',
        "not verified",
        "@inproceedings{li-etal-2021-ctal",
    ):
        assert needle in body, needle
    architecture = {"ctal-base": "| text | 3 | 12 | 768 | 3072 |", "ctal-large": "| text | 6 | 12 | 768 | 3072 |"}
    assert architecture[name] in body


def test_random_and_pretrained_cards_claim_no_results(tmp_path):
    config = CTALConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    metadata, body = split_card(render_model_card(config, model_name="ctal-large", weights="random"))
    assert "model-index" not in metadata and "random-weights" in metadata["tags"]
    assert "randomly initialised, not pre-trained" in body

    args = SimpleNamespace(learning_rate=5e-5, max_steps=200, per_device_train_batch_size=8, seed=0, hub_model_id=None)
    history = [
        {"loss": 9.0, "step": 10},
        {"loss": 7.5, "step": 200, "learning_rate": 1e-6},
        {"eval_loss": 7.9, "eval_runtime": 3.0, "step": 200},
    ]
    path = write_model_card(
        tmp_path / "ctal-demo", config, dataset="openslr/librispeech_asr", training_args=args, log_history=history
    )
    metadata, body = split_card(path.read_text(encoding="utf-8"))
    assert "model-index" not in metadata and metadata["datasets"] == ["openslr/librispeech_asr"]
    assert "# ctal-demo" in body and "| learning_rate | 5e-05 |" in body
    assert "| loss (step 200) | 7.5 |" in body and "| eval_loss (step 200) | 7.9 |" in body and "runtime" not in body
    # A local or demo corpus is described in the text, not put into the Hub metadata.
    metadata, _ = split_card(render_model_card(config, model_name="x", dataset="demo"))
    assert "datasets" not in metadata


def test_template_rejects_unknown_options():
    config = CTALConfig.from_preset("ctal-base")
    with pytest.raises(ValueError, match="weights"):
        render_model_card(config, model_name="x", weights="finetuned")
    with pytest.raises(ValueError, match="paper_results"):
        render_model_card(config, model_name="x", paper_results="ctal-huge")
