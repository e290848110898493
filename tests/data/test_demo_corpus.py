"""Tests of the espeak-ng demo corpus: deterministic, multi-speaker, 16 kHz speech, loadable."""

import json

import numpy as np
import pytest
import soundfile

from ctal_hf.data import demo_corpus
from ctal_hf.data.sources import load_speech_dataset
from ctal_hf.audio import load_audio
from ctal_hf.data.demo_corpus import CORPUS_DIR_ENV, build_demo_corpus


pytest.importorskip("espeakng_loader")

NUM_UTTERANCES = 12


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return build_demo_corpus(tmp_path_factory.mktemp("demo_a"), num_utterances=NUM_UTTERANCES, seed=0)


def read_manifest(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def folder_bytes(folder):
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_build_is_deterministic(manifest, tmp_path):
    again = build_demo_corpus(tmp_path, num_utterances=NUM_UTTERANCES, seed=0)
    assert again.parent.name == manifest.parent.name  # same content, same key
    assert folder_bytes(again.parent) == folder_bytes(manifest.parent)
    other_seed = build_demo_corpus(tmp_path, num_utterances=NUM_UTTERANCES, seed=1)
    assert other_seed.parent != again.parent
    assert read_manifest(other_seed) != read_manifest(again)


def test_corpus_content(manifest):
    rows = read_manifest(manifest)
    assert len(rows) == NUM_UTTERANCES
    assert len({row["speaker_id"] for row in rows}) == 8  # round-robin over the 8 voices
    assert {row["split"] for row in rows} <= {"train", "validation"}
    for row in rows:
        assert 4 <= len(row["text"].split()) <= 15 and row["text"] == row["text"].upper()
        path = manifest.parent / row["audio"]
        info = soundfile.info(path)
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        audio, _ = soundfile.read(path)
        assert 0.5 < len(audio) / 16000 < 8
        assert np.sqrt(np.mean(audio**2)) > 0.01  # speech, not silence


def test_voices_differ(tmp_path):
    # One sentence said by every speaker: voice, pitch and rate all change the audio.
    plan = [{"id": f"{speaker}-1-0000", "speaker_id": speaker, "chapter_id": 1, "voice": voice, "pitch": pitch,
             "rate": rate, "text": "the old farmer walked home"} for speaker, voice, pitch, rate in demo_corpus.SPEAKERS]
    demo_corpus._synthesize(plan, tmp_path)
    centroids, durations = [], []
    for item in plan:
        audio, rate = soundfile.read(tmp_path / demo_corpus._relative_audio_path(item))
        spectrum = np.abs(np.fft.rfft(audio))
        centroids.append(np.sum(np.fft.rfftfreq(len(audio), 1 / rate) * spectrum) / np.sum(spectrum))
        durations.append(len(audio))
    assert len({round(value, -1) for value in centroids}) >= 6 and max(centroids) - min(centroids) > 200
    assert len(set(durations)) == len(plan)


def test_loads_as_manifest_and_as_librispeech(manifest):
    from_manifest = load_speech_dataset(manifest)
    from_folder = load_speech_dataset(manifest.parent)
    assert sorted(from_manifest["id"]) == from_folder["id"]
    by_id = {row["id"]: row for row in from_folder}
    for row in from_manifest:
        assert row["text"] == by_id[row["id"]]["text"]
        np.testing.assert_array_equal(load_audio(row["audio"]), load_audio(by_id[row["id"]]["audio"]))
    validation = [row for row in read_manifest(manifest) if row["split"] == "validation"]
    if validation:
        assert len(load_speech_dataset(manifest, split="validation")) == len(validation)


def test_reuse_and_environment_variable(manifest, tmp_path, monkeypatch):
    monkeypatch.setenv(CORPUS_DIR_ENV, str(manifest.parent.parent))
    stamp = manifest.stat().st_mtime_ns
    assert build_demo_corpus(num_utterances=NUM_UTTERANCES) == manifest  # found, not rebuilt
    assert manifest.stat().st_mtime_ns == stamp
    assert not list(manifest.parent.parent.glob(".*partial*"))


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_corpus, "SPEAKERS", ((1, "no-such-voice", 50, 170),))
    with pytest.raises(RuntimeError, match="no-such-voice"):
        build_demo_corpus(tmp_path, num_utterances=2)
    assert list(tmp_path.iterdir()) == []


def test_sentences_are_deterministic():
    first = demo_corpus._corpus_plan(300, seed=0)
    assert first == demo_corpus._corpus_plan(300, seed=0)
    assert all(4 <= len(item["text"].split()) <= 15 for item in first)
    assert len({item["text"] for item in first}) > 250  # varied sentences


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_corpus.main(["--help"])
    assert exit_info.value.code == 0
    assert "--num-utterances" in capsys.readouterr().out


@pytest.mark.parametrize("spelling", ["dashed", "underscored"])
def test_cli_finds_the_built_corpus(manifest, capsys, spelling):
    options = ["--output-dir", "--num-utterances"] if spelling == "dashed" else ["--output_dir", "--num_utterances"]
    demo_corpus.main([options[0], str(manifest.parent.parent), options[1], str(NUM_UTTERANCES)])
    assert capsys.readouterr().out.strip() == str(manifest)
