"""Tests of ctal_hf.data.sources: every loader path gives the same examples; decoding; errors; features."""

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
import soxr

from ctal_hf.data.sources import (
    AudioDecodeError,
    CTALFeatureTransform,
    add_length_column,
    audio_num_samples,
    load_speech_dataset,
    precompute_features,
)
from ctal_hf.data.collator import DataCollatorForCTALPretraining
from ctal_hf.audio import load_audio
from ctal_hf.models.ctal.feature_extraction_ctal import CTALFeatureExtractor
from ctal_hf.models.ctal.processing_ctal import CTALProcessor
from ctal_hf.models.ctal.tokenization_ctal import train_ctal_tokenizer


WORDS = ["THE", "OLD", "MILL", "RIVER", "QUIET", "MORNING", "WALKED", "SLOWLY", "HOME", "BRIGHT"]
# (speaker, chapter, utterance index, seconds)
UTTERANCES = [(19, 198, 0, 0.6), (19, 198, 1, 1.1), (19, 227, 0, 0.8), (26, 495, 0, 1.3), (26, 495, 1, 0.5),
              (103, 1240, 0, 0.9)]


def synthetic_audio(index: int, seconds: float) -> np.ndarray:
    """A sine chord plus noise, different per utterance, in [-1, 1]."""
    rng = np.random.default_rng(index)
    time = np.arange(int(seconds * 16000)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * (150 + 40 * index) * time) + 0.1 * np.sin(2 * np.pi * 1200 * time)
    return (tone + 0.05 * rng.standard_normal(len(time))).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """LibriSpeech layout under root/train-clean-100, plus the expected rows keyed by id."""
    root = tmp_path_factory.mktemp("librispeech")
    rng = np.random.default_rng(0)
    expected, transcripts = {}, {}
    for index, (speaker, chapter, utterance, seconds) in enumerate(UTTERANCES):
        utterance_id = f"{speaker}-{chapter}-{utterance:04d}"
        folder = root / "train-clean-100" / str(speaker) / str(chapter)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{utterance_id}.flac"
        soundfile.write(path, synthetic_audio(index, seconds), 16000, format="FLAC", subtype="PCM_16")
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 8))))
        transcripts.setdefault(folder / f"{speaker}-{chapter}.trans.txt", []).append(f"{utterance_id} {text}\n")
        expected[utterance_id] = {"text": text, "speaker_id": speaker, "chapter_id": chapter, "path": path}
    for transcript_file, lines in transcripts.items():
        transcript_file.write_text("".join(lines))
    return root, expected


def write_csv_manifest(corpus, name="manifest.csv"):
    """Aliased columns (path / transcription / speaker), paths relative to the manifest's folder."""
    root, expected = corpus
    lines = ["id,path,transcription,speaker,split"]
    for number, (utterance_id, row) in enumerate(expected.items()):
        split = "test" if number % 3 == 2 else "train"
        lines.append(f"{utterance_id},{row['path'].relative_to(root)},{row['text']},{row['speaker_id']},{split}")
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl_manifest(corpus, folder_name="manifests"):
    """Canonical columns, in a subfolder: paths go through '..', one is absolute."""
    root, expected = corpus
    folder = root / folder_name
    folder.mkdir(exist_ok=True)
    path = folder / "manifest.jsonl"
    with open(path, "w") as manifest:
        for number, (utterance_id, row) in enumerate(expected.items()):
            audio = str(row["path"]) if number == 0 else "../" + str(row["path"].relative_to(root))
            manifest.write(json.dumps({"id": utterance_id, "audio": audio, "text": row["text"],
                                       "speaker_id": row["speaker_id"], "label": number % 2}) + "\n")
            if number == 2:
                manifest.write("\n")  # blank lines are ignored
    return path


def hub_style_dataset(corpus, audio_as="bytes"):
    """An in-memory Dataset with the openslr/librispeech_asr schema; audio as a decoding `Audio` feature."""
    _, expected = corpus
    rows = {"file": [], "audio": [], "text": [], "speaker_id": [], "chapter_id": [], "id": []}
    for utterance_id, row in expected.items():
        if audio_as == "bytes":
            audio = {"bytes": row["path"].read_bytes(), "path": row["path"].name}
        else:
            samples, rate = soundfile.read(row["path"], dtype="float32")
            audio = {"array": samples, "sampling_rate": rate}
        rows["file"].append(row["path"].name)
        rows["audio"].append(audio)
        rows["text"].append(row["text"])
        rows["speaker_id"].append(row["speaker_id"])
        rows["chapter_id"].append(row["chapter_id"])
        rows["id"].append(utterance_id)
    dataset = datasets.Dataset.from_dict(rows)
    if audio_as == "bytes":
        # The Hub dataset's column decodes (through torchcodec); the loader must switch that off.
        dataset = dataset.cast_column("audio", datasets.Audio(sampling_rate=16000))
    return dataset


def assert_same_examples(rows, corpus):
    _, expected = corpus
    rows = list(rows)
    assert sorted(row["id"] for row in rows) == sorted(expected)
    for row in rows:
        reference = expected[row["id"]]
        assert row["text"] == reference["text"]
        assert int(row["speaker_id"]) == reference["speaker_id"]
        np.testing.assert_array_equal(load_audio(row["audio"]), soundfile.read(reference["path"], dtype="float32")[0])


# ------------------------------------------------------------------------------------------ loaders


def test_librispeech_folder(corpus):
    root, _ = corpus
    dataset = load_speech_dataset(root)
    assert set(dataset.column_names) == {"id", "audio", "text", "speaker_id", "chapter_id"}
    assert dataset["id"] == sorted(dataset["id"])
    assert all(path.startswith(str(root)) for path in dataset["audio"])
    assert_same_examples(dataset, corpus)
    assert load_speech_dataset(root, split="train.clean.100")["id"] == dataset["id"]  # Hub split spelling
    # Several splits at once (LibriSpeech 960 h = three subfolders): concatenated in the order given.
    doubled = load_speech_dataset(root, split="train-clean-100, train.clean.100")
    assert list(doubled["id"]) == list(dataset["id"]) * 2
    with pytest.raises(ValueError, match="train-clean-100"):
        load_speech_dataset(root, split="dev-clean")


def test_csv_manifest(corpus):
    dataset = load_speech_dataset(write_csv_manifest(corpus))
    assert {"audio", "text", "speaker_id", "split", "id"} <= set(dataset.column_names)
    assert_same_examples(dataset, corpus)
    test_rows = load_speech_dataset(write_csv_manifest(corpus), split="test")
    assert len(test_rows) == 2 and set(test_rows["split"]) == {"test"}


def test_jsonl_manifest(corpus):
    dataset = load_speech_dataset(write_jsonl_manifest(corpus))
    assert dataset["label"] == [0, 1, 0, 1, 0, 1]
    assert_same_examples(dataset, corpus)


def test_hub_schema_dataset(corpus):
    dataset = load_speech_dataset(hub_style_dataset(corpus))
    assert dataset.features["audio"] == datasets.Audio(decode=False)
    assert_same_examples(dataset, corpus)
    assert_same_examples(load_speech_dataset(hub_style_dataset(corpus, audio_as="array")), corpus)
    aliased = hub_style_dataset(corpus).rename_columns({"text": "transcription", "speaker_id": "Speaker"})
    assert_same_examples(load_speech_dataset(aliased), corpus)
    with pytest.raises(ValueError, match=r"no text column.*'speaker_id'"):
        load_speech_dataset(hub_style_dataset(corpus).remove_columns("text"))


def test_streaming_and_dataset_dict(corpus, tmp_path):
    stream = load_speech_dataset(hub_style_dataset(corpus), streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    assert_same_examples(stream, corpus)
    assert_same_examples(load_speech_dataset(write_csv_manifest(corpus), streaming=True), corpus)
    splits = datasets.DatasetDict({"train.clean.100": hub_style_dataset(corpus)})
    assert_same_examples(load_speech_dataset(splits, split="train.clean.100"), corpus)
    with pytest.raises(ValueError, match="train.clean.100"):
        load_speech_dataset(splits)
    stream_splits = datasets.IterableDatasetDict({"test": hub_style_dataset(corpus).to_iterable_dataset()})
    assert_same_examples(load_speech_dataset(stream_splits, split="test"), corpus)
    hub_style_dataset(corpus).save_to_disk(tmp_path / "saved")
    assert_same_examples(load_speech_dataset(tmp_path / "saved"), corpus)


# ---------------------------------------------------------------------------------------- decoding


def test_decode_resamples_and_downmixes(tmp_path):
    rate = 44100
    time = np.arange(rate) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 440 * time), 0.2 * np.sin(2 * np.pi * 880 * time)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), rate, subtype="FLOAT")
    stored = soundfile.read(path, dtype="float64")[0]
    expected = soxr.resample(stored.mean(axis=1), rate, 16000, quality="HQ")
    with open(path, "rb") as file:
        for item in (path, str(path), path.read_bytes(), file, {"path": str(path), "bytes": None},
                     {"path": "ignored-when-bytes.wav", "bytes": path.read_bytes()}):
            waveform = load_audio(item)
            assert waveform.dtype == np.float64 and waveform.ndim == 1
            np.testing.assert_array_equal(waveform, expected)
    assert audio_num_samples(path) == len(expected) == 16000
    low_rate = {"array": left[::6].astype(np.float32), "sampling_rate": 7350}
    assert len(load_audio(low_rate)) == audio_num_samples(low_rate) == 16000


def test_decode_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.flac"
    with pytest.raises(FileNotFoundError, match="nowhere.flac"):
        load_audio(missing)
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioDecodeError, match="corrupt.flac"):
        load_audio(corrupt)
    with pytest.raises(AudioDecodeError, match="corrupt.flac"):
        audio_num_samples({"path": "corrupt.flac", "bytes": corrupt.read_bytes()})
    with pytest.raises(TypeError, match="path, bytes"):
        load_audio(3)
    with pytest.raises(AudioDecodeError, match="an in-memory array needs a 'sampling_rate'"):
        audio_num_samples({"array": np.zeros(16000)})


# ------------------------------------------------------------------------------- missing / malformed


def test_missing_file_raises_or_is_skipped(corpus, tmp_path, caplog):
    root, expected = corpus
    manifest = tmp_path / "manifest.csv"
    first = next(iter(expected.values()))["path"]
    manifest.write_text(f"audio,text\n{first},HELLO\n{tmp_path / 'gone.flac'},WORLD\n{tmp_path / 'lost.wav'},AGAIN\n")
    with pytest.raises(FileNotFoundError, match=r"2 of 3 .*gone\.flac.* or pass --skip_unreadable \(skip_unreadable"):
        load_speech_dataset(manifest)
    with caplog.at_level(logging.WARNING):
        dataset = load_speech_dataset(manifest, skip_unreadable=True)
    assert dataset["text"] == ["HELLO"]
    assert "skipped 2 of 3" in caplog.text


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", "", "is empty"),
        ("header_only.csv", "audio,text\n", "has no rows"),
        ("no_text.csv", "audio,speaker\na.flac,3\n", r"no text column.*found columns \['audio', 'speaker'\]"),
        ("no_audio.jsonl", '{"text": "HI", "label": 1}\n', r"no audio column.*\['text', 'label'\]"),
        ("empty.jsonl", "\n\n", "is empty"),
        ("broken.jsonl", '{"audio": "a.flac", "text": "HI"}\n{"audio": \n', "line 2: not valid JSON"),
        ("empty_text.csv", "audio,text\na.flac,HI\nb.flac,\n", r"1 transcript empty or not text: row 2 \(missing\)"),
        (
            "blank_text.jsonl",
            '{"audio": "a.flac", "text": "HI"}\n{"audio": "b.flac", "text": "  "}\n',
            r"1 transcript empty or not text: row 2 \('  '\).* fill in the text or remove those items",
        ),
        ("manifest.txt", "audio,text\n", "unsupported extension"),
    ],
)
def test_malformed_manifests(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_speech_dataset(path)


def test_empty_transcripts_one_rule_for_every_loader(corpus, tmp_path):
    """The processor (tests/models/ctal/test_processing_ctal.py) and every loader refuse the same transcripts."""
    root, expected = corpus
    audio = str(next(iter(expected.values()))["path"])
    folder = tmp_path / "librispeech" / "19" / "198"
    folder.mkdir(parents=True)
    (folder / "19-198.trans.txt").write_text("19-198-0000 HELLO\n19-198-0001\n")
    with pytest.raises(ValueError, match=r"19-198\.trans\.txt: 1 transcript empty or not text: line 2 \(19-198-0001\)"):
        load_speech_dataset(tmp_path / "librispeech")
    dataset = datasets.Dataset.from_dict({"audio": [audio, audio], "text": ["HELLO", ""]})
    with pytest.raises(ValueError, match=r"The dataset: 1 transcript empty or not text: row 1 \(''\)"):
        load_speech_dataset(dataset)
    # A stream is checked when its rows are featurised, naming the audio.
    stream = load_speech_dataset(dataset.to_iterable_dataset())
    with pytest.raises(ValueError, match=r"the row with audio '.*\.flac' \(''\)"):
        CTALFeatureTransform(processor=None)({"audio": [audio, audio], "text": ["HELLO", ""]})
    assert [row["text"] for row in stream] == ["HELLO", ""]


def test_split_needs_a_split_column(corpus):
    with pytest.raises(ValueError, match="no split column"):
        load_speech_dataset(write_jsonl_manifest(corpus), split="train")
    with pytest.raises(ValueError, match="no split column"):
        load_speech_dataset(hub_style_dataset(corpus), split="train")


@pytest.fixture
def online_without_network(monkeypatch):
    """Online mode, but `datasets.load_dataset` fails the test: nothing here may reach the network."""
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise AssertionError("load_speech_dataset asked the Hub")

    monkeypatch.setattr(datasets, "load_dataset", no_network)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("./my_corpus", "it is a path, not a Hub dataset id"),
        ("~/no_such_corpus_here", "it is a path, not a Hub dataset id"),
        ("corpora/libri/train", "it is a path, not a Hub dataset id"),
        ("my_corpus.tsv", "its extension .tsv names a file"),
        ("my_corpus.txt", "its extension .txt names a file"),
    ],
)
def test_a_mistyped_local_name_fails_at_once(online_without_network, monkeypatch, tmp_path, name, reason):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"^No such file or folder: '.*' \({reason}.*\)\. A dataset source "
                       r"\(--dataset\) is a manifest file .* a Hub dataset id such as openslr/librispeech_asr"):
        load_speech_dataset(name)


def test_a_name_under_a_local_folder_is_local(online_without_network, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No such file or folder: 'data/my_corpus' \('data' is a local folder\)"):
        load_speech_dataset("data/my_corpus")


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_a_missing_name_fails_at_once(online_without_network, monkeypatch, tmp_path, variable):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(FileNotFoundError, match=rf"No such file or folder: 'my_corpus' \({variable} is set, so the "
                       r"Hub is not asked\)\. A dataset source \(--dataset\) is"):
        load_speech_dataset("my_corpus")


def test_a_name_on_neither_disk_nor_hub(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    asked = []

    def hub_says_no(name, *args, **kwargs):  # what datasets raises for an unknown id, without a network call
        asked.append(name)
        raise datasets.exceptions.DatasetNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", hub_says_no)
    with pytest.raises(FileNotFoundError, match=r"'my_corpus' is neither a local file or folder nor a dataset on the "
                       r"Hub \(Dataset 'my_corpus' doesn't exist on the Hub\)\. A dataset source"):
        load_speech_dataset("my_corpus")
    assert asked == ["my_corpus"]


def test_unrecognised_folder(tmp_path):
    with pytest.raises(ValueError, match="neither a LibriSpeech folder"):
        load_speech_dataset(tmp_path)


# ---------------------------------------------------------------------------------------- features


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
