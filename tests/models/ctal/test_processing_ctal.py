"""CTALProcessor: both modalities in one call, limits, decoding, save/load and Auto-class registration."""

import json
import logging

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer

from ctal_hf import CTALConfig, CTALFeatureExtractor, CTALModel, CTALProcessor, CTALTokenizer, train_ctal_tokenizer


SR = 16000
TEXTS = ["Hello there, how are you?", "Fine."]


@pytest.fixture(scope="module")
def processor():
    words = "hello there how are you fine thanks the cat sat on a mat".split()
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 5
    return CTALProcessor(CTALFeatureExtractor(), train_ctal_tokenizer(corpus, vocab_size=320, min_frequency=1))


def make_audio(num_samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SR
    return 0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(num_samples)


def test_keys_shapes_and_masks(processor):
    audio = [make_audio(16000), make_audio(6000)]  # 81 and 31 frames
    batch = processor(audio=audio, text=TEXTS, sampling_rate=SR, return_tensors="pt")
    assert list(batch) == ["input_ids", "attention_mask", "audio_features", "audio_attention_mask"]
    assert processor.model_input_names == ["audio_features", "audio_attention_mask", "input_ids", "attention_mask"]

    text_only = processor.tokenizer(TEXTS)["input_ids"]
    lengths = [len(ids) for ids in text_only]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(-1).tolist() == lengths
    assert batch["input_ids"][1, lengths[1] :].eq(processor.tokenizer.pad_token_id).all()
    assert batch["input_ids"][:, 0].eq(0).all()

    assert batch["audio_features"].shape == (2, 81, 160) and batch["audio_features"].dtype == torch.float32
    assert batch["audio_attention_mask"].sum(-1).tolist() == [81, 31]
    expected = processor.feature_extractor(audio, sampling_rate=SR, return_tensors="pt")["audio_features"]
    torch.testing.assert_close(batch["audio_features"], expected, rtol=0, atol=0)


def test_single_modality_calls(processor):
    audio_only = processor(audio=make_audio(8000), sampling_rate=SR, return_tensors="pt")
    assert list(audio_only) == ["audio_features", "audio_attention_mask"] and audio_only["audio_features"].shape == (
        1,
        41,
        160,
    )
    text_only = processor(text=TEXTS[0], return_tensors="np")
    assert list(text_only) == ["input_ids", "attention_mask"] and text_only["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="Give `audio`, `text` or both"):
        processor()
    with pytest.raises(ValueError, match="Got 2 texts and 1 audio"):
        processor(audio=make_audio(8000), text=TEXTS, sampling_rate=SR)


def test_text_limit(processor, caplog):
    long_text = "hello there " * 400
    with caplog.at_level(logging.WARNING):
        batch = processor(text=[long_text, "fine"], return_tensors="pt")
    assert "Texts [0] have more than 512 tokens" in caplog.text
    assert batch["input_ids"].shape == (2, 512) and batch["input_ids"][0, -1] == processor.tokenizer.eos_token_id
    with pytest.raises(ValueError, match=r"Texts \[0\] have more than max_length=512 tokens"):
        processor(text=[long_text, "fine"], truncation=False)
    assert processor(text="hello there fine", max_length=4)["input_ids"][0][-1] == processor.tokenizer.eos_token_id


def test_audio_limit(processor, caplog):
    audio = [make_audio(16000), make_audio(4000)]
    with caplog.at_level(logging.WARNING):
        batch = processor(audio=audio, sampling_rate=SR, max_audio_frames=40, return_tensors="pt")
    assert "Audio [0] give more than max_length=40 frames" in caplog.text
    assert batch["audio_attention_mask"].sum(-1).tolist() == [40, 21]
    with pytest.raises(ValueError, match=r"Audio \[0\] have more than max_audio_frames=40 frames"):
        processor(audio=audio, sampling_rate=SR, max_audio_frames=40, truncation=False)


def test_max_length_padding(processor):
    batch = processor(
        audio=make_audio(4000), text="fine", sampling_rate=SR, padding="max_length", max_length=16,
        max_audio_frames=64, return_tensors="pt",
    )  # fmt: skip
    assert batch["input_ids"].shape == (1, 16) and batch["audio_features"].shape == (1, 64, 160)


def test_decode(processor):
    ids = processor(text=TEXTS)["input_ids"]
    assert processor.batch_decode(ids, skip_special_tokens=True) == ["hello there how are you ", "fine "]
    assert processor.decode(ids[1]) == "<s>fine </s><pad><pad><pad><pad>"


def test_save_and_load_through_auto_classes(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["processor_class"] == "CTALProcessor"
    audio = [make_audio(9000), make_audio(5000, seed=1)]
    expected = processor(audio=audio, text=TEXTS, sampling_rate=SR, return_tensors="pt")

    def check(loaded):
        assert type(loaded) is CTALProcessor
        assert type(loaded.tokenizer) is CTALTokenizer and type(loaded.feature_extractor) is CTALFeatureExtractor
        outputs = loaded(audio=audio, text=TEXTS, sampling_rate=SR, return_tensors="pt")
        assert outputs.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(outputs[key], expected[key], rtol=0, atol=0)

    check(AutoProcessor.from_pretrained(tmp_path))  # processor files only: processor_class resolves it
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is CTALFeatureExtractor
    assert type(AutoTokenizer.from_pretrained(tmp_path)) is CTALTokenizer
    CTALConfig().save_pretrained(tmp_path)  # a model folder: model_type "ctal" resolves it as well
    check(AutoProcessor.from_pretrained(tmp_path))
    check(CTALProcessor.from_pretrained(tmp_path))


def test_outputs_feed_the_model(processor):
    config = CTALConfig(
        vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    batch = processor(audio=[make_audio(6000), make_audio(3000)], text=TEXTS, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        outputs = CTALModel(config).eval()(**batch)
    assert outputs.text_last_hidden_state.shape[:2] == batch["input_ids"].shape
    assert outputs.audio_last_hidden_state.shape[:2] == batch["audio_features"].shape[:2]


def test_a_2d_audio_array_is_a_batch(processor):
    audio = np.stack([make_audio(8000, seed) for seed in range(4)])  # (batch, samples), not one 4-channel recording
    batch = processor(audio=audio, text=TEXTS * 2, sampling_rate=SR)
    assert batch["audio_features"].shape == (4, 41, 160) and len(batch["input_ids"]) == 4


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"1 transcript empty or not text: text 0 \(''\)"),
        (["Hello there", "   ", None], r"2 transcripts empty or not text: text 1 \('   '\), text 2 \(missing\)"),
    ],
)
def test_empty_transcripts_are_refused(processor, text, message):
    # The training loaders apply the same rule (check_transcripts), see tests/data/test_sources.py.
    with pytest.raises(ValueError, match=message + r".* fill in the text or remove those items"):
        processor(text=text)
