"""`pipeline("audio-text-classification")` from a saved folder: scores equal a direct forward, batching, regression,
and the speech-recognition route with a tiny random transformers ASR model."""

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

from ctal_hf import AudioTextClassificationPipeline, CTALConfig, CTALForSequenceClassification, load_audio
from ctal_hf.models.ctal.processing_ctal import processor_for_config
from ctal_hf.models.ctal.tokenization_ctal import train_ctal_tokenizer


SR = 16000
LABELS = ["angry", "happy", "neutral", "sad"]
TEXTS = ["hello there how are you", "the cat sat on a mat", "fine thanks", "you are the cat", "a mat"]


def tiny_config(**overrides) -> CTALConfig:
    values = dict(
        vocab_size=320,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        max_audio_frames=400,
    )
    values.update(overrides)
    return CTALConfig(**values)


def save_model(folder, **overrides):
    words = "hello there how are you fine thanks the cat sat on a mat".split()
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 5
    config = tiny_config(**overrides)
    torch.manual_seed(0)
    CTALForSequenceClassification(config).save_pretrained(folder)
    processor_for_config(train_ctal_tokenizer(corpus, vocab_size=300, min_frequency=1), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return save_model(
        tmp_path_factory.mktemp("classifier"),
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
    )


@pytest.fixture(scope="module")
def regression_dir(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("regressor"), num_labels=1, problem_type="regression")


@pytest.fixture(scope="module")
def wav_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    paths = []
    for index, (seconds, rate) in enumerate([(0.9, 16000), (0.5, 22050), (1.3, 16000), (0.7, 8000), (1.0, 44100)]):
        t = np.arange(int(seconds * rate)) / rate
        samples = 0.3 * np.sin(2 * np.pi * (150 + 60 * index) * t) + 0.02 * rng.standard_normal(t.size)
        path = folder / f"utt{index}.{'flac' if index % 2 else 'wav'}"
        soundfile.write(path, samples, rate)
        paths.append(str(path))
    return paths


def direct_probabilities(folder, audio, texts, sampling_rate=SR):
    """Softmax of the logits of the saved model on the processor's batch, without the pipeline."""
    pipe = pipeline("audio-text-classification", model=str(folder), device="cpu")
    inputs = pipe.processor(
        audio=audio, text=texts, sampling_rate=sampling_rate, padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        return pipe.model(**inputs).logits.softmax(-1).numpy()


def as_dict(scores):
    return {entry["label"]: entry["score"] for entry in scores}


def test_registered_task_matches_a_direct_forward(classifier_dir, wav_files):
    pipe = pipeline("audio-text-classification", model=str(classifier_dir), device="cpu")
    assert isinstance(pipe, AudioTextClassificationPipeline) and pipe.device.type == "cpu"
    expected = direct_probabilities(classifier_dir, wav_files[:1], TEXTS[:1])[0]
    result = pipe({"audio": wav_files[0], "text": TEXTS[0]})
    assert [entry["label"] for entry in result] == [LABELS[i] for i in np.argsort(-expected, kind="stable")]
    np.testing.assert_allclose([entry["score"] for entry in result], np.sort(expected)[::-1], atol=1e-5)
    assert sum(entry["score"] for entry in result) == pytest.approx(1.0, abs=1e-5)
    top = pipe({"audio": wav_files[0], "text": TEXTS[0]}, top_k=2)
    assert top == result[:2]


def test_waveform_inputs_match_the_processor_on_arrays(classifier_dir):
    pipe = pipeline("audio-text-classification", model=str(classifier_dir), device="cpu")
    rate = 22050
    waveform = 0.2 * np.sin(2 * np.pi * 220 * np.arange(int(0.8 * rate)) / rate)
    expected = direct_probabilities(classifier_dir, [waveform], TEXTS[1:2], sampling_rate=rate)[0]
    for audio in (waveform, torch.from_numpy(waveform), waveform.tolist()):
        scores = as_dict(pipe({"audio": audio, "sampling_rate": rate, "text": TEXTS[1]}))
        np.testing.assert_allclose([scores[label] for label in LABELS], expected, atol=1e-5)
    dataset_row = {"audio": {"array": waveform, "sampling_rate": rate}, "text": TEXTS[1]}
    np.testing.assert_allclose([as_dict(pipe(dataset_row))[label] for label in LABELS], expected, atol=1e-5)


def test_batched_equals_one_by_one(classifier_dir, wav_files):
    pipe = pipeline("audio-text-classification", model=str(classifier_dir), device="cpu")
    inputs = [{"audio": path, "text": text} for path, text in zip(wav_files, TEXTS)]
    single = [as_dict(pipe(item)) for item in inputs]
    for batch_size in (1, 2, 5):
        batched = [as_dict(scores) for scores in pipe(inputs, batch_size=batch_size)]
        for one, many in zip(single, batched):
            np.testing.assert_allclose([many[label] for label in LABELS], [one[label] for label in LABELS], atol=1e-5)
    # A padded batch through the processor gives the same probabilities as the pipeline.
    expected = direct_probabilities(classifier_dir, wav_files, TEXTS)
    np.testing.assert_allclose([[scores[label] for label in LABELS] for scores in single], expected, atol=1e-5)


def test_regression_returns_the_predicted_value(regression_dir, wav_files):
    pipe = pipeline("audio-text-classification", model=str(regression_dir), device="cpu")
    inputs = pipe.processor(
        audio=wav_files[:2], text=TEXTS[:2], sampling_rate=SR, padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = pipe.model(**inputs).logits[:, 0].numpy()
    results = pipe([{"audio": path, "text": text} for path, text in zip(wav_files[:2], TEXTS[:2])], batch_size=2)
    assert [set(result) for result in results] == [{"value"}, {"value"}]
    np.testing.assert_allclose([result["value"] for result in results], expected, atol=1e-5)
    with pytest.raises(ValueError, match="this model predicts one value"):
        pipe({"audio": wav_files[0], "text": TEXTS[0]}, top_k=1)


def test_multi_label_scores_are_sigmoids(tmp_path, wav_files):
    folder = save_model(tmp_path, id2label=dict(enumerate(LABELS)), problem_type="multi_label_classification")
    pipe = pipeline("audio-text-classification", model=str(folder), device="cpu")
    inputs = pipe.processor(
        audio=wav_files[:1], text=TEXTS[:1], sampling_rate=SR, padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = pipe.model(**inputs).logits.sigmoid()[0].numpy()
    scores = as_dict(pipe({"audio": wav_files[0], "text": TEXTS[0]}))
    np.testing.assert_allclose([scores[label] for label in LABELS], expected, atol=1e-5)
    assert sum(scores.values()) != pytest.approx(1.0, abs=1e-3), "independent per-label probabilities"


def test_missing_transcript_and_bad_input_are_named(classifier_dir, wav_files):
    pipe = pipeline("audio-text-classification", model=str(classifier_dir), device="cpu")
    with pytest.raises(ValueError, match=r"no transcript \('text'\).*asr_model="):
        pipe({"audio": wav_files[0]})
    with pytest.raises(ValueError, match=r"no transcript"):
        pipe(wav_files[0])
    with pytest.raises(ValueError, match=r"An input dict needs 'audio' \(got keys \['text'\]\)"):
        pipe({"text": "hello"})
    with pytest.raises(ValueError, match=r"Unknown input keys \['transcript'\]"):
        pipe({"audio": wav_files[0], "transcript": "hello"})
    with pytest.raises(ValueError, match="sampling_rate` applies to in-memory waveforms"):
        pipe({"audio": wav_files[0], "text": "hello", "sampling_rate": 8000})
    with pytest.raises(TypeError, match=r"Unknown arguments \['function_to_apply'\]"):
        pipe({"audio": wav_files[0], "text": "hello"}, function_to_apply="none")
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        pipe({"audio": wav_files[0], "text": "hello"}, top_k=0)
    with pytest.raises(FileNotFoundError, match="No audio file"):
        pipe({"audio": "missing.wav", "text": "hello"})
    with pytest.raises(TypeError, match="asr_model must be an automatic-speech-recognition pipeline"):
        pipe(wav_files[0], asr_model=42)


def test_speech_recognition_route(classifier_dir, asr_dir, wav_files):
    asr = pipeline("automatic-speech-recognition", model=str(asr_dir), device="cpu")
    transcripts = [
        asr({"raw": load_audio(path, 8000).astype(np.float32), "sampling_rate": 8000})["text"].strip()
        for path in wav_files[:3]
    ]
    assert all(transcripts), "the tiny recogniser emits a letter per frame"
    expected = direct_probabilities(classifier_dir, wav_files[:3], transcripts)

    # A folder (loaded as a pipeline) at construction, batched; a loaded pipeline at call time.
    pipe = pipeline("audio-text-classification", model=str(classifier_dir), device="cpu", asr_model=str(asr_dir))
    batched = pipe([{"audio": path} for path in wav_files[:3]], batch_size=3)
    one = pipeline("audio-text-classification", model=str(classifier_dir), device="cpu")(wav_files[0], asr_model=asr)
    for result, transcript, probabilities in zip(
        [*batched, one], [*transcripts, transcripts[0]], [*expected, expected[0]]
    ):
        assert set(result) == {"transcript", "scores"} and result["transcript"] == transcript
        np.testing.assert_allclose([as_dict(result["scores"])[label] for label in LABELS], probabilities, atol=1e-5)

    # A given transcript is used as is, even with a recogniser at hand; mixed batches keep each input's form.
    mixed = pipe([{"audio": wav_files[0], "text": TEXTS[0]}, {"audio": wav_files[1]}], batch_size=2)
    assert isinstance(mixed[0], list) and mixed[1]["transcript"] == transcripts[1]


def test_an_empty_asr_transcript_is_named(classifier_dir, asr_dir, wav_files, monkeypatch):
    asr = pipeline("automatic-speech-recognition", model=str(asr_dir), device="cpu")
    monkeypatch.setattr(type(asr), "__call__", lambda self, inputs, **kwargs: {"text": "  "})  # silence
    pipe = pipeline("audio-text-classification", model=str(classifier_dir), device="cpu")
    with pytest.raises(ValueError, match=rf"asr_model heard no words in the audio '.*{Path(wav_files[0]).name}' .* give the "
                       "input's transcript as 'text'"):
        pipe(wav_files[0], asr_model=asr)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu(classifier_dir, wav_files):
    inputs = [{"audio": path, "text": text} for path, text in zip(wav_files, TEXTS)]
    cpu = pipeline("audio-text-classification", model=str(classifier_dir), device="cpu")(inputs, batch_size=5)
    gpu_pipe = pipeline("audio-text-classification", model=str(classifier_dir), device=0)
    assert gpu_pipe.model.device.type == "cuda"
    gpu = gpu_pipe(inputs, batch_size=5)
    for one, other in zip(cpu, gpu):
        np.testing.assert_allclose(
            [as_dict(one)[label] for label in LABELS], [as_dict(other)[label] for label in LABELS], atol=1e-4
        )
