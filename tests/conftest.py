"""Fixtures shared by the test folders."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

from ctal_hf import CTALConfig, CTALForPreTraining, train_ctal_tokenizer
from ctal_hf.models.ctal.processing_ctal import processor_for_config


@pytest.fixture
def folder_digest():
    """`digest(folder)`: `{relative path: sha256}` of every file under `folder`, to check that nothing changed."""

    def digest(folder: Path) -> dict[str, str]:
        return {
            path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(folder).rglob("*"))
            if path.is_file()
        }

    return digest

# Emotion codes given to the utterances of each dialog in turn: the 4-class set (with "exc" merged into happy) and
# codes that are dropped.
IEMOCAP_CODES = ("neu", "hap", "ang", "sad", "exc", "fru", "xxx")
IEMOCAP_WORDS = ("well", "i", "think", "that", "is", "fine", "really", "no", "you", "know", "what", "okay")


def write_iemocap_tree(root: Path, sessions: int = 5, utterances_per_dialog: int = 14, seconds: float = 0.4) -> dict:
    """An IEMOCAP release tree (Session1..N) in the real file formats, with generated audio.

    Each session has two dialogs (`Ses0NF_impro01`, `Ses0NM_script01_1`) whose utterances alternate between the
    female and the male actor, each actor cycling through `IEMOCAP_CODES` (by default once: 10 kept utterances and 4
    dropped ones per dialog). EmoEvaluation files carry the header, annotator lines
    and blank lines of the release, an annotator subfolder holds a file that must not be read, and transcriptions mix
    utterance lines with lines that are not utterances.

    Returns:
        `{utterance id: {"emotion", "text", "session", "speaker", "path"}}` for every utterance written.
    """
    rng = np.random.default_rng(0)
    expected = {}
    for session in range(1, sessions + 1):
        session_folder = root / f"Session{session}"
        evaluation_folder = session_folder / "dialog" / "EmoEvaluation"
        (evaluation_folder / "Categorical").mkdir(parents=True)
        (evaluation_folder / "Categorical" / f"Ses0{session}F_impro01_e2_cat.txt").write_text(
            f"Ses0{session}F_impro01_F000 :Neutral state; ()\n"
        )
        (session_folder / "dialog" / "transcriptions").mkdir(parents=True)
        for dialog in (f"Ses0{session}F_impro01", f"Ses0{session}M_script01_1"):
            wav_folder = session_folder / "sentences" / "wav" / dialog
            wav_folder.mkdir(parents=True)
            evaluation = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            transcription = []
            start = 2.5
            for index in range(utterances_per_dialog):
                gender = "FM"[index % 2]
                utterance_id = f"{dialog}_{gender}{index // 2:03d}"
                code = IEMOCAP_CODES[(index // 2) % len(IEMOCAP_CODES)]
                end = start + seconds
                evaluation += [
                    f"[{start:.4f} - {end:.4f}]\t{utterance_id}\t{code}\t[2.5000, 3.0000, 2.5000]",
                    "C-E2:\tNeutral;\t()",
                    "C-E3:\tNeutral;\t(curious)",
                    "A-E3:\tval 3; act 2; dom  2;\t()",
                    "",
                ]
                text = " ".join(rng.choice(IEMOCAP_WORDS, size=int(rng.integers(2, 6)))).capitalize() + "."
                transcription.append(f"{utterance_id} [{start:08.4f}-{end:08.4f}]: {text}")
                time = np.arange(int(seconds * 16000)) / 16000
                tone = 0.3 * np.sin(2 * np.pi * (120 + 30 * IEMOCAP_CODES.index(code)) * time)
                soundfile.write(wav_folder / f"{utterance_id}.wav", tone + 0.02 * rng.standard_normal(len(time)), 16000)
                expected[utterance_id] = {"emotion": code, "text": text, "session": f"Session{session}",
                                          "speaker": f"Ses0{session}{gender}", "path": wav_folder / f"{utterance_id}.wav"}
                start = end + 0.3
            (evaluation_folder / f"{dialog}.txt").write_text("\n".join(evaluation) + "\n")
            # Lines that are not utterances: an overlap marker id and a line without a time span.
            transcription.insert(1, f"{dialog}_MXX0 [000.0000-001.0000]: [LAUGHTER]")
            transcription.append("M: [BREATHING]")
            (session_folder / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(transcription) + "\n")
    return expected


@pytest.fixture
def make_iemocap_tree():
    """`write_iemocap_tree`, for tests that build their own tree."""
    return write_iemocap_tree


@pytest.fixture(scope="session")
def iemocap_tree(tmp_path_factory):
    """`(root, expected)` of a 5-session IEMOCAP tree (see `write_iemocap_tree`), shared by the tests that only read
    it."""
    root = tmp_path_factory.mktemp("iemocap")
    return root, write_iemocap_tree(root)


TINY_CTAL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 64, "max_audio_frames": 800}


@pytest.fixture(scope="session")
def tiny_ctal_checkpoint(iemocap_tree, tmp_path_factory):
    """A tiny CTAL folder as pre-training leaves it (random weights, a tokenizer trained on the IEMOCAP tree's
    transcripts), to fine-tune in end-to-end tests."""
    texts = [value["text"] for value in iemocap_tree[1].values()]
    tokenizer = train_ctal_tokenizer(texts * 10, vocab_size=300)
    config = CTALConfig(vocab_size=len(tokenizer), **TINY_CTAL)
    folder = tmp_path_factory.mktemp("tiny-ctal")
    CTALForPreTraining(config).save_pretrained(folder)
    processor_for_config(tokenizer, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_cma_checkpoint(iemocap_tree, tmp_path_factory):
    """A tiny AudioTextCMA folder (random wav2vec 2.0 and BERT encoders, a WordPiece vocabulary of the tree's words):
    the second model family, which must train through the same script."""
    from transformers import BertConfig, BertTokenizer, Wav2Vec2Config, Wav2Vec2FeatureExtractor

    from ctal_hf import AudioTextCMAConfig, AudioTextCMAForSequenceClassification, AudioTextCMAProcessor

    folder = tmp_path_factory.mktemp("tiny-cma")
    words = sorted({word.strip(".").lower() for value in iemocap_tree[1].values() for word in value["text"].split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "."]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    speech = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                            do_stable_layer_norm=True, conv_bias=True, conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3),
                            conv_stride=(5, 2, 2), mask_time_prob=0.0, vocab_size=10)
    text = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64)
    config = AudioTextCMAConfig(audio_config=speech, text_config=text, hidden_size=16, conv_dim=(16, 16),
                                num_attention_heads=4, intermediate_size=16, num_labels=4)
    AudioTextCMAForSequenceClassification(config).save_pretrained(folder)
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), model_max_length=32)
    AudioTextCMAProcessor(Wav2Vec2FeatureExtractor(return_attention_mask=True), tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def asr_dir(tmp_path_factory):
    """A tiny randomly initialised wav2vec2 CTC recogniser at 8 kHz (so the pipeline must resample for it), whose
    blank token is suppressed so that every frame emits a letter and the transcript is never empty."""
    folder = tmp_path_factory.mktemp("asr")
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{letter: 3 + k for k, letter in enumerate("abcdefghij")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="|").save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=8000).save_pretrained(folder)
    config = Wav2Vec2Config(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(config)
    with torch.no_grad():
        model.lm_head.bias[0] = -1e4
    model.save_pretrained(folder)
    return folder
