"""The committed Hub cards (model_cards/<preset>/README.md) and the card template they are rendered from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import ModelCard
from transformers import TrainerState

from ctal_hf import CTALConfig
from ctal_hf.training.model_card import (
    PAPER_RESULTS,
    paper_vs_code_table,
    render_model_card,
    render_published_card,
    write_model_card,
)


CARDS = Path(__file__).resolve().parents[2] / "model_cards"
PRESETS = ("ctal-base", "ctal-large")


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n"), "a Hub card starts with a YAML header"
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


@pytest.mark.parametrize("name", PRESETS)
def test_committed_card_equals_a_fresh_render(name):
    committed = (CARDS / name / "README.md").read_text(encoding="utf-8")
    assert committed == render_published_card(name), f"model_cards/{name} is stale: run `python -m ctal_hf.training.model_card`"


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
        "labels = torch.tensor([0])",
        "follow the paper's sizes",
        "named, and compared with the paper, by the number of layers it has",
        "not a measurement of these weights",
        "the MLM decoder was checked to be the word embeddings",
        "how the checkpoint was converted",
        "ctal-convert-original",
        "## Paper vs. released code",
        "audio_causal_self_attention=True",
        "Orthogonal loss",
        'mcam_mode="per_frame"',
        'classifier_head="original_code"',
        'This config: `audio_causal_self_attention=True`, `classifier_head="paper"`',
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

    args = SimpleNamespace(learning_rate=5e-5, max_steps=200, num_train_epochs=3.0, per_device_train_batch_size=8,
                           seed=0, hub_model_id=None)
    history = [
        {"loss": 9.0, "step": 10},
        {"loss": 7.5, "step": 200, "learning_rate": 1e-6},
        {"eval_loss": 7.9, "eval_runtime": 3.0, "step": 200},
    ]
    state = TrainerState(global_step=200, epoch=17.6, log_history=history)
    path = write_model_card(
        tmp_path / "ctal-demo", config, dataset="openslr/librispeech_asr", training_args=args, trainer_state=state
    )
    metadata, body = split_card(path.read_text(encoding="utf-8"))
    assert "model-index" not in metadata and metadata["datasets"] == ["openslr/librispeech_asr"]
    assert "base_model" not in metadata and "Pre-trained from scratch" in body
    assert "# ctal-demo" in body and "| learning_rate | 5e-05 |" in body
    assert "| loss (step 200) | 7.5 |" in body and "| eval_loss (step 200) | 7.9 |" in body and "runtime" not in body
    # The epochs actually run, not the num_train_epochs that max_steps overrode.
    assert "Trained for 200 optimizer steps (17.60 epochs" in body and "num_train_epochs" not in body
    # A local or demo corpus is described in the text, not put into the Hub metadata.
    metadata, _ = split_card(render_model_card(config, model_name="x", dataset="demo"))
    assert "datasets" not in metadata


def test_snippets_load_the_output_dir_as_given_or_the_hub_repository(tmp_path, monkeypatch):
    config = CTALConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    monkeypatch.chdir(tmp_path)
    _, body = split_card(write_model_card("outputs/ctal-demo", config).read_text(encoding="utf-8"))
    assert "# ctal-demo" in body
    assert 'AutoModel.from_pretrained("outputs/ctal-demo")' in body and '"ctal-demo"' not in body
    assert 'CTALForSequenceClassification.from_pretrained("outputs/ctal-demo", num_labels=4)' in body
    _, body = split_card(write_model_card("outputs/ctal-demo", config, repo_id="me/ctal-demo").read_text())
    assert 'AutoModel.from_pretrained("me/ctal-demo")' in body and '"outputs/ctal-demo"' not in body


def test_continued_pretraining_names_its_base_model(tmp_path):
    config = CTALConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    args = SimpleNamespace(learning_rate=5e-5, max_steps=10)
    metadata, body = split_card(
        write_model_card(tmp_path / "out", config, training_args=args, base_model="ctal-hf/ctal-base").read_text()
    )
    assert metadata["base_model"] == "ctal-hf/ctal-base"
    assert "Continued pre-training from `ctal-hf/ctal-base`" in body and "from scratch" not in body
    # A local folder is named in the text only: the Hub metadata takes repository ids.
    metadata, body = split_card(
        write_model_card(tmp_path / "again", config, training_args=args, base_model=str(tmp_path / "out")).read_text()
    )
    assert "base_model" not in metadata and f"Continued pre-training from `{tmp_path / 'out'}`" in body


def test_converted_card_describes_the_conversion_settings():
    config = CTALConfig.from_preset("ctal-base", audio_causal_self_attention=False, tie_word_embeddings=False)
    _, body = split_card(render_model_card(config, model_name="ctal-base", weights="converted"))
    assert "--no-audio_causal_self_attention --verify" in body
    assert "`audio_causal_self_attention=False` (converted with `--no-audio_causal_self_attention`)" in body
    assert "because the released code's audio stack was causal" not in body
    assert "kept as a weight of its own (`tie_word_embeddings=False`)" in body and "stays tied" not in body


def test_template_rejects_unknown_options():
    config = CTALConfig.from_preset("ctal-base")
    with pytest.raises(ValueError, match="weights"):
        render_model_card(config, model_name="x", weights="finetuned")
    with pytest.raises(ValueError, match="paper_results"):
        render_model_card(config, model_name="x", paper_results="ctal-huge")


def test_readme_paper_vs_code_table_is_the_rendered_one():
    """README.md states the paper-vs-code table once; it must be the table every card renders."""
    readme = (CARDS.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Paper vs. released code", 1)[1].split("\n#", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert table == paper_vs_code_table()
    assert paper_vs_code_table() in render_published_card("ctal-base")
