"""Label encoding and the model-agnostic classification collator."""

import json

import datasets
import numpy as np
import pytest
import soundfile
import torch

from ctal_hf.data.labelled import DataCollatorForAudioTextClassification, prepare_labels
from ctal_hf.data.sources import load_speech_dataset


def test_problem_type_and_names_from_a_manifest(tmp_path):
    for index in range(3):
        soundfile.write(tmp_path / f"{index}.wav", np.zeros(1600), 16000)
    rows = [("0.wav", "sad", -1.5, ["joy", "anger"]), ("1.wav", "angry", 0.0, []), ("2.wav", "sad", 2.0, ["joy"])]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"audio": a, "text": "hi", "emotion": e, "score": s, "tags": t}) + "\n"
                                for a, e, s, t in rows))
    dataset = load_speech_dataset(manifest)  # "emotion" becomes "label"
    encoded, spec = prepare_labels(dataset)
    assert spec.problem_type == "single_label_classification" and spec.names == ("angry", "sad")
    assert encoded["label"] == [1, 0, 1] and spec.id2label == {0: "angry", 1: "sad"}

    regression, spec = prepare_labels(dataset.remove_columns("label").rename_column("score", "label"))
    assert spec.problem_type == "regression" and spec.num_labels == 1 and regression["label"] == [-1.5, 0.0, 2.0]

    multi, spec = prepare_labels(dataset.remove_columns("label").rename_column("tags", "label"))
    assert spec.problem_type == "multi_label_classification" and spec.names == ("anger", "joy")
    assert multi["label"] == [[1.0, 1.0], [0.0, 0.0], [0.0, 1.0]]


def test_integer_classes_class_labels_and_given_names():
    integers, spec = prepare_labels(datasets.Dataset.from_dict({"label": [10, 2, 2, 1]}))
    assert spec.names == ("1", "2", "10") and integers["label"] == [2, 1, 1, 0]  # numeric order, not "1" < "10" < "2"
    class_label = datasets.Dataset.from_dict(
        {"label": [3, 0]}, features=datasets.Features({"label": datasets.ClassLabel(names=["ang", "hap", "neu", "sad"])})
    )
    encoded, spec = prepare_labels(class_label)
    assert spec.names == ("ang", "hap", "neu", "sad") and encoded["label"] == [3, 0]
    # An evaluation split encoded with the training split's names keeps their ids.
    test, _ = prepare_labels(datasets.Dataset.from_dict({"label": ["sad", "hap"]}), label_names=spec.names)
    assert test["label"] == [3, 1]
    with pytest.raises(ValueError, match="Labels \\['fru'\\] are not among the label names"):
        prepare_labels(datasets.Dataset.from_dict({"label": ["fru"]}), label_names=spec.names)


def test_missing_labels_dropped_and_forced_problem_types(caplog):
    dataset = datasets.Dataset.from_dict({"label": ["a", None, "", "b"], "id": ["1", "2", "3", "4"]})
    encoded, _ = prepare_labels(dataset)
    assert encoded["id"] == ["1", "4"]
    assert "Dropped 2 of 4 rows without a label" in caplog.text
    cells = datasets.Dataset.from_dict({"label": ["a;b", "b"]})
    multi, spec = prepare_labels(cells, label_separator=";")
    assert spec.problem_type == "multi_label_classification" and multi["label"] == [[1.0, 1.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="needs numeric labels"):
        prepare_labels(cells, problem_type="regression")
    with pytest.raises(ValueError, match="no label column"):
        prepare_labels(datasets.Dataset.from_dict({"text": ["x"]}))
    # Integral floats (a CSV column with gaps) read as integers when forced to classes.
    classes, spec = prepare_labels(datasets.Dataset.from_dict({"label": [1.0, 0.0]}), problem_type="single_label_classification")
    assert spec.names == ("0", "1") and classes["label"] == [1, 0]


class RecordingProcessor:
    """Stands in for any model family's processor: records the call, returns one tensor per input."""

    class feature_extractor:
        sampling_rate = 16000

    def __init__(self):
        self.calls = []

    def __call__(self, audio, text, sampling_rate, padding, truncation, return_tensors):
        self.calls.append({"audio": audio, "text": text, "sampling_rate": sampling_rate, "padding": padding,
                           "truncation": truncation, "return_tensors": return_tensors})
        longest = max(len(waveform) for waveform in audio)
        values = torch.zeros(len(audio), longest)
        for row, waveform in enumerate(audio):
            values[row, : len(waveform)] = torch.from_numpy(waveform)
        return {"input_values": values, "input_ids": torch.ones(len(text), 3, dtype=torch.long)}


def test_collator_decodes_audio_calls_the_processor_and_adds_labels(tmp_path):
    soundfile.write(tmp_path / "a.flac", np.full(800, 0.25), 8000)  # resampled to 16 kHz: 1600 samples
    rows = [
        {"audio": str(tmp_path / "a.flac"), "text": "one", "label": 2, "speaker_id": "x"},
        {"audio": {"array": np.full(3200, 0.5), "sampling_rate": 16000}, "text": "two", "label": 0},
    ]
    processor = RecordingProcessor()
    batch = DataCollatorForAudioTextClassification(processor)(rows)
    call = processor.calls[0]
    assert call["text"] == ["one", "two"] and call["sampling_rate"] == 16000 and call["return_tensors"] == "pt"
    assert [len(waveform) for waveform in call["audio"]] == [1600, 3200]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [2, 0]
    assert set(batch) == {"input_values", "input_ids", "labels"}

    scores = DataCollatorForAudioTextClassification(processor)([{**rows[1], "label": 1.5}])
    assert scores["labels"].dtype == torch.float32 and scores["labels"].tolist() == [1.5]
    multi = DataCollatorForAudioTextClassification(processor)([{**rows[1], "label": [0.0, 1.0]}])
    assert multi["labels"].shape == (1, 2)
    unlabelled = DataCollatorForAudioTextClassification(processor)([{"audio": rows[1]["audio"], "text": "x"}])
    assert "labels" not in unlabelled
    with pytest.raises(ValueError, match="1 transcript empty or not text: row u1 \\(missing\\)"):
        DataCollatorForAudioTextClassification(processor)([{"audio": rows[1]["audio"], "text": None, "id": "u1"}])
