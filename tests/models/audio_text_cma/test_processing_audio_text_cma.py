"""AudioTextCMAProcessor: both modalities in one call with separately named masks, files and arrays alike, limits,
save/load through the Auto classes, and outputs that feed the model (a padded batch equals each utterance alone)."""

import json
import logging

import numpy as np
import pytest
import soundfile
import torch
from transformers import AutoProcessor, BertTokenizer, Wav2Vec2FeatureExtractor, pipeline

from ctal_hf import AudioTextCMAConfig, AudioTextCMAForSequenceClassification, AudioTextCMAProcessor, load_audio
from test_modeling_audio_text_cma import tiny_audio_config, tiny_text_config


SR = 16000
TEXTS = ["Hello there, how are you?", "Fine."]
WORDS = "hello there how are you fine thanks the cat sat on a mat".split()


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    """A wav2vec2 feature extractor and a tiny BERT tokenizer read from a WordPiece vocab file written here."""
    folder = tmp_path_factory.mktemp("tokenizer")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", ",", "?", "."]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer.from_pretrained(folder, model_max_length=32)
    return AudioTextCMAProcessor(Wav2Vec2FeatureExtractor(return_attention_mask=True), tokenizer)


def make_audio(num_samples: int, seed: int = 0, rate: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / rate
    return 0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(num_samples)


def normalised(waveform: np.ndarray) -> np.ndarray:
    """wav2vec2's per-utterance zero-mean unit-variance normalisation, in float32 as its feature extractor does."""
    waveform = waveform.astype(np.float32)
    return (waveform - waveform.mean()) / np.sqrt(waveform.var() + 1e-7)


def test_keys_shapes_and_separate_masks(processor):
    audio = [make_audio(16000), make_audio(6000, seed=1)]
    # The short text goes with the long audio: a merged mask would show it.
    batch = processor(audio=audio, text=["fine", "hello there how are you"], sampling_rate=SR, return_tensors="pt")
    assert list(batch) == ["input_ids", "attention_mask", "input_values", "audio_attention_mask"]
    assert processor.model_input_names == list(batch)
    assert batch["input_ids"].shape == (2, 7) and batch["attention_mask"].sum(-1).tolist() == [3, 7]
    assert batch["input_ids"][0].tolist() == [2, 10, 3, 0, 0, 0, 0]  # [CLS] fine [SEP] [PAD]...
    assert batch["input_values"].shape == (2, 16000) and batch["input_values"].dtype == torch.float32
    assert batch["audio_attention_mask"].sum(-1).tolist() == [16000, 6000]
    for row, waveform in enumerate(audio):
        torch.testing.assert_close(batch["input_values"][row, : len(waveform)], torch.from_numpy(normalised(waveform)))
    assert batch["input_values"][1, 6000:].eq(0).all()
    expected = processor.feature_extractor(audio, sampling_rate=SR, padding=True, return_tensors="pt")
    torch.testing.assert_close(batch["input_values"], expected["input_values"], rtol=0, atol=0)


def test_files_decode_like_arrays_and_are_resampled(processor, tmp_path):
    waveform = make_audio(12000)
    soundfile.write(tmp_path / "a.wav", waveform, SR, subtype="FLOAT")
    soundfile.write(tmp_path / "b.flac", make_audio(4000, seed=2, rate=8000), 8000)
    from_files = processor(audio=[str(tmp_path / "a.wav"), tmp_path / "b.flac"], text=TEXTS, return_tensors="pt")
    from_arrays = processor(
        audio=[waveform, load_audio(tmp_path / "b.flac")], text=TEXTS, sampling_rate=SR, return_tensors="pt"
    )
    assert from_files["audio_attention_mask"].sum(-1).tolist() == [12000, 8000]  # 0.5 s at 8 kHz -> 8000 samples
    for key in from_arrays:
        torch.testing.assert_close(from_files[key], from_arrays[key], rtol=0, atol=0)
    resampled = processor(audio=make_audio(4000, seed=2, rate=8000), sampling_rate=8000, return_tensors="pt")
    assert resampled["input_values"].shape == (1, 8000)


def test_single_modality_calls_and_errors(processor):
    audio_only = processor(audio=make_audio(8000), sampling_rate=SR, return_tensors="pt")
    assert list(audio_only) == ["input_values", "audio_attention_mask"]
    assert audio_only["input_values"].shape == (1, 8000)
    text_only = processor(text=TEXTS[0], return_tensors="np")
    assert list(text_only) == ["input_ids", "attention_mask"] and text_only["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="Give `audio`, `text` or both"):
        processor()
    with pytest.raises(ValueError, match="Got 2 texts and 1 audio"):
        processor(audio=make_audio(8000), text=TEXTS, sampling_rate=SR)
    with pytest.raises(ValueError, match="`sampling_rate` is required"):
        processor(audio=make_audio(8000))
    with pytest.raises(ValueError, match="integer PCM"):
        processor(audio=(make_audio(8000) * 32767).astype(np.int16), sampling_rate=SR)
    with pytest.raises(FileNotFoundError, match="No audio file"):
        processor(audio="missing.wav")
    with pytest.raises(ValueError, match=r"1 transcript empty or not text: text 0 \(''\)"):
        processor(text=["", "fine"])


def test_text_and_audio_limits(processor, caplog):
    long_text = "hello there " * 40
    with caplog.at_level(logging.WARNING):
        batch = processor(text=[long_text, "fine"], return_tensors="pt")
    assert "Texts [0] have more than 32 tokens" in caplog.text
    assert batch["input_ids"].shape == (2, 32) and batch["input_ids"][0, -1] == processor.tokenizer.sep_token_id
    with pytest.raises(ValueError, match=r"Texts \[0\] have more than max_length=32 tokens"):
        processor(text=[long_text, "fine"], truncation=False)

    audio = [make_audio(16000), make_audio(4000)]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        batch = processor(audio=audio, sampling_rate=SR, max_audio_samples=8000, return_tensors="pt")
    assert "Audio [0] have more than 8000 samples (0.5 s)" in caplog.text
    assert batch["audio_attention_mask"].sum(-1).tolist() == [8000, 4000]
    torch.testing.assert_close(batch["input_values"][0], torch.from_numpy(normalised(audio[0][:8000])))
    with pytest.raises(ValueError, match=r"Audio \[0\] have more than max_audio_samples=8000 samples"):
        processor(audio=audio, sampling_rate=SR, max_audio_samples=8000, truncation=False)
    padded = processor(audio=audio[1], text="fine", sampling_rate=SR, padding="max_length", max_length=16,
                       max_audio_samples=8000, return_tensors="pt")
    assert padded["input_ids"].shape == (1, 16) and padded["input_values"].shape == (1, 8000)


def test_from_audio_text_pretrained(processor, tmp_path):
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(tmp_path / "speech")
    processor.tokenizer.save_pretrained(tmp_path / "text")
    built = AudioTextCMAProcessor.from_audio_text_pretrained(str(tmp_path / "speech"), str(tmp_path / "text"))
    assert type(built.feature_extractor) is Wav2Vec2FeatureExtractor and built.feature_extractor.return_attention_mask
    assert type(built.tokenizer) is BertTokenizer and built.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    audio = [make_audio(9000), make_audio(5000, seed=1)]
    expected = processor(audio=audio, text=TEXTS, sampling_rate=SR, return_tensors="pt")
    outputs = built(audio=audio, text=TEXTS, sampling_rate=SR, return_tensors="pt")
    for key in expected:
        torch.testing.assert_close(outputs[key], expected[key], rtol=0, atol=0)
    with pytest.raises(TypeError, match="prefix them with `audio_` or `text_`"):
        AudioTextCMAProcessor.from_audio_text_pretrained(str(tmp_path / "speech"), str(tmp_path / "text"), revision="x")


def test_decode(processor):
    ids = processor(text=TEXTS)["input_ids"]
    assert processor.batch_decode(ids, skip_special_tokens=True) == ["hello there, how are you?", "fine."]


def test_save_and_load_through_auto_processor(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["processor_class"] == "AudioTextCMAProcessor"
    audio = [make_audio(9000), make_audio(5000, seed=1)]
    expected = processor(audio=audio, text=TEXTS, sampling_rate=SR, return_tensors="pt")

    def check(loaded):
        assert type(loaded) is AudioTextCMAProcessor
        assert type(loaded.feature_extractor) is Wav2Vec2FeatureExtractor and type(loaded.tokenizer) is BertTokenizer
        assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
        outputs = loaded(audio=audio, text=TEXTS, sampling_rate=SR, return_tensors="pt")
        assert outputs.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(outputs[key], expected[key], rtol=0, atol=0)

    check(AutoProcessor.from_pretrained(tmp_path))
    AudioTextCMAConfig().save_pretrained(tmp_path)  # a model folder: model_type "audio_text_cma" resolves it too
    check(AutoProcessor.from_pretrained(tmp_path))
    check(AudioTextCMAProcessor.from_pretrained(tmp_path))


def test_outputs_feed_the_model_and_a_batch_equals_each_utterance(processor):
    text_config = tiny_text_config()
    text_config.vocab_size = len(processor.tokenizer)
    torch.manual_seed(0)
    model = AudioTextCMAForSequenceClassification(
        AudioTextCMAConfig(audio_config=tiny_audio_config(), text_config=text_config, hidden_size=16,
                           num_attention_heads=4, intermediate_size=16, conv_dim=(16, 16), num_labels=2)
    ).eval()
    audio = [make_audio(7000), make_audio(3100, seed=1), make_audio(5000, seed=2)]
    texts = ["fine", "hello there how are you", "the cat sat"]
    with torch.no_grad():
        batched = model(**processor(audio=audio, text=texts, sampling_rate=SR, return_tensors="pt")).logits
        alone = torch.cat([
            model(**processor(audio=clip, text=text, sampling_rate=SR, return_tensors="pt")).logits
            for clip, text in zip(audio, texts)
        ])  # fmt: skip
    torch.testing.assert_close(alone, batched, rtol=0, atol=1e-5)


def test_saved_folder_runs_in_the_audio_text_classification_pipeline(processor, tmp_path):
    """The folder `save_pretrained` writes (model + processor) is all `pipeline("audio-text-classification")` needs;
    its scores are the softmax of a direct forward, batched or not."""
    text_config = tiny_text_config()
    text_config.vocab_size = len(processor.tokenizer)
    labels = ["angry", "happy", "neutral", "sad"]
    torch.manual_seed(0)
    model = AudioTextCMAForSequenceClassification(
        AudioTextCMAConfig(audio_config=tiny_audio_config(), text_config=text_config, hidden_size=16,
                           num_attention_heads=4, intermediate_size=16, conv_dim=(16, 16),
                           id2label=dict(enumerate(labels)))
    ).eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    audio = [make_audio(7000), make_audio(3100, seed=1), make_audio(5000, seed=2)]
    texts = ["fine", "hello there how are you", "the cat sat"]
    with torch.no_grad():
        batch = processor(audio=audio, text=texts, sampling_rate=SR, return_tensors="pt")
        expected = model(**batch).logits.softmax(-1)

    pipe = pipeline("audio-text-classification", model=str(tmp_path), device="cpu")
    assert type(pipe.model) is AudioTextCMAForSequenceClassification and type(pipe.processor) is AudioTextCMAProcessor
    inputs = [{"audio": clip, "sampling_rate": SR, "text": text} for clip, text in zip(audio, texts)]
    for results in ([pipe(item) for item in inputs], pipe(inputs, batch_size=3)):
        by_label = [{entry["label"]: entry["score"] for entry in result} for result in results]
        scores = [[result[label] for label in labels] for result in by_label]
        np.testing.assert_allclose(scores, expected.numpy(), rtol=0, atol=1e-5)
