"""End-to-end checks of examples/run_pretraining.py on a small synthesised corpus."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoModel, AutoModelForPreTraining, AutoProcessor

from ctal_hf import CTALForPreTraining, CTALModel
from ctal_hf.data.demo_corpus import build_demo_corpus
from ctal_hf.output_dir import IncompleteCheckpointError, OutputDirNotEmptyError


ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
import run_pretraining  # noqa: E402
from data_logging import log_training_data  # noqa: E402

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64, "max_audio_frames": 800}  # dropout on (0.1): resume must restore its RNG


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_demo_corpus(output_dir=tmp_path_factory.mktemp("corpus"), num_utterances=24)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def run_args(corpus, config, output_dir, *extra):
    return [
        "--dataset", str(corpus), "--config_name", str(config), "--tokenizer_vocab_size", "300",
        "--output_dir", str(output_dir), "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--logging_steps", "1", "--report_to", "none", "--seed", "0", "--validation_fraction", "0.2",
        "--disable_tqdm", "true", *extra,
    ]


def test_end_to_end_checkpoint_loads_and_logs_both_losses(corpus, tiny_config, tmp_path):
    out = tmp_path / "run"
    run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "3", "--eval_strategy", "steps",
                                  "--eval_steps", "3", "--save_steps", "3"))
    model = AutoModel.from_pretrained(out)
    assert isinstance(model, CTALModel)
    assert isinstance(AutoModelForPreTraining.from_pretrained(out), CTALForPreTraining)
    processor = AutoProcessor.from_pretrained(out)
    assert len(processor.tokenizer) == model.config.vocab_size
    assert (out / "README.md").exists() and (out / "checkpoint-3").is_dir()
    assert not (out / "trained_tokenizer").exists()

    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    train_logs = [entry for entry in history if "loss" in entry]
    assert train_logs and all("mlm_loss" in entry and "mcam_loss" in entry for entry in train_logs)
    assert all(entry["mlm_loss"] > 0 and entry["mcam_loss"] > 0 for entry in train_logs)
    eval_logs = [entry for entry in history if "eval_loss" in entry]
    assert eval_logs and "eval_mlm_loss" in eval_logs[0] and "eval_mcam_loss" in eval_logs[0]

    batch = processor(audio=[torch.randn(8000).numpy()], text=["hello there"], sampling_rate=16000, return_tensors="pt")
    assert model(**batch).audio_last_hidden_state.shape[1] == batch["audio_features"].shape[1]


@pytest.mark.parametrize("route", ["--precompute_features", "--streaming"])
def test_precomputed_and_streamed_training(corpus, tiny_config, tmp_path, route):
    out = tmp_path / "run"
    run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "2", route, "true"))
    assert isinstance(AutoModel.from_pretrained(out), CTALModel)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "mcam_loss" in entry] == [1, 2]


def test_resume_matches_uninterrupted_run(corpus, tiny_config, tmp_path):
    """24 rows in batches of 4: 6 steps per epoch, so checkpoint-8 is mid-way through epoch 1. With the default
    length-grouped sampler, the resumed epoch must be ordered (and masked) as in the uninterrupted run."""
    steps = ("--max_steps", "10", "--save_steps", "4")
    full = tmp_path / "full"
    run_pretraining.main(run_args(corpus, tiny_config, full, *steps))
    # An interrupted run leaves exactly the step-8 checkpoint: resume from a copy of it elsewhere.
    resumed = tmp_path / "resumed"
    shutil.copytree(full / "checkpoint-8", resumed / "checkpoint-8")
    run_pretraining.main(run_args(corpus, tiny_config, resumed, *steps,
                                  "--resume_from_checkpoint", str(resumed / "checkpoint-8")))
    full_weights = load_file(full / "model.safetensors")
    resumed_weights = load_file(resumed / "model.safetensors")
    assert full_weights.keys() == resumed_weights.keys()
    for key in full_weights:
        torch.testing.assert_close(resumed_weights[key], full_weights[key], atol=1e-6, rtol=0, msg=key)
    final = [json.loads((d / "trainer_state.json").read_text())["log_history"] for d in (full, resumed)]
    losses = [[entry["loss"] for entry in history if "loss" in entry] for history in final]
    # The resumed history starts with the checkpoint's 8 entries.
    assert len(losses[0]) == 10 and losses[1] == pytest.approx(losses[0], abs=1e-6)


def test_distributed_two_processes_see_different_data(corpus, tiny_config, tmp_path):
    data_log = tmp_path / "data-log"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(ROOT / "examples/accelerate/cpu-2proc.yaml"), str(ROOT / "tests/examples/data_logging.py"), str(data_log),
        *run_args(corpus, tiny_config, tmp_path / "ddp", "--max_steps", "2", "--use_cpu", "true",
                  "--dataloader_num_workers", "0"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [set((data_log / f"rank-{rank}.txt").read_text().split()) for rank in (0, 1)]
    assert all(len(seen) >= 4 for seen in ranks)
    assert not ranks[0] & ranks[1], "the two processes trained on the same utterances"
    assert isinstance(AutoModel.from_pretrained(tmp_path / "ddp"), CTALModel)


@pytest.mark.slow
def test_distributed_resume_matches_uninterrupted_run(corpus, tiny_config, tmp_path):
    """Two processes, 3 steps per epoch: checkpoint-4 is mid-way through epoch 1. accelerate's `set_epoch` does not
    reach the sampler of the resumed epoch here, the trainer's epoch callback does."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "examples/accelerate/cpu-2proc.yaml"), str(ROOT / "examples/run_pretraining.py")]
    steps = ("--max_steps", "8", "--save_steps", "4", "--use_cpu", "true", "--dataloader_num_workers", "0")
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    for out, extra in ((full, ()), (resumed, ("--resume_from_checkpoint", str(resumed / "checkpoint-4")))):
        if extra:
            shutil.copytree(full / "checkpoint-4", resumed / "checkpoint-4")
        result = subprocess.run([*launch, *run_args(corpus, tiny_config, out, *steps, *extra)],
                                capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    full_weights, resumed_weights = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    for key in full_weights:
        torch.testing.assert_close(resumed_weights[key], full_weights[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.slow
def test_demo_corpus_losses_fall(tmp_path):
    """The README's demo recipe (600 steps, ~3 minutes on 2 cores): both pre-training losses fall clearly."""
    corpus = build_demo_corpus(output_dir=tmp_path / "corpus", num_utterances=300)
    out = tmp_path / "run"
    run_pretraining.main(run_args(corpus, ROOT / "examples/configs/ctal-demo.json", out, "--max_steps", "600",
                                  "--train_split", "train",
                                  "--learning_rate", "1e-3", "--warmup_steps", "50", "--logging_steps", "25",
                                  "--per_device_train_batch_size", "8", "--tokenizer_vocab_size", "1000"))
    history = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    first = history[0]
    last = {name: sum(e[name] for e in history[-4:]) / 4 for name in ("mlm_loss", "mcam_loss")}
    assert last["mlm_loss"] < 0.6 * first["mlm_loss"], (first, last)
    assert last["mcam_loss"] < 0.95 * first["mcam_loss"], (first, last)


def test_push_to_hub_offline_fails_before_any_work(corpus, tiny_config, tmp_path, monkeypatch):
    import huggingface_hub

    from ctal_hf.training.hub import HubUnreachableError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "never-written"
    with pytest.raises(HubUnreachableError, match="offline mode"):
        run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "1", "--push_to_hub", "true"))
    assert not out.exists()


def test_single_task_ablation_still_evaluates(corpus, tiny_config, tmp_path):
    """Table 4 row c (w/o MCAM): the collator makes no MCAM labels, evaluation still reports its loss."""
    out = tmp_path / "mlm-only"
    run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "2", "--eval_strategy", "steps",
                                  "--eval_steps", "2", "--config_overrides", "mcam_loss_weight=0"))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    evaluation = [entry for entry in history if "eval_loss" in entry][0]
    assert evaluation["eval_loss"] == pytest.approx(evaluation["eval_mlm_loss"]) and "eval_mcam_loss" not in evaluation
    assert all("mcam_loss" not in entry for entry in history)


def test_continue_from_checkpoint_with_overrides(corpus, tiny_config, tmp_path):
    first = tmp_path / "first"
    run_pretraining.main(run_args(corpus, tiny_config, first, "--max_steps", "1"))
    second = tmp_path / "second"
    run_pretraining.main(run_args(corpus, tiny_config, second, "--max_steps", "1", "--model_name_or_path", str(first),
                                  "--config_overrides", "audio_causal_self_attention=true,mlm_loss_weight=0.5"))
    model = CTALForPreTraining.from_pretrained(second)
    assert model.config.audio_causal_self_attention and model.config.mlm_loss_weight == 0.5
    assert model.ctal.audio_encoder.layer[0].attention.self.is_causal
    with pytest.raises(Exception, match="size mismatch|mismatch"):
        run_pretraining.main(run_args(corpus, tiny_config, tmp_path / "third", "--max_steps", "1",
                                      "--model_name_or_path", str(first), "--config_overrides", "intermediate_size=48"))


def test_push_to_hub_uploads_once_with_the_ctal_card(corpus, tiny_config, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(run_pretraining, "check_hub_reachable", lambda: None)
    monkeypatch.setattr(run_pretraining, "push_checkpoint_to_hub", lambda folder, repo_id, **kw: calls.append((folder, repo_id)))
    out = tmp_path / "pushed"
    run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "1", "--push_to_hub", "true",
                                  "--hub_model_id", "my-org/ctal-tiny"))
    assert calls == [(str(out), "my-org/ctal-tiny")]
    card = (out / "README.md").read_text()
    assert card.startswith("---") and "ctal_hf" in card


def test_persistent_workers_with_seeded_masks_are_refused(corpus, tiny_config, tmp_path):
    with pytest.raises(ValueError, match="Persistent data-loader workers"):
        run_pretraining.main(run_args(corpus, tiny_config, tmp_path / "run", "--max_steps", "1",
                                      "--dataloader_num_workers", "1", "--dataloader_persistent_workers", "true"))


@pytest.mark.parametrize("mode", ["drop", "truncate"])
def test_long_audio_dropped_or_truncated(corpus, tiny_config, tmp_path, mode, monkeypatch):
    import ctal_hf.data.features

    warnings = []
    monkeypatch.setattr(ctal_hf.data.features.logger, "warning", lambda message, *args: warnings.append(message % args if args else message))
    data_log = tmp_path / "seen"
    log_training_data(monkeypatch, data_log)
    # 150 frames = 1.9 s: the demo utterances are 1-4 s long, so some are over the limit.
    run_pretraining.main(run_args(corpus, tiny_config, tmp_path / mode, "--max_steps", "6", "--long_audio", mode,
                                  "--config_overrides", "max_audio_frames=150", "--validation_fraction", "0",
                                  "--train_split", "train"))
    dropped = [message for message in warnings if message.startswith("Dropped")]
    seen = set((data_log / "rank-0.txt").read_text().split())
    train_rows = 21  # the demo manifest's "train" split of 24 utterances
    if mode == "drop":
        assert len(dropped) == 1, dropped
        count, total = int(dropped[0].split()[1]), int(dropped[0].split()[3])
        assert total == train_rows and 0 < count < total and len(seen) == total - count, (dropped, len(seen))
    else:
        assert not dropped and len(seen) == train_rows


def test_output_dir_with_a_run_is_refused_and_overwritten_on_request(corpus, tiny_config, tmp_path, folder_digest):
    out = tmp_path / "run"
    run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "4", "--save_steps", "2"))
    before = folder_digest(out)
    with pytest.raises(OutputDirNotEmptyError) as error:
        run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "2", "--save_steps", "2"))
    message = str(error.value)
    assert "it holds checkpoint-2, checkpoint-4; saved model files" in message and "model.safetensors" in message
    assert f"--resume_from_checkpoint {out / 'checkpoint-4'}" in message and "--overwrite_output_dir" in message
    # Resuming from an earlier checkpoint in place would overwrite checkpoint-4.
    with pytest.raises(OutputDirNotEmptyError, match="holds checkpoint-4, saved after checkpoint-2"):
        run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "4", "--save_steps", "2",
                                      "--resume_from_checkpoint", str(out / "checkpoint-2")))
    with pytest.raises(ValueError, match=r"would delete or replace .*checkpoint-2 \(--resume_from_checkpoint\)"):
        run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "4", "--overwrite_output_dir", "true",
                                      "--resume_from_checkpoint", str(out / "checkpoint-2")))
    assert folder_digest(out) == before

    # A new run replaces the old one: no checkpoint of it is left to mix with the new run's.
    run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "1", "--save_steps", "1",
                                  "--overwrite_output_dir", "true"))
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1


def test_interrupted_checkpoint_save_is_detected_on_resume(corpus, tiny_config, tmp_path, monkeypatch, folder_digest):
    out = tmp_path / "run"
    save_rng_state = run_pretraining.CTALPreTrainingTrainer._save_rng_state

    def interrupted(self, output_dir):
        if self.state.global_step == 4:
            raise KeyboardInterrupt  # Ctrl-C after the weights, before trainer_state.json
        save_rng_state(self, output_dir)

    monkeypatch.setattr(run_pretraining.CTALPreTrainingTrainer, "_save_rng_state", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "6", "--save_steps", "2"))
    monkeypatch.undo()
    assert (out / "checkpoint-4" / "model.safetensors").is_file()
    before = folder_digest(out)
    with pytest.raises(IncompleteCheckpointError) as error:
        run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "6", "--save_steps", "2",
                                      "--resume_from_checkpoint", str(out / "checkpoint-4")))
    assert str(error.value) == (
        f"--resume_from_checkpoint {out / 'checkpoint-4'} is an incomplete checkpoint (no trainer_state.json, which "
        f"Trainer writes last): its save was interrupted; resume from {out / 'checkpoint-2'}."
    )
    assert folder_digest(out) == before
    # "latest" passes over the incomplete checkpoint; the resumed run rewrites it.
    run_pretraining.main(run_args(corpus, tiny_config, out, "--max_steps", "6", "--save_steps", "2",
                                  "--resume_from_checkpoint", "latest"))
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


def test_the_run_says_what_it_does(corpus, tiny_config, tmp_path, monkeypatch, caplog):
    """Demo corpus, tokenizer, model size, and at the end where the model is and how to load it; the card records
    the steps and epochs actually run."""
    from ctal_hf.data.demo_corpus import CORPUS_DIR_ENV

    monkeypatch.setenv(CORPUS_DIR_ENV, str(corpus.parent.parent))  # the fixture's corpus is the 24-utterance demo
    out = tmp_path / "run"
    args = run_args("demo", tiny_config, out, "--max_steps", "8", "--demo_num_utterances", "24")
    with caplog.at_level(logging.INFO, logger=run_pretraining.logger.name):
        run_pretraining.main(args)
    said = "\n".join(record.getMessage() for record in caplog.records if record.name == run_pretraining.logger.name)
    assert "Preparing the demo corpus (24 synthesised utterances" in said and f"Demo corpus: {corpus}" in said
    assert "Training a byte-level BPE tokenizer (300 entries)" in said
    parameters = CTALForPreTraining.from_pretrained(out).num_parameters()
    assert f"CTALForPreTraining with {parameters:,} parameters" in said
    assert f"Saved the model, processor and model card to {out} (8 steps, 1.33 epochs)" in said
    assert f'AutoModel.from_pretrained("{out}")' in said and f'AutoProcessor.from_pretrained("{out}")' in said
    card = (out / "README.md").read_text()
    assert "Trained for 8 optimizer steps (1.33 epochs of the training data)." in card
    assert "num_train_epochs" not in card

