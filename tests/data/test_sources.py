"""Tests of ctal_hf.data.sources: every loader path gives the same examples; decoding; errors; transcripts."""

import json
import logging

import datasets
import numpy as np
import pytest
import soundfile
import soxr

from ctal_hf.audio import AudioDecodeError, audio_num_samples, load_audio
from ctal_hf.data.features import CTALFeatureTransform
from ctal_hf.data.sources import iter_transcripts, load_speech_dataset


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


# ------------------------------------------------------------------------------------- transcripts


def test_iter_transcripts(tmp_path):
    (tmp_path / "lines.txt").write_text("FIRST ONE\n\nsecond one\n", encoding="utf-8")
    (tmp_path / "manifest.csv").write_text('path,text\na.wav,"Hello, there"\nb.wav,\n', encoding="utf-8")
    (tmp_path / "manifest.tsv").write_text("path\ttext\na.wav\tTab separated\n", encoding="utf-8")
    (tmp_path / "manifest.jsonl").write_text('{"text": "json one"}\n\n{"text": "json two"}\n', encoding="utf-8")
    assert list(iter_transcripts(tmp_path / "lines.txt")) == ["FIRST ONE", "second one"]
    assert list(iter_transcripts(tmp_path / "manifest.csv")) == ["Hello, there"]
    assert list(iter_transcripts(str(tmp_path / "manifest.tsv"))) == ["Tab separated"]
    assert list(iter_transcripts(tmp_path / "manifest.jsonl")) == ["json one", "json two"]
    # A .json array of objects, as load_speech_dataset reads it.
    (tmp_path / "array.json").write_text('[\n {"text": "array one"},\n {"text": ""},\n {"text": "two"}\n]\n')
    assert list(iter_transcripts(tmp_path / "array.json")) == ["array one", "two"]
    with pytest.raises(ValueError, match="Line 1 of .*array.json has no 'sentence' field"):
        list(iter_transcripts(tmp_path / "array.json", column="sentence"))
    (tmp_path / "broken.json").write_text('[{"text": "a"},\n')
    with pytest.raises(ValueError, match="broken.json' is not a valid JSON array"):
        list(iter_transcripts(tmp_path / "broken.json"))
    dataset = datasets.Dataset.from_dict({"sentence": ["from a dataset", ""], "id": [1, 2]})
    assert list(iter_transcripts(dataset, column="sentence")) == ["from a dataset"]
    assert list(iter_transcripts(dataset.to_iterable_dataset(), column="sentence")) == ["from a dataset"]

    with pytest.raises(ValueError, match="has no 'transcript' column .* with --column"):
        list(iter_transcripts(tmp_path / "manifest.csv", column="transcript"))
    with pytest.raises(ValueError, match="Line 1 of .* has no 'sentence' field"):
        list(iter_transcripts(tmp_path / "manifest.jsonl", column="sentence"))
    with pytest.raises(ValueError, match="The dataset has no 'text' column"):
        list(iter_transcripts(dataset))
    with pytest.raises(TypeError, match="pick a split"):
        list(iter_transcripts(datasets.DatasetDict({"train": dataset})))
    with pytest.raises(FileNotFoundError, match="No transcript file"):
        list(iter_transcripts(tmp_path / "missing.txt"))


def test_transcripts_of_a_manifest_follow_the_loaders_column_rules(corpus):
    """The tokenizer trainer reads a manifest as the loaders do: here the text is in an aliased `transcription`."""
    for manifest in (write_csv_manifest(corpus), write_jsonl_manifest(corpus)):
        assert list(iter_transcripts(manifest)) == load_speech_dataset(manifest)["text"]
