"""The model card of the audio-text cross-modal attention family: metadata, architecture from the config, the paper's
numbers shown as reported (never as results of the weights), usage snippet."""

from __future__ import annotations

import pytest
import yaml
from huggingface_hub import ModelCard
from transformers import BertConfig, Wav2Vec2Config

from ctal_hf import AudioTextCMAConfig
from ctal_hf.training.model_card_audio_text_cma import PAPER, render_audio_text_cma_card, write_audio_text_cma_card


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n"), "a Hub card starts with a YAML header"
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_published_sizes_card():
    card = render_audio_text_cma_card(
        AudioTextCMAConfig(id2label={0: "angry", 1: "happy", 2: "neutral", 3: "sad"}),
        model_name="cma-iemocap",
        repo_id="org/cma-iemocap",
        audio_base_model="facebook/wav2vec2-large-lv60",
        text_base_model="google-bert/bert-base-uncased",
    )
    metadata, body = split_card(card)
    assert metadata["base_model"] == ["facebook/wav2vec2-large-lv60", "google-bert/bert-base-uncased"]
    assert metadata["pipeline_tag"] == "audio-classification" and metadata["license"] == "apache-2.0"
    assert "model-index" not in metadata  # the paper's numbers are not results of these weights
    assert ModelCard(card).data.eval_results is None
    started = "`google-bert/bert-base-uncased` (`from_audio_text_pretrained`). The layers above the encoders were newly"
    assert started in body
    assert "| speech encoder | wav2vec2 | 24 | 16 | 1024 |" in body
    assert "| text encoder | bert | 12 | 12 | 768 |" in body
    assert "256 filters (kernel 3, stride 2), 256 filters (kernel 3, stride 2), then a BiLSTM of 128" in body
    # Counted from the config: the numbers of tests/models/audio_text_cma (426,703,748 and 422,493,572).
    assert "426.7M parameters, 422.5M of them trained" in body
    assert "classifier over 4 labels (angry, happy, neutral, sad)" in body
    assert "1024-dimensional utterance vector" in body and "takes the waveform attention mask" in body
    assert "not reproduced by `ctal_hf`, and not results of these weights" in body
    for row in PAPER["results"]:
        assert f"| {row['table']} | {row['model']} | {row['config']} | {row['ua']:.2%} |" in body
    assert [row["ua"] for row in PAPER["results"]] == [0.7471, 0.7120, 0.6001, 0.7101]
    assert 'AutoModelForSequenceClassification.from_pretrained("org/cma-iemocap")' in body
    assert "arXiv:2108.09669" in body


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_single_modality_and_group_norm_cards(modality, tmp_path):
    audio = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                           conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), feat_extract_norm="group")
    text = BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    config = AudioTextCMAConfig(audio_config=audio, text_config=text, hidden_size=16, num_attention_heads=2,
                                modality_outputs=modality, freeze_pretrained_encoders=True)
    path = write_audio_text_cma_card(tmp_path / "run", config, dataset="my/emotions")
    metadata, body = split_card(path.read_text(encoding="utf-8"))
    assert metadata["datasets"] == ["my/emotions"] and "base_model" not in metadata
    assert "# run" in body and 'from_pretrained("' + str(tmp_path / "run") + '")' in body
    assert "32-dimensional utterance vector" in body and "CMA-1" not in body.split("## Results")[0]
    assert "both pre-trained encoders are frozen" in body
    fine_tuned = "The layers above the encoders were newly initialised and the model was fine-tuned on `my/emotions`."
    assert f"\n{fine_tuned}" in body
    if modality == "audio":
        assert "| speech encoder | wav2vec2 |" in body and "| text encoder |" not in body
        assert "gets no attention mask" in body
    else:
        assert "| text encoder | bert |" in body and "| speech encoder |" not in body
