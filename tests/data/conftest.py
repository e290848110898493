"""Shared fixtures of the data tests: a small LibriSpeech-layout corpus of synthesised speech."""

import numpy as np
import pytest
import soundfile


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
