"""A small synthetic speech corpus for running CTAL end to end on any machine.

Real corpora (LibriSpeech, IEMOCAP, MOSEI) cannot be downloaded everywhere, so the examples and
tests use read-speech-like utterances synthesised with espeak-ng. The PyPI package
`espeakng-loader` bundles `libespeak-ng` and its voice data; it is driven in-process via ctypes.

The corpus is generated on first use, deterministically from (`num_utterances`, `seed`), into
`<root>/<key>/` where `<root>` is `output_dir`, else `$CTAL_DEMO_CORPUS_DIR`, else
`~/.cache/ctal_hf/demo_corpus`, and `<key>` hashes the corpus content (texts, voices, engine
version), so differently-built corpora never mix. Layout (the LibriSpeech release layout plus a
manifest, so both loaders in `ctal_hf.data.sources` can read it):

    <key>/manifest.jsonl                            {"audio": "<relative path>", "text", "speaker_id",
                                                     "id", "split": "train" | "validation"}
    <key>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "<ID> <UPPERCASE TEXT>" lines
    <key>/<speaker>/<chapter>/<ID>.flac             16 kHz mono 16-bit FLAC

Transcripts are uppercase without punctuation, as in LibriSpeech. The corpus is built in a
temporary folder and renamed into place when complete, so a half-built corpus is never reused.

espeak-ng keeps internal state between utterances (its output for a sentence depends on what it
said before, even across re-initialisation), so all synthesis runs in a fresh child process that
says the utterances in a fixed order: that makes the audio depend only on the corpus parameters.

CLI: `python -m ctal_hf.data.demo_corpus --help`.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.metadata
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


SAMPLING_RATE = 16000
CORPUS_DIR_ENV = "CTAL_DEMO_CORPUS_DIR"
DEFAULT_ROOT = Path("~/.cache/ctal_hf/demo_corpus")
# Bump when the synthesis or file format changes in a way the corpus content hash cannot see.
_FORMAT_VERSION = 1

# Speakers: (speaker id, espeak voice name with variant, pitch 0-100, rate in words per minute).
SPEAKERS = (
    (101, "en-us", 50, 170),
    (102, "en-us+f3", 62, 160),
    (103, "en+m2", 42, 175),
    (104, "en-gb-x-rp+f2", 56, 165),
    (105, "en-us-nyc+m3", 38, 182),
    (106, "en-029+f4", 66, 155),
    (107, "en-gb-scotland+m1", 47, 168),
    (108, "en+f5", 58, 186),
)

_DETERMINERS = ("the", "a", "his", "her", "our", "that", "one")
_ADJECTIVES = (
    "old", "young", "tall", "quiet", "tired", "clever", "kind", "busy", "patient", "cheerful", "small",
    "gentle", "proud", "curious", "careful", "honest", "lonely", "brave", "silent", "famous",
)
_NOUNS = (
    "farmer", "teacher", "sailor", "child", "doctor", "painter", "soldier", "merchant", "neighbour",
    "captain", "student", "woman", "stranger", "baker", "traveller", "shepherd", "clerk", "widow",
    "gardener", "boy",
)
_INTRANSITIVE = (
    "walked", "waited", "laughed", "listened", "rested", "returned", "hurried", "smiled", "paused",
    "slept", "worked", "sang", "wandered", "stood",
)
_TRANSITIVE = (
    "opened", "carried", "found", "watched", "painted", "repaired", "followed", "lifted", "noticed",
    "remembered", "cleaned", "closed", "wrote", "sold",
)
_OBJECTS = (
    "the letter", "a heavy basket", "the wooden door", "an old map", "the broken chair", "a small boat",
    "the silver key", "her brother", "the morning paper", "a long rope", "the garden gate", "his coat",
    "the new window", "a warm loaf of bread",
)
_ADVERBS = ("slowly", "quietly", "carefully", "suddenly", "again", "early", "alone", "gladly")
_PLACES = (
    "near the river", "by the old mill", "in the village", "behind the church", "across the field",
    "at the station", "along the narrow road", "inside the house", "under the bridge", "on the hill",
)
_TIMES = (
    "in the morning", "before dinner", "after the storm", "during the long winter", "every evening",
    "at noon", "late that night", "on sunday",
)
_MIN_WORDS, _MAX_WORDS = 4, 15


def _verb_phrase(rng: random.Random) -> list[str]:
    if rng.random() < 0.5:
        return [rng.choice(_INTRANSITIVE)]
    return [rng.choice(_TRANSITIVE), *rng.choice(_OBJECTS).split()]


def _sentence(rng: random.Random) -> str:
    """A read-speech-like sentence of 4-15 words: subject, verb phrase, optional modifiers."""
    while True:
        words = [rng.choice(_DETERMINERS)]
        if rng.random() < 0.6:
            words.append(rng.choice(_ADJECTIVES))
        words += [rng.choice(_NOUNS), *_verb_phrase(rng)]
        for modifiers, probability in ((_ADVERBS, 0.4), (_PLACES, 0.6), (_TIMES, 0.4)):
            if rng.random() < probability:
                words += rng.choice(modifiers).split()
        if rng.random() < 0.3:
            words += ["and", *_verb_phrase(rng)]
        if _MIN_WORDS <= len(words) <= _MAX_WORDS:
            return " ".join(words)


def _corpus_plan(num_utterances: int, seed: int) -> list[dict]:
    """Deterministic list of utterances: id, speaker, chapter, voice settings, text, split."""
    rng = random.Random(seed)
    per_speaker = [0] * len(SPEAKERS)
    plan = []
    for index in range(num_utterances):
        slot = index % len(SPEAKERS)  # round-robin keeps the speakers balanced
        speaker_id, voice, pitch, rate = SPEAKERS[slot]
        chapter_id = 1000 + slot
        utterance_id = f"{speaker_id}-{chapter_id}-{per_speaker[slot]:04d}"
        per_speaker[slot] += 1
        text = _sentence(rng)
        plan.append({
            "id": utterance_id,
            "speaker_id": speaker_id,
            "chapter_id": chapter_id,
            "voice": voice,
            "pitch": pitch,
            "rate": rate,
            "text": text,
            "split": "validation" if rng.random() < 0.1 else "train",
        })
    return plan


def _espeak_version() -> str:
    try:
        return importlib.metadata.version("espeakng-loader")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            "The demo corpus is synthesised with espeak-ng from the PyPI package `espeakng-loader`, which is "
            "not installed. Install it with `pip install espeakng-loader` (or `pip install ctal_hf[demo]`)."
        ) from None


def build_demo_corpus(output_dir: str | os.PathLike | None = None, num_utterances: int = 300, seed: int = 0) -> Path:
    """Builds the demo corpus if needed and returns the path of its `manifest.jsonl`.

    Args:
        output_dir: root folder; the corpus goes into `<output_dir>/<key>/`. Defaults to
            `$CTAL_DEMO_CORPUS_DIR`, else `~/.cache/ctal_hf/demo_corpus`.
        num_utterances: number of utterances, spread round-robin over the 8 speakers of `SPEAKERS`.
        seed: seed of the sentence generator and of the train/validation split (~10% validation).

    Returns:
        Path of the manifest (JSON lines with relative `audio` paths), loadable with
        `ctal_hf.data.sources.load_speech_dataset`; the folder holding it is also a LibriSpeech-layout folder.
    """
    if num_utterances < 1:
        raise ValueError(f"num_utterances must be at least 1, got {num_utterances}.")
    root = Path(output_dir or os.environ.get(CORPUS_DIR_ENV) or DEFAULT_ROOT).expanduser()
    plan = _corpus_plan(num_utterances, seed)
    identity = {"format": _FORMAT_VERSION, "espeakng_loader": _espeak_version(), "rate": SAMPLING_RATE, "plan": plan}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    target = root / key
    manifest = target / "manifest.jsonl"
    if manifest.is_file():
        return manifest

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.partial-", dir=root))
    try:
        _synthesize(plan, staging)
        _write_index(plan, staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not manifest.is_file():  # not a concurrent build that finished first: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _relative_audio_path(item: dict) -> str:
    return f"{item['speaker_id']}/{item['chapter_id']}/{item['id']}.flac"


def _synthesize(plan: list[dict], folder: Path) -> None:
    """Runs the synthesis worker (this file as a script, in a fresh interpreter) on `plan`."""
    jobs = []
    for index, item in enumerate(plan):
        path = folder / _relative_audio_path(item)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Spoken in sentence case with a full stop, for natural prosody; stored upper case.
        spoken = item["text"][0].upper() + item["text"][1:] + "."
        jobs.append({"text": spoken, "voice": item["voice"], "pitch": item["pitch"], "rate": item["rate"],
                     "noise_seed": index, "path": str(path)})
    # -I: isolated mode, so the worker imports neither ctal_hf nor anything from this folder.
    worker = subprocess.run(
        [sys.executable, "-I", str(Path(__file__).resolve()), "--synthesis-worker"],
        input=json.dumps(jobs), capture_output=True, text=True,
    )
    if worker.returncode != 0:
        raise RuntimeError(
            f"espeak-ng synthesis of the demo corpus failed (exit code {worker.returncode}):\n{worker.stderr.strip()}"
        )


def _write_index(plan: list[dict], folder: Path) -> None:
    """Writes the LibriSpeech `*.trans.txt` files and, last, `manifest.jsonl`."""
    transcripts: dict[Path, list[str]] = {}
    for item in plan:
        trans_file = folder / f"{item['speaker_id']}/{item['chapter_id']}/{item['speaker_id']}-{item['chapter_id']}.trans.txt"
        transcripts.setdefault(trans_file, []).append(f"{item['id']} {item['text'].upper()}\n")
    for trans_file, lines in transcripts.items():
        trans_file.write_text("".join(lines), encoding="utf-8")
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as manifest:
        for item in plan:
            row = {"audio": _relative_audio_path(item), "text": item["text"].upper(), "speaker_id": item["speaker_id"],
                   "id": item["id"], "split": item["split"]}
            manifest.write(json.dumps(row) + "\n")


class _ESpeak:
    """Minimal ctypes binding of libespeak-ng's synchronous synthesis API (speak_lib.h)."""

    _AUDIO_OUTPUT_SYNCHRONOUS = 2
    _POS_CHARACTER = 1
    _CHARS_UTF8 = 1
    _PARAM_RATE = 1
    _PARAM_PITCH = 3
    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self):
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path()
        self.sampling_rate = self._lib.espeak_Initialize(self._AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if self.sampling_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with voice data at {data_path!r}.")
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._collect)  # kept referenced: C holds a pointer to it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, count, events) -> int:
        if samples and count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: str, pitch: int, rate: int, noise_seed: int) -> np.ndarray:
        """int16 samples at `self.sampling_rate` (22,050 Hz for the bundled voices).

        `noise_seed` seeds espeak's noise generator (breathy variants such as +f2 use it), which
        otherwise seeds itself from the clock.
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r} (names look like 'en-us' or 'en-us+f3').")
        self._lib.espeak_SetParameter(self._PARAM_RATE, rate, 0)
        self._lib.espeak_SetParameter(self._PARAM_PITCH, pitch, 0)
        self._lib.espeak_ng_SetRandSeed(noise_seed)
        self._chunks = []
        encoded = text.encode("utf-8")
        status = self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, self._POS_CHARACTER, 0, self._CHARS_UTF8, None, None)
        if status != 0 or self._lib.espeak_Synchronize() != 0:
            raise RuntimeError(f"espeak-ng failed (status {status}) on {text!r} with voice {voice!r}.")
        if not self._chunks:
            raise RuntimeError(f"espeak-ng produced no audio for {text!r} with voice {voice!r}.")
        return np.concatenate(self._chunks)


def _synthesis_worker() -> None:
    """Child process: reads jobs (JSON list on stdin) and writes one 16 kHz FLAC file per job."""
    import soundfile
    import soxr

    engine = _ESpeak()
    for job in json.load(sys.stdin):
        samples = engine.synthesize(job["text"], job["voice"], job["pitch"], job["rate"], job["noise_seed"])
        audio = soxr.resample(samples.astype(np.float32) / 32768.0, engine.sampling_rate, SAMPLING_RATE)
        soundfile.write(job["path"], np.clip(audio, -1.0, 1.0), SAMPLING_RATE, format="FLAC", subtype="PCM_16")


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ctal_hf.data.demo_corpus",
        description="Build (or find) the synthetic espeak-ng demo corpus and print the path of its manifest.",
    )
    # Underscored and dashed spellings both work, whichever style a user types from the other commands.
    parser.add_argument("--output-dir", "--output_dir", default=None,
                        help=f"root folder of the corpus (default: ${CORPUS_DIR_ENV}, else {DEFAULT_ROOT})")
    parser.add_argument("--num-utterances", "--num_utterances", type=int, default=300,
                        help="number of utterances (default: 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sentence generator (default: 0)")
    parser.add_argument("--synthesis-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """`python -m ctal_hf.data.demo_corpus`: build the corpus and print its manifest's path (or run a synthesis worker)."""
    args = _parse_arguments(argv)
    if args.synthesis_worker:
        _synthesis_worker()
        return
    print(build_demo_corpus(args.output_dir, num_utterances=args.num_utterances, seed=args.seed))


if __name__ == "__main__":
    main()
