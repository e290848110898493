"""End-to-end checks of examples/run_speaker_verification.py and examples/plot_embeddings.py on the demo corpus's
voices (speakers 101-104 train, 105-108 are the unseen test speakers) with a tiny CTAL checkpoint."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctal_hf import CTALConfig, CTALForPreTraining, train_ctal_tokenizer
from ctal_hf.metrics.verification import compute_eer
from ctal_hf.models.ctal.processing_ctal import processor_for_config
from ctal_hf.output_dir import OutputDirNotEmptyError
from ctal_hf.speaker_verification import read_trials


pytest.importorskip("espeakng_loader")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
import plot_embeddings  # noqa: E402
import run_speaker_verification  # noqa: E402

from ctal_hf.data.demo_corpus import build_demo_corpus  # noqa: E402


FAST = ["--max_steps", "2", "--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", "2",
        "--save_steps", "2", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
        "--learning_rate", "1e-3", "--report_to", "none", "--disable_tqdm", "true"]
TEST_SPEAKERS = ("105", "106", "107", "108")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The demo corpus with 8 utterances of each of its 8 voices."""
    return build_demo_corpus(output_dir=tmp_path_factory.mktemp("corpus"), num_utterances=64)


@pytest.fixture(scope="module")
def tiny(corpus, tmp_path_factory):
    """A tiny CTAL checkpoint as pre-training leaves it (random weights, a tokenizer of the corpus's transcripts)."""
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    tokenizer = train_ctal_tokenizer(texts * 10, vocab_size=300)
    config = CTALConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, max_audio_frames=800)
    folder = tmp_path_factory.mktemp("tiny")
    CTALForPreTraining(config).save_pretrained(folder)
    processor_for_config(tokenizer, config).save_pretrained(folder)
    return folder


def arguments(corpus, model, output_dir, *extra):
    return ["--model_name_or_path", str(model), "--dataset", str(corpus), "--test_speakers", ",".join(TEST_SPEAKERS),
            "--num_trials", "40", "--output_dir", str(output_dir), *FAST, *extra]


@pytest.fixture(scope="module")
def trained(corpus, tiny, tmp_path_factory):
    """A fine-tuning run with adaptive s-norm against the 4 training speakers."""
    output_dir = tmp_path_factory.mktemp("sv") / "run"
    run_speaker_verification.main(arguments(corpus, tiny, output_dir, "--score_norm", "as-norm", "--cohort_top_n", "2",
                                            "--cohort_utterances_per_speaker", "3"))
    return output_dir


def test_writes_every_output(trained):
    results = json.loads((trained / "eval_results.json").read_text())
    assert results["eval_protocol"] == "trials"
    assert results["eval_num_test_speakers"] == 4 and results["eval_num_test_utterances"] == 32
    assert results["eval_num_trials"] == 40 and results["eval_num_target_trials"] == 20
    assert results["eval_score_norm"] == "cosine, as-norm (4 training speakers, top 2)"
    for key in ("eval_eer", "eval_min_dcf_0.01", "eval_min_dcf_0.001", "speaker_classification_eval_ua"):
        assert 0 <= results[key] <= 1, key
    everything = json.loads((trained / "all_results.json").read_text())
    assert everything["eval_eer"] == results["eval_eer"] and "train_loss" in everything

    trials = read_trials(trained / "trials.txt")
    assert len(trials) == 40 and sum(trial.label for trial in trials) == 20
    speakers = {name.split("-")[0] for trial in trials for name in (trial.enroll, trial.test)}
    assert speakers == set(TEST_SPEAKERS)
    scores = pd.read_csv(trained / "scores.txt", sep=" ", names=["enroll", "test", "score", "kind"])
    assert list(scores["enroll"]) == [trial.enroll for trial in trials]
    assert list(scores["kind"]) == ["target" if trial.label else "nontarget" for trial in trials]
    labels = [trial.label for trial in trials]
    assert compute_eer(scores["score"], labels)[0] == pytest.approx(results["eval_eer"], abs=1e-6)
    assert (trained / "det_curve.png").read_bytes().startswith(b"\x89PNG")

    config = json.loads((trained / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["101", "102", "103", "104"]  # the training speakers only
    card = (trained / "README.md").read_text()
    assert "speaker verification" in card and "run_speaker_verification.py" in card
    assert "utterance_embeddings" in card and "eer" in card
    cached = list((trained / run_speaker_verification.EMBEDDINGS_DIR).rglob("*.npy"))
    assert len(cached) == 32 + 4 * 3  # the test utterances and the cohort's


def test_trial_file_by_audio_path_and_cache_reproduce_the_scores(trained, corpus, tmp_path):
    """A given trial list naming the files by the end of their path (as VoxCeleb lists do) scores the same trials the
    same way; the fine-tuned model is evaluated as given, from the shared embedding cache, which is not recomputed."""
    trials = read_trials(trained / "trials.txt")
    by_path = tmp_path / "veri_test.txt"
    by_path.write_text("".join(
        f"{trial.label} " + " ".join("/".join([name.split("-")[0], name.split("-")[1], f"{name}.flac"])
                                     for name in (trial.enroll, trial.test)) + "\n" for trial in trials))
    cache = trained / run_speaker_verification.EMBEDDINGS_DIR
    before = {path: path.stat().st_mtime_ns for path in cache.rglob("*.npy")}
    output_dir = tmp_path / "again"
    run_speaker_verification.main([
        "--model_name_or_path", str(trained), "--do_train", "false", "--dataset", str(corpus), "--test_speakers",
        ",".join(TEST_SPEAKERS), "--trials", str(by_path), "--embedding_cache_dir", str(cache), "--score_norm",
        "as-norm", "--cohort_top_n", "2", "--cohort_utterances_per_speaker", "3", "--output_dir", str(output_dir),
        "--report_to", "none",
    ])
    assert {path: path.stat().st_mtime_ns for path in cache.rglob("*.npy")} == before
    first = pd.read_csv(trained / "scores.txt", sep=" ", header=None)
    second = pd.read_csv(output_dir / "scores.txt", sep=" ", header=None)
    np.testing.assert_allclose(second[2], first[2], atol=1e-6)
    assert json.loads((output_dir / "eval_results.json").read_text())["eval_trials_source"] == str(by_path)


def test_a_finished_run_is_not_overwritten(trained, corpus, tiny):
    with pytest.raises(OutputDirNotEmptyError, match="--overwrite_output_dir"):
        run_speaker_verification.main(arguments(corpus, tiny, trained))


def test_test_speaker_seen_in_training_is_refused(corpus, tiny, tmp_path):
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    for row in rows:
        row["audio"] = str(corpus.parent / row["audio"])
        row["split"] = "test" if str(row["speaker_id"]) in TEST_SPEAKERS else "train"
    rows[0]["split"] = "test"  # one utterance of a training speaker in the test data
    manifest = tmp_path / "data.jsonl"
    pd.DataFrame(rows).to_json(manifest, orient="records", lines=True)
    shared = rows[0]["speaker_id"]
    with pytest.raises(ValueError, match=f"test speakers also occur in the training data \\({shared}\\)"):
        run_speaker_verification.main(["--model_name_or_path", str(tiny), "--dataset", str(manifest), "--train_split",
                                       "train", "--test_split", "test", "--output_dir", str(tmp_path / "out"), *FAST])
    assert not (tmp_path / "out").exists()


def test_authors_random_protocol_is_labelled(corpus, tiny, tmp_path):
    """On the corpus as a LibriSpeech folder (its release layout), with the pre-trained checkpoint as it is."""
    output_dir = tmp_path / "ge2e"
    run_speaker_verification.main(["--model_name_or_path", str(tiny), "--do_train", "false", "--dataset",
                                   str(corpus.parent),
                                   "--test_speakers", ",".join(TEST_SPEAKERS), "--protocol", "ge2e_random",
                                   "--output_dir", str(output_dir), "--report_to", "none"])
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert 0 <= results["eval_ge2e_random_eer"] <= 1
    assert "NOT comparable" in results["eval_protocol"] and "seed 0" in results["eval_protocol"]
    assert not (output_dir / "trials.txt").exists() and "eval_eer" not in results
    assert not (output_dir / "README.md").exists()  # no model was written here, so no model card either


@pytest.mark.parametrize(
    "extra, error",
    [
        ([], "exactly one of --test_split and --test_speakers"),
        (["--test_speakers", "105", "--protocol", "ge2e_random", "--trials", "t.txt"], "drop --trials"),
        (["--test_speakers", "105", "--score_norm", "znorm"], "--score_norm must be one of"),
        (["--test_speakers", "999"], r"--test_speakers \['999'\] have no utterances"),
        (["--test_speakers", "105,106", "--num_trials", "500"], r"ask for fewer trials. \(--num_trials 500\)"),
        (["--test_speakers", "105", "--score_norm", "as-norm"], "--cohort_top_n 300 exceeds the cohort of 7 training"),
        (["--test_speakers", "105,106", "--protocol", "ge2e_random"],
         "draws 4 test speakers at a time; the test data has 2"),
        (["--test_speakers", "105,106", "--num_trials", "12", "--validation_fraction", "0.05"],
         "holds out 3 of 48 utterances, fewer than the 6 training speakers"),
    ],
)
def test_bad_arguments_fail_before_any_work(corpus, tiny, tmp_path, extra, error):
    with pytest.raises(ValueError, match=error):
        run_speaker_verification.main(["--model_name_or_path", str(tiny), "--dataset", str(corpus), "--output_dir",
                                       str(tmp_path / "out"), *extra])
    assert not (tmp_path / "out").exists()


def test_plot_embeddings_draws_the_requested_utterances(corpus, tiny, tmp_path):
    output = tmp_path / "tsne.png"
    arguments = ["--model_name_or_path", str(tiny), "--dataset", str(corpus), "--color_by", "speaker_id",
                 "--max_per_class", "3", "--perplexity", "5", "--output", str(output)]
    points = plot_embeddings.main(arguments)
    assert output.read_bytes().startswith(b"\x89PNG")
    table = pd.read_csv(output.with_suffix(".tsv"), sep="\t", dtype={"class": str})
    assert len(table) == len(points) == 24
    assert table["class"].value_counts().to_dict() == {str(speaker): 3 for speaker in range(101, 109)}
    assert all(name.split("-")[0] == speaker for name, speaker in zip(table["id"], table["class"]))
    assert plot_embeddings.main([*arguments, "--overwrite"])["id"].tolist() == table["id"].tolist()  # seeded draw
    with pytest.raises(FileExistsError, match="--overwrite"):
        plot_embeddings.main(arguments)


@pytest.mark.slow
def test_fine_tuned_embeddings_beat_random_weights(tmp_path):
    """The README's learning check: a CTAL of the demo config trained as a speaker classifier on voices 101-104 (30
    utterances each) from random weights, against the same random weights untrained, on 400 trials of the unseen voices
    105-108, two seeds. Measured: EER 0.225 / 0.185 fine-tuned, 0.360 / 0.360 untrained."""
    corpus = build_demo_corpus(output_dir=tmp_path / "corpus", num_utterances=240)
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    tokenizer = train_ctal_tokenizer(texts * 10, vocab_size=300)
    processor = tmp_path / "processor"
    processor_for_config(tokenizer, CTALConfig(vocab_size=len(tokenizer))).save_pretrained(processor)
    common = ["--config_name", str(ROOT / "examples/configs/ctal-demo.json"), "--processor_name", str(processor),
              "--dataset", str(corpus), "--test_speakers", ",".join(TEST_SPEAKERS), "--num_trials", "400",
              "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--report_to", "none",
              "--disable_tqdm", "true"]
    eers = {"fine-tuned": [], "random": []}
    for seed in ("0", "1"):
        for series, extra in (("fine-tuned", ["--learning_rate", "1e-3", "--num_train_epochs", "6",
                                              "--warmup_steps", "10"]), ("random", ["--do_train", "false"])):
            output_dir = tmp_path / f"{series}-{seed}"
            run_speaker_verification.main([*common, *extra, "--seed", seed, "--output_dir", str(output_dir)])
            eers[series].append(json.loads((output_dir / "eval_results.json").read_text())["eval_eer"])
    for fine_tuned, random in zip(eers["fine-tuned"], eers["random"]):
        assert fine_tuned <= random - 0.08, eers


def test_random_weights_need_a_tokenizer(corpus, tmp_path):
    with pytest.raises(ValueError, match="has no tokenizer: pass --processor_name"):
        run_speaker_verification.main(["--config_name", str(ROOT / "examples/configs/ctal-demo.json"), "--dataset",
                                       str(corpus), "--test_speakers", "105", "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_second_model_family_runs_through_the_same_script(corpus, tiny_cma_checkpoint, tmp_path):
    """AudioTextCMA: its pooled vector is the embedding; plain s-norm against all training speakers."""
    from transformers import AutoModelForSequenceClassification

    from ctal_hf import AudioTextCMAForSequenceClassification

    output_dir = tmp_path / "cma"
    run_speaker_verification.main([*arguments(corpus, tiny_cma_checkpoint, output_dir, "--score_norm", "s-norm"),
                                   "--ignore_mismatched_sizes", "true"])
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["eval_score_norm"] == "cosine, s-norm (4 training speakers)" and 0 <= results["eval_eer"] <= 1
    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert isinstance(model, AudioTextCMAForSequenceClassification) and model.config.num_labels == 4


def test_other_label_columns_unknown_trial_names_and_overwrite(trained, corpus, tmp_path):
    """A source whose rows also carry a label (here an emotion) is classified by speaker; a trial naming no test
    utterance is an error; --overwrite_output_dir replaces an earlier run but keeps its embedding cache."""
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    for number, row in enumerate(rows):
        row["audio"] = str(corpus.parent / row["audio"])
        row["emotion"] = ("neutral", "happy")[number % 2]
    manifest = tmp_path / "data.jsonl"
    pd.DataFrame(rows).to_json(manifest, orient="records", lines=True)
    output_dir = tmp_path / "labelled"
    common = ["--model_name_or_path", str(trained), "--do_train", "false", "--dataset", str(manifest),
              "--test_speakers", ",".join(TEST_SPEAKERS), "--num_trials", "40", "--output_dir", str(output_dir),
              "--report_to", "none"]
    run_speaker_verification.main(common)
    cache = output_dir / run_speaker_verification.EMBEDDINGS_DIR
    cached = sorted(cache.rglob("*.npy"))
    assert len(cached) == 32 and (output_dir / "scores.txt").is_file()

    trials = tmp_path / "unknown.txt"
    trials.write_text("1 105-1004-0000 999-1-0001\n")
    with pytest.raises(ValueError, match="'999-1-0001' matches no test utterance"):
        run_speaker_verification.main([*common, "--overwrite_output_dir", "--trials", str(trials)])
    assert (output_dir / "scores.txt").is_file()  # nothing was removed before the arguments were found wrong

    run_speaker_verification.main([*common, "--overwrite_output_dir", "--num_trials", "20"])
    assert sorted(cache.rglob("*.npy")) == cached
    assert len((output_dir / "scores.txt").read_text().splitlines()) == 20
