"""Tests of ctal_hf.data.features: length column, feature transform (on the fly, streamed, cached), unreadable audio."""

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
from conftest import synthetic_audio

from ctal_hf.audio import AudioDecodeError, load_audio
from ctal_hf.data.collator import DataCollatorForCTALPretraining
from ctal_hf.data.features import CTALFeatureTransform, add_length_column, precompute_features
from ctal_hf.data.sources import load_speech_dataset
from ctal_hf.models.ctal.feature_extraction_ctal import CTALFeatureExtractor
from ctal_hf.models.ctal.processing_ctal import CTALProcessor
from ctal_hf.models.ctal.tokenization_ctal import train_ctal_tokenizer


@pytest.fixture(scope="module")
def processor(corpus):
    _, expected = corpus
    tokenizer = train_ctal_tokenizer([row["text"] for row in expected.values()] * 3, vocab_size=300)
    return CTALProcessor(CTALFeatureExtractor(), tokenizer)


def test_length_column_matches_features(corpus, processor):
    root, _ = corpus
    dataset = add_length_column(load_speech_dataset(root), processor)
    features = CTALFeatureTransform(processor)(dataset[:])
    assert dataset["length"] == features["length"] == [len(frames) for frames in features["audio_features"]]
    stream = add_length_column(load_speech_dataset(root, streaming=True), processor)
    assert [row["length"] for row in stream] == dataset["length"]
    # Truncation limits reach the processor and the length column alike.
    capped = add_length_column(load_speech_dataset(root), processor, max_audio_frames=60)
    truncated = CTALFeatureTransform(processor, max_text_length=4, max_audio_frames=60)(capped[:])
    assert capped["length"] == truncated["length"] == [min(length, 60) for length in dataset["length"]]
    assert max(len(ids) for ids in truncated["input_ids"]) == 4


def test_transform_outputs_unpadded_features(corpus, processor):
    root, _ = corpus
    dataset = load_speech_dataset(root)
    transform = CTALFeatureTransform(processor, keep_columns=("speaker_id",))
    batch = transform(dataset[:])
    reference = processor(audio=[load_audio(path) for path in dataset["audio"]], text=dataset["text"],
                          sampling_rate=16000, return_tensors="np")
    for index in range(len(dataset)):
        ids = batch["input_ids"][index]
        assert ids[0] == 0 and ids[-1] == 2 and 1 not in ids  # <s> ... </s>, no padding
        np.testing.assert_array_equal(ids, reference["input_ids"][index][reference["attention_mask"][index] == 1])
        frames = batch["audio_features"][index]
        assert frames.shape == (batch["length"][index], 160) and frames.dtype == np.float32
        np.testing.assert_array_equal(frames, reference["audio_features"][index][: len(frames)])
    assert batch["speaker_id"] == dataset["speaker_id"]
    # The same rows on the fly, through with_transform and a streamed map.
    on_the_fly = dataset.with_transform(transform)
    np.testing.assert_array_equal(on_the_fly[3]["audio_features"], batch["audio_features"][3])
    stream = load_speech_dataset(root, streaming=True).map(transform, batched=True, batch_size=4,
                                                           remove_columns=["id", "audio", "text", "chapter_id"])
    assert [row["length"] for row in stream] == batch["length"]


def test_transform_features_equal_processor_features_of_the_file(corpus, processor, tmp_path):
    # One decoder for both routes: training (CTALFeatureTransform on a dataset row) and inference
    # (processor(audio=path)) give the same features, also for audio that needs down-mixing and resampling.
    root, expected = corpus
    rate = 44100
    time = np.arange(int(0.9 * rate)) / rate
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 330 * time), 0.2 * np.sin(2 * np.pi * 2100 * time)], axis=1)
    stereo_path = tmp_path / "stereo_44k.wav"  # float64 samples: a float32 decoder would round them
    soundfile.write(stereo_path, stereo + 0.01 * np.random.default_rng(0).standard_normal(stereo.shape), rate,
                    subtype="DOUBLE")
    paths = [str(stereo_path), str(next(iter(expected.values()))["path"])]
    texts = ["THE OLD MILL", "QUIET MORNING"]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"audio": path, "text": text}) + "\n" for path, text in zip(paths, texts)))
    dataset = load_speech_dataset(manifest)
    for rows in (dataset[:], {"audio": [{"path": None, "bytes": Path(path).read_bytes()} for path in paths],
                              "text": texts}):
        batch = CTALFeatureTransform(processor)(rows)
        for index, path in enumerate(paths):
            reference = processor(audio=[path], return_tensors="np")["audio_features"][0]
            np.testing.assert_array_equal(batch["audio_features"][index], reference)


def test_length_column_can_drop_long_audio(corpus, processor, caplog):
    # Pre-training drops what does not fit (the original code), fine-tuning truncates it.
    root, _ = corpus
    full = add_length_column(load_speech_dataset(root), processor)["length"]
    limit = sorted(full)[2]
    with caplog.at_level(logging.WARNING):
        kept = add_length_column(load_speech_dataset(root), processor, max_audio_frames=limit, drop_longer=True)
    assert kept["length"] == [length for length in full if length <= limit]
    longer = sum(length > limit for length in full)
    assert f"Dropped {longer} of {len(full)} rows with more than max_audio_frames={limit} frames" in caplog.text
    stream = add_length_column(load_speech_dataset(root, streaming=True), processor, max_audio_frames=limit,
                               drop_longer=True)
    assert [row["length"] for row in stream] == kept["length"]
    truncated = add_length_column(load_speech_dataset(root), processor, max_audio_frames=limit)
    assert truncated["length"] == [min(length, limit) for length in full]


def test_unreadable_audio_in_transform_and_lengths(corpus, processor, tmp_path, caplog):
    root, expected = corpus
    (tmp_path / "corrupt.flac").write_bytes(b"garbage" * 100)
    soundfile.write(tmp_path / "short.flac", np.zeros(400, dtype=np.float32), 16000)  # < one 800-sample window
    good = [str(row["path"]) for row in expected.values()][:3]
    manifest = tmp_path / "manifest.jsonl"
    rows = [{"audio": path, "text": "HELLO"} for path in [good[0], "corrupt.flac", good[1], "short.flac", good[2]]]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_speech_dataset(manifest)

    # The hint is spelled as typed on the command line (run_pretraining.py), then for Python.
    hint = r"Fix or remove the file, or pass --skip_unreadable \(skip_unreadable=True in Python\)"
    with pytest.raises(AudioDecodeError, match=rf"soundfile cannot decode audio '.*corrupt\.flac' .*\. {hint}"):
        CTALFeatureTransform(processor)(dataset[:])
    with pytest.raises(AudioDecodeError, match=rf"short\.flac' is unusable: 400 samples.*{hint}"):
        add_length_column(dataset.select([3]), processor)
    samples = synthetic_audio(0, 0.5).astype(np.float64)
    samples[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", samples, 16000, subtype="DOUBLE")
    nan_row = {"audio": [str(tmp_path / "nan.wav")], "text": ["HELLO"]}
    with pytest.raises(AudioDecodeError, match=rf"nan\.wav' contains NaN or infinite samples \(first at sample 100\)\. {hint}"):
        CTALFeatureTransform(processor)(nan_row)
    assert CTALFeatureTransform(processor, skip_unreadable=True)(nan_row)["input_ids"] == []
    gone = datasets.Dataset.from_dict({"audio": [str(tmp_path / "gone.flac")], "text": ["HELLO"]})
    with pytest.raises(FileNotFoundError, match=rf"No audio file at '.*gone\.flac'\. {hint}"):
        add_length_column(gone, processor)
    with caplog.at_level(logging.WARNING):
        batch = CTALFeatureTransform(processor, skip_unreadable=True)(dataset[:])
        assert len(batch["input_ids"]) == len(batch["length"]) == 3
        readable = add_length_column(dataset, processor, skip_unreadable=True)
    assert readable["audio"] == good
    assert "Skipped 2 of 5 rows" in caplog.text and "corrupt.flac" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        featurised = precompute_features(dataset, CTALFeatureTransform(processor, skip_unreadable=True),
                                         cache_dir=tmp_path / "cache")
    assert len(featurised) == 3 and "Skipped 2 of 5 rows" in caplog.text

    # A collator with the transform batches what is left.
    collator = DataCollatorForCTALPretraining(processor.tokenizer, feature_transform=CTALFeatureTransform(
        processor, skip_unreadable=True), seed=0)
    assert collator([dataset[index] for index in range(5)])["input_ids"].shape[0] == 3


def test_precompute_features_is_cached(corpus, processor, tmp_path):
    root, _ = corpus
    dataset = load_speech_dataset(root)
    transform = CTALFeatureTransform(processor)
    cached = precompute_features(dataset, transform, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.arrow"))) == 1
    expected = transform(dataset[:])
    assert cached[:]["length"].tolist() == expected["length"]
    np.testing.assert_array_equal(cached[2]["audio_features"], expected["audio_features"][2])
    np.testing.assert_array_equal(cached[2]["input_ids"], expected["input_ids"][2])
    again = precompute_features(load_speech_dataset(root), CTALFeatureTransform(processor), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.arrow"))) == 1 and again.cache_files == cached.cache_files
    other = precompute_features(dataset, CTALFeatureTransform(processor, keep_columns=("speaker_id",)),
                                cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.arrow"))) == 2 and other[:]["speaker_id"].tolist() == dataset["speaker_id"]
    batch = DataCollatorForCTALPretraining(processor.tokenizer, seed=0)([cached[index] for index in range(4)])
    assert batch["audio_features"].shape == (4, max(cached[:4]["length"]), 160)
    with pytest.raises(TypeError, match="on the fly"):
        precompute_features(dataset.to_iterable_dataset(), transform)
