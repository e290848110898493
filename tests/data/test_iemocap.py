"""The IEMOCAP reader on a tree in the release's file formats (tests/conftest.py), with generated audio."""

import logging
from collections import Counter

import pytest

from ctal_hf.audio import load_audio
from ctal_hf.data.iemocap import (
    IEMOCAP_FOUR_CLASSES,
    load_iemocap_folder,
    map_iemocap_labels,
    read_iemocap_evaluation,
    read_iemocap_transcriptions,
)
from ctal_hf.data.sources import load_speech_dataset


def test_reads_every_utterance_line_and_skips_the_rest(iemocap_tree):
    root, expected = iemocap_tree
    evaluation = read_iemocap_evaluation(root / "Session2/dialog/EmoEvaluation/Ses02F_impro01.txt")
    assert [row["id"] for row in evaluation] == sorted(
        (key for key in expected if key.startswith("Ses02F_impro01")), key=lambda key: (int(key[-3:]), key[-4])
    )
    assert evaluation[0]["emotion"] == "neu" and evaluation[0]["start"] == 2.5
    assert (evaluation[0]["valence"], evaluation[0]["arousal"], evaluation[0]["dominance"]) == (2.5, 3.0, 2.5)
    texts = read_iemocap_transcriptions(root / "Session2/dialog/transcriptions/Ses02F_impro01.txt")
    assert "M: [BREATHING]" not in texts.values()
    assert all(texts[key] == expected[key]["text"] for key in expected if key.startswith("Ses02F_impro01"))


def test_four_classes_mapped_others_dropped_and_counted(iemocap_tree, caplog):
    root, expected = iemocap_tree
    with caplog.at_level(logging.WARNING):
        dataset = load_iemocap_folder(root)
    kept = {key: value for key, value in expected.items() if value["emotion"] in IEMOCAP_FOUR_CLASSES}
    assert sorted(dataset["id"]) == sorted(kept)
    assert set(dataset["label"]) == {"neutral", "happy", "angry", "sad"}
    for row in dataset:
        truth = expected[row["id"]]
        assert row["label"] == IEMOCAP_FOUR_CLASSES[truth["emotion"]]  # excited -> happy
        assert row["emotion"] == truth["emotion"]
        assert row["text"] == truth["text"]
        assert row["session"] == truth["session"] and row["speaker_id"] == truth["speaker"]
        assert row["audio"] == str(truth["path"].resolve())
    counts = Counter(dataset["label"])
    assert counts["happy"] == 2 * counts["sad"]  # hap + exc
    dropped = Counter(value["emotion"] for value in expected.values() if value["emotion"] not in IEMOCAP_FOUR_CLASSES)
    assert f"dropped {sum(dropped.values())} with other labels (fru: {dropped['fru']}, xxx: {dropped['xxx']})" in caplog.text


def test_map_labels_counts_each_dropped_code():
    rows = [{"emotion": code} for code in ("neu", "exc", "fru", "fru", "xxx", "sad")]
    kept, dropped = map_iemocap_labels(rows)
    assert [row["label"] for row in kept] == ["neutral", "happy", "sad"]
    assert dropped == {"fru": 2, "xxx": 1}
    every, none_dropped = map_iemocap_labels(rows, None)
    assert [row["label"] for row in every] == [row["emotion"] for row in rows] and none_dropped == {}


def test_sessions_speakers_and_split_selection(iemocap_tree):
    root, _ = iemocap_tree
    dataset = load_speech_dataset(root, split="Session1,Session3")
    assert set(dataset["session"]) == {"Session1", "Session3"}
    assert set(dataset["speaker_id"]) == {"Ses01F", "Ses01M", "Ses03F", "Ses03M"}
    # The utterance's own letter decides the speaker, not the dialog's: Ses01M_script01_1_F000 is the female actor.
    row = dataset[dataset["id"].index("Ses01M_script01_1_F000")]
    assert row["speaker_id"] == "Ses01F" and row["gender"] == "F"
    assert len(load_audio(row["audio"])) == int(0.4 * 16000)
    with pytest.raises(ValueError, match="no session \\['Session9'\\]"):
        load_speech_dataset(root, split="Session9")


def test_missing_transcript_or_audio_is_an_error_or_skipped(tmp_path, make_iemocap_tree):
    expected = make_iemocap_tree(tmp_path, sessions=1)
    expected["Ses01F_impro01_F000"]["path"].unlink()
    with pytest.raises(FileNotFoundError, match="1 utterances without an audio file \\(e.g. Ses01F_impro01_F000\\)"):
        load_iemocap_folder(tmp_path)
    dataset = load_iemocap_folder(tmp_path, skip_unreadable=True)
    assert "Ses01F_impro01_F000" not in dataset["id"] and len(dataset) == 19


def test_not_an_iemocap_folder(tmp_path):
    (tmp_path / "Session1").mkdir()
    with pytest.raises(ValueError, match="neither a LibriSpeech folder"):
        load_speech_dataset(tmp_path)
    with pytest.raises(ValueError, match="not IEMOCAP in its release layout"):
        load_iemocap_folder(tmp_path)
