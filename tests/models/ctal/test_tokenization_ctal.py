"""CTALTokenizer: the original vocabulary's ids, the built-in normalisation, training, save/load and the CLI."""

import json
import os
import random
import re
import runpy
from pathlib import Path

import pytest
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, RobertaTokenizer

from ctal_hf import CTALConfig, CTALTokenizer, train_ctal_tokenizer
from ctal_hf.data.sources import iter_transcripts
from ctal_hf.models.ctal.tokenization_ctal import ctal_normalizer, main


ROOT = Path(__file__).resolve().parents[3]
# The authors' files are read in place (see ../shared/reference/ctal-libri-bbpe/NOTICE.md), never copied here.
ORIGINAL = Path(os.environ.get("CTAL_ORIGINAL_TOKENIZER", ROOT.parent / "shared" / "reference" / "ctal-libri-bbpe"))
needs_original = pytest.mark.skipif(
    not (ORIGINAL / "vocab.json").is_file(),
    reason=f"original tokenizer files not found at {ORIGINAL}; set CTAL_ORIGINAL_TOKENIZER to their folder",
)

SENTENCES = [
    "Hello, World! It's 1984... Isn't it?",
    "I'M 42 YEARS OLD. WE'LL SEE; THEY'D SAY: \"NO\"!",
    "  Leading and   trailing   spaces  ",
    "Café Über naïve Ñandú façade déjà-vu",
    "ΟΔΟΣ ΚΑΙ ΛΟΓΟΣ. Σοφία's ΣΑΣ'Α",
    "東京 2024年 — Zürich → €3.50 😀",
    "tabs\tand\nnewlines stay?!",
    "...",
    "x",
]


def original_normalisation(text: str) -> str:
    """m2p_finetune.py of the original code."""
    return " ".join([word.lower() for word in re.split(" +", re.sub(r"[\.,\?\!]", " ", text))])


@pytest.fixture(scope="module")
def original():
    return CTALTokenizer.from_original_files(ORIGINAL)


@pytest.fixture(scope="module")
def corpus():
    random.seed(0)
    words = (
        "the a cat dog sat on mat it's isn't we'll quickly slowly running jumped over lazy brown fox 1984 42".split()
    )
    return [
        " ".join(random.choice(words) for _ in range(random.randint(3, 12))).upper()
        + random.choice([".", "?", "!", ""])
        for _ in range(300)
    ]


@pytest.fixture(scope="module")
def trained(corpus):
    return train_ctal_tokenizer(corpus, vocab_size=350, min_frequency=2)


@needs_original
def test_original_files_load_with_their_special_ids(original):
    assert len(original) == 30000
    assert [original.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    assert (original.bos_token_id, original.pad_token_id, original.eos_token_id) == (0, 1, 2)
    assert (original.unk_token_id, original.mask_token_id) == (3, 4)
    assert original.model_max_length == CTALConfig().max_position_embeddings == 512
    assert original.add_prefix_space is False


@needs_original
@pytest.mark.parametrize("sentence", SENTENCES)
def test_original_ids_are_reproduced(original, sentence):
    # The original pipeline: normalise in Python, then a plain byte-level BPE with the same files, <s> ... </s>.
    plain = ByteLevelBPETokenizer(str(ORIGINAL / "vocab.json"), str(ORIGINAL / "merges.txt"), add_prefix_space=False)
    expected = [0] + plain.encode(original_normalisation(sentence)).ids + [2]
    assert original(sentence)["input_ids"] == expected
    roberta = RobertaTokenizer.from_pretrained(str(ORIGINAL))
    assert roberta(original_normalisation(sentence))["input_ids"] == expected


@needs_original
def test_other_ways_to_load_the_original_files(original):
    by_files = CTALTokenizer(vocab_file=str(ORIGINAL / "vocab.json"), merges_file=str(ORIGINAL / "merges.txt"))
    by_folder = CTALTokenizer.from_pretrained(str(ORIGINAL))
    for tokenizer in (by_files, by_folder):
        assert [tokenizer(s)["input_ids"] for s in SENTENCES] == [original(s)["input_ids"] for s in SENTENCES]


@needs_original
def test_mask_token_absorbs_the_space_before_it(original):
    ids = original("The <mask> sat.")["input_ids"]
    assert ids == [0, original.convert_tokens_to_ids("the"), 4] + original("x sat.")["input_ids"][2:]
    assert original("The<mask> sat.")["input_ids"] == ids
    assert original.decode(ids) == "<s>the<mask> sat </s>"


def test_normaliser_equals_the_original_python(corpus):
    normaliser = ctal_normalizer()
    random.seed(1)
    alphabet = [chr(c) for c in [*range(32, 127), *range(0xC0, 0x180), *range(0x2B0, 0x310), *range(0x370, 0x400)]]
    alphabet += ["Σ"] * 20 + ["\t", "\n", "İ", "ẞ", "’", "東"]
    fuzz = ["".join(random.choice(alphabet) for _ in range(random.randint(0, 10))) for _ in range(2000)]
    for text in SENTENCES + corpus + fuzz:
        assert normaliser.normalize_str(text) == original_normalisation(text), repr(text)


def test_trained_tokenizer(trained, corpus):
    assert len(trained) <= 350
    assert [trained.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    encoded = trained(corpus[0])["input_ids"]
    assert encoded[0] == 0 and encoded[-1] == 2
    assert encoded == trained(corpus[0].lower().replace(".", " "))["input_ids"]  # normalisation is built in
    assert trained.convert_tokens_to_ids("Ġquickly") > 4  # learned from the lower-cased corpus


def test_trained_tokenizer_round_trips(trained, corpus, tmp_path):
    trained.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "CTALTokenizer"
    assert json.loads((tmp_path / "tokenizer.json").read_text())["normalizer"]["type"] == "Sequence"
    loaded = [CTALTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)]
    CTALConfig().save_pretrained(tmp_path)  # with a config.json, AutoTokenizer resolves through CTALConfig
    loaded.append(AutoTokenizer.from_pretrained(tmp_path))
    texts = corpus[:20] + ["Mixed CASE, With Punctuation!", "a <mask> b"]
    for tokenizer in loaded:
        assert type(tokenizer) is CTALTokenizer
        assert tokenizer(texts)["input_ids"] == trained(texts)["input_ids"]
        assert tokenizer.backend_tokenizer.normalizer.normalize_str("A.B") == "a b"
        assert tokenizer.mask_token_id == 4 and tokenizer.pad_token_id == 1


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="Give both the vocabulary and the merges"):
        CTALTokenizer(vocab={"<s>": 0})
    with pytest.raises(ValueError, match="at least 261"):
        train_ctal_tokenizer(["a b c"], vocab_size=100)
    with pytest.raises(TypeError, match="not one string"):
        train_ctal_tokenizer("a whole corpus in one string")
    with pytest.raises(FileNotFoundError, match="has no vocab.json or merges.txt"):
        CTALTokenizer.from_original_files(ROOT)


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_training_on_no_transcript_refuses(tmp_path, capsys, content):
    (tmp_path / "empty.txt").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="No transcript to train the tokenizer on: 0 texts given, none with a word"):
        train_ctal_tokenizer(iter_transcripts(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="2 texts given, none with a word"):
        train_ctal_tokenizer(["", "   "])
    output = tmp_path / "tokenizer"
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "empty.txt"), "--output-dir", str(output)])
    assert "No transcript to train the tokenizer on" in str(exit_info.value.code)
    assert "nothing was saved" in str(exit_info.value.code) and not output.exists()


def test_training_without_a_merge_warns(caplog):
    with caplog.at_level("WARNING"):
        tokenizer = train_ctal_tokenizer(["hello"])
    assert len(tokenizer) == 261 and "learned no merge" in caplog.text and "--min-frequency" in caplog.text


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,words\na.wav,hi\n", encoding="utf-8")
    for inputs, message in (
        ([str(tmp_path / "missing.txt")], "No transcript file at .*missing.txt"),
        ([str(tmp_path / "manifest.csv")], ".*manifest.csv' has no text column: looked for"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*inputs, "--output-dir", str(tmp_path / "out")])
        assert re.search(f"^ctal-train-tokenizer: {message}", str(exit_info.value.code))


def test_cli(corpus, tmp_path, capsys, monkeypatch, folder_digest):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--vocab-size" in capsys.readouterr().out

    (tmp_path / "a.txt").write_text("\n".join(corpus[:150]), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus[150:]), encoding="utf-8")
    output = tmp_path / "tokenizer"
    # The underscored spelling of the other commands works as well as the dashed one.
    assert (
        main([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl"), "--vocab_size", "300", "--output_dir", str(output)])
        == 0
    )
    assert "Saved a CTAL tokenizer" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert type(tokenizer) is CTALTokenizer and len(tokenizer) <= 300

    with pytest.raises(SystemExit):
        main(["--output-dir", str(output)])  # no input
    assert "give transcript files and/or --dataset" in capsys.readouterr().err

    # A saved tokenizer is not replaced unless --overwrite.
    before = folder_digest(output)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "a.txt"), "--vocab_size", "280", "--output_dir", str(output)])
    error = str(exit_info.value.code)
    assert error.startswith(f"ctal-train-tokenizer: --output_dir {output} is not empty: it holds saved model files "
                            "(tokenizer.json, tokenizer_config.json)")
    assert "pass --overwrite to replace them" in error and folder_digest(output) == before
    assert main([str(tmp_path / "a.txt"), "--vocab_size", "280", "--output_dir", str(output), "--overwrite"]) == 0
    assert len(AutoTokenizer.from_pretrained(output)) <= 280 and folder_digest(output) != before

    # The example script is the same CLI.
    monkeypatch.setattr("sys.argv", ["train_tokenizer.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "examples" / "train_tokenizer.py"), run_name="__main__")
    assert exit_info.value.code == 0 and "ctal-train-tokenizer" in capsys.readouterr().out
