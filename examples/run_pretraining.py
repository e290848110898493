#!/usr/bin/env python
"""Pre-train CTAL with masked language modelling and masked cross-modal acoustic modelling (paper section 3.2).

One process (CPU or GPU):
    python examples/run_pretraining.py --dataset demo --config_name ctal-base --output_dir outputs/ctal-base

Several GPUs or nodes (DDP; see examples/accelerate/ for DDP and FSDP configs):
    accelerate launch --config_file examples/accelerate/ddp.yaml examples/run_pretraining.py \
        --dataset /data/LibriSpeech --train_split train-clean-100 --config_name ctal-large --output_dir outputs/ctal-large

`--dataset` takes a manifest (CSV or JSON lines with audio path + text), a LibriSpeech folder in its release layout,
a `datasets` Hub id with the `openslr/librispeech_asr` schema (add `--streaming` for corpora larger than the disk),
a folder written by `Dataset.save_to_disk`, or `demo` (a small synthesised corpus built on first use).
Without `--model_name_or_path` or `--tokenizer_name` a byte-level BPE tokenizer is trained on the training
transcripts first, as the paper did.

`--output_dir` must be empty or new: a folder holding another run's checkpoints or model is refused. Continue a run
with `--resume_from_checkpoint <output_dir>/checkpoint-<step>` (or `latest`), or start a new one there with
`--overwrite_output_dir`, which deletes the old run's `checkpoint-*` folders first; its final model, processor, card
and results are replaced when the new run saves its own.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import transformers
from transformers import HfArgumentParser, TrainingArguments, set_seed

from ctal_hf import CTALConfig, CTALForPreTraining
from ctal_hf.models.ctal.configuration_ctal import CTAL_PRESETS
from ctal_hf.create import parse_overrides
from ctal_hf.data.features import CTALFeatureTransform, add_length_column, precompute_features
from ctal_hf.data.sources import iter_transcripts, load_speech_dataset
from ctal_hf.data.collator import DataCollatorForCTALPretraining
from ctal_hf.data.demo_corpus import build_demo_corpus
from ctal_hf.training.hub import check_hub_reachable, push_checkpoint_to_hub
from ctal_hf.models.ctal.processing_ctal import processor_for_config
from ctal_hf.models.ctal.tokenization_ctal import load_tokenizer, train_ctal_tokenizer
from ctal_hf.output_dir import (
    IncompleteCheckpointError,
    OutputDirNotEmptyError,
    check_output_dir,
    remove_checkpoints,
    resolve_resume_checkpoint,
)
from ctal_hf.training.model_card import loading_snippet, write_model_card
from ctal_hf.training.trainer import CTALPreTrainingTrainer


logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A CTAL checkpoint (folder or Hub id) to continue pre-training from."}
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": f"For training from scratch: a preset ({', '.join(CTAL_PRESETS)}), a config JSON file or a folder."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated config overrides, e.g. 'mcam_loss_weight=0,audio_causal_self_attention=true'."},
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "A saved CTAL tokenizer/processor folder, or a folder with the original vocab.json + merges.txt."},
    )
    tokenizer_vocab_size: int = field(
        default=30000, metadata={"help": "Vocabulary size when the tokenizer is trained on the corpus (paper: 30,000)."}
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata={
            "help": "eager, sdpa, flex_attention, or blockwise: training memory linear in the audio length with "
            "attention dropout kept (ctal_hf.blockwise_attention; see benchmarks/README.md)."
        },
    )


@dataclass
class DataArguments:
    dataset: str = field(
        default="demo",
        metadata={"help": "Manifest file, LibriSpeech folder, saved dataset folder, Hub dataset id, or 'demo'."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset config (e.g. 'clean')."})
    train_split: str | None = field(
        default=None,
        metadata={"help": "Split to train on: a value of the manifest's split column, a LibriSpeech subfolder "
                  "(comma-separated for several, e.g. 'train-clean-100,train-clean-360'), or a Hub split "
                  "('train.clean.100'). Default: the whole source."},
    )
    eval_split: str | None = field(default=None, metadata={"help": "Evaluation split; none -> --validation_fraction."})
    validation_fraction: float = field(
        default=0.05,
        metadata={"help": "Share of the training data held out for evaluation (with --eval_strategy) when no "
                  "--eval_split."},
    )
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (requires --max_steps)."})
    precompute_features: bool = field(
        default=False,
        metadata={"help": "Compute features once with datasets.map (cached on disk) instead of on the fly in workers."},
    )
    skip_unreadable: bool = field(
        default=False, metadata={"help": "Skip (and count) missing or unreadable audio files instead of failing."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation set."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked for MLM."})
    mcam_probability: float = field(default=0.15, metadata={"help": "Share of frame segments masked for MCAM."})
    mcam_mode: str = field(
        default="segment", metadata={"help": "'segment' (the paper) or 'per_frame' (the authors' released code)."}
    )
    long_audio: str = field(
        default="drop",
        metadata={"help": "Utterances longer than the model's max_audio_frames (37.5 s): 'drop' them (counted, as "
                  "the authors' pre-training did) or 'truncate' them."},
    )
    demo_num_utterances: int = field(default=300, metadata={"help": "Size of the demo corpus (with --dataset demo)."})


@dataclass
class PreTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's pre-training recipe as defaults (appendix A.1 and the released code):
    AdamW, lr 5e-5, linear warm-up over 7% of the steps then linear decay, weight decay 0.01, gradient clipping 1.0,
    length-grouped batches."""

    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (paper: 5e-5)."})
    warmup_steps: float = field(default=0.07, metadata={"help": "Warm-up steps, or a ratio of all steps if < 1."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "'group_by_length' batches utterances of similar length (less padding), or 'random'."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator needs the feature columns the model does not name."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start a new run in an --output_dir that holds another one: its checkpoint-* folders are "
                  "deleted first, its model, processor, card and results are replaced at the end."},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "A checkpoint-* folder to continue its run from, or 'latest' (or 'true') for the newest "
                  "complete checkpoint of --output_dir."},
    )


def apply_overrides(config: CTALConfig, overrides: str | None) -> CTALConfig:
    """Apply `--config_overrides` (comma-separated `key=value`, as in transformers' run_mlm.py) to a config before the
    model is built from it, and re-validate it."""
    parse_overrides(filter(None, (overrides or "").split(",")), config)
    config.validate()
    return config


def build_config(model_args: ModelArguments, vocab_size: int) -> CTALConfig:
    name = model_args.config_name
    if name is None:
        raise ValueError("Pass --model_name_or_path to continue pre-training, or --config_name to start from scratch.")
    if name in CTAL_PRESETS:
        config = CTALConfig.from_preset(name, vocab_size=vocab_size)
    elif os.path.exists(name):  # a config JSON file, or a folder holding config.json
        config = CTALConfig.from_pretrained(name, vocab_size=vocab_size)
    else:
        raise ValueError(f"--config_name {name!r} is neither a preset ({', '.join(CTAL_PRESETS)}), a JSON file nor a folder.")
    return apply_overrides(config, model_args.config_overrides)


def load_splits(data_args: DataArguments, source: str, seed: int, evaluate: bool):
    """(train, eval) raw datasets; with `evaluate`, eval is `--eval_split` if given, else a `--validation_fraction`
    hold-out of the training data (without `evaluate` all of it is trained on)."""
    load = dict(streaming=data_args.streaming, skip_unreadable=data_args.skip_unreadable,
                config_name=data_args.dataset_config_name)
    train = load_speech_dataset(source, split=data_args.train_split, **load)
    evaluation = None
    if not evaluate:
        return train, evaluation
    if data_args.eval_split:
        evaluation = load_speech_dataset(source, split=data_args.eval_split, **load)
    elif not data_args.streaming and data_args.validation_fraction > 0:
        parts = train.train_test_split(test_size=data_args.validation_fraction, seed=seed)
        train, evaluation = parts["train"], parts["test"]
    return train, evaluation


def limit(dataset, max_samples: int | None):
    if max_samples is None or dataset is None:
        return dataset
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.take(max_samples)
    return dataset.select(range(min(max_samples, len(dataset))))


def main(argv: list[str] | None = None) -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, PreTrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    # The main process says what the script does (corpus, tokenizer, model size, where the result is) unless a
    # --log_level asks for less; Trainer's own messages follow --log_level.
    passive = training_args.log_level == "passive" and training_args.should_log
    logger.setLevel(logging.INFO if passive else log_level)
    transformers.utils.logging.set_verbosity(log_level)
    set_seed(training_args.seed)
    # Pushed once at the end, with the CTAL card: Trainer's own pushes would upload every checkpoint with a generic
    # card first.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    if push_to_hub:
        check_hub_reachable()  # fail before any work, not after training

    output_dir = training_args.output_dir
    checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, output_dir)
    if checkpoint is not None:
        checkpoint = str(checkpoint)
        logger.info("Resuming from %s", checkpoint)
    if data_args.long_audio not in ("drop", "truncate"):
        raise ValueError(f"--long_audio must be 'drop' or 'truncate', got {data_args.long_audio!r}.")
    if data_args.streaming and data_args.precompute_features:
        raise ValueError("--precompute_features caches a map-style dataset; with --streaming features are computed "
                         "on the fly, drop one of the two options.")
    if data_args.streaming:
        if training_args.max_steps <= 0:
            raise ValueError("--streaming needs --max_steps: a stream has no length to derive epochs from.")
        training_args.train_sampling_strategy = "random"  # length grouping needs a map-style dataset

    # Every process checks before any of them writes (the barrier at the end of the block below).
    check_output_dir(
        output_dir, overwrite=training_args.overwrite_output_dir, overwrite_option="--overwrite_output_dir",
        resume_from=checkpoint, resume_option="--resume_from_checkpoint",
        inputs=[("--resume_from_checkpoint", checkpoint), ("--model_name_or_path", model_args.model_name_or_path),
                ("--tokenizer_name", model_args.tokenizer_name), ("--config_name", model_args.config_name)],
    )
    trained_tokenizer_dir = Path(output_dir) / "trained_tokenizer"
    with training_args.main_process_first(local=False, desc="checking the output folder"):
        if training_args.overwrite_output_dir and training_args.process_index == 0:
            removed = remove_checkpoints(output_dir)
            if removed:
                logger.info("--overwrite_output_dir: deleted the previous run's %s", ", ".join(removed))
            shutil.rmtree(trained_tokenizer_dir, ignore_errors=True)

    source = data_args.dataset
    if source == "demo":
        with training_args.main_process_first(desc="building the demo corpus"):
            logger.info("Preparing the demo corpus (%d synthesised utterances; built once, then cached)",
                        data_args.demo_num_utterances)
            source = str(build_demo_corpus(num_utterances=data_args.demo_num_utterances))
            logger.info("Demo corpus: %s", source)

    train_raw, eval_raw = load_splits(data_args, source, training_args.seed, training_args.eval_strategy != "no")
    train_raw, eval_raw = limit(train_raw, data_args.max_train_samples), limit(eval_raw, data_args.max_eval_samples)

    # The global main process trains the tokenizer and the others load its files (output_dir is shared storage,
    # as for checkpoints), so every rank has the same vocabulary.
    with training_args.main_process_first(local=False, desc="preparing the tokenizer"):
        # Trainer saves the processor into every checkpoint: a resumed run keeps the tokenizer it started with.
        if checkpoint or model_args.model_name_or_path:
            tokenizer = load_tokenizer(checkpoint or model_args.model_name_or_path)
        elif model_args.tokenizer_name:
            tokenizer = load_tokenizer(model_args.tokenizer_name)
        elif training_args.process_index == 0:
            logger.info("Training a byte-level BPE tokenizer (%d entries) on the training transcripts "
                        "(--tokenizer_name skips this)", model_args.tokenizer_vocab_size)
            tokenizer = train_ctal_tokenizer(iter_transcripts(train_raw), vocab_size=model_args.tokenizer_vocab_size)
            tokenizer.save_pretrained(trained_tokenizer_dir)
        else:
            tokenizer = load_tokenizer(trained_tokenizer_dir)

    if model_args.model_name_or_path:
        # Overrides reach the config before the model is built; one that changes a weight's shape fails to load.
        config = apply_overrides(CTALConfig.from_pretrained(model_args.model_name_or_path), model_args.config_overrides)
        model = CTALForPreTraining.from_pretrained(
            model_args.model_name_or_path, config=config, attn_implementation=model_args.attn_implementation
        )
    else:
        config = build_config(model_args, vocab_size=len(tokenizer))
        model = CTALForPreTraining._from_config(config, attn_implementation=model_args.attn_implementation)
    processor = processor_for_config(tokenizer, model.config)
    logger.info("CTALForPreTraining with %s parameters", f"{model.num_parameters():,}")

    config = model.config
    transform = CTALFeatureTransform(processor, max_text_length=config.max_position_embeddings,
                                     max_audio_frames=config.max_audio_frames, skip_unreadable=data_args.skip_unreadable)
    with training_args.main_process_first(desc="reading audio lengths / computing features"):
        datasets_ = []
        for dataset in (train_raw, eval_raw):
            if dataset is not None:
                # Reads file headers only (lazily for a stream): lengths for batching, and long audio to drop.
                dataset = add_length_column(dataset, processor, max_audio_frames=config.max_audio_frames,
                                            drop_longer=data_args.long_audio == "drop",
                                            skip_unreadable=data_args.skip_unreadable)
                if data_args.precompute_features:
                    dataset = precompute_features(dataset, transform)
            datasets_.append(dataset)
    train_dataset, eval_dataset = datasets_

    collator = DataCollatorForCTALPretraining(
        tokenizer=tokenizer,
        mlm=config.mlm_loss_weight > 0,
        mcam=config.mcam_loss_weight > 0,
        mlm_probability=data_args.mlm_probability,
        mcam_probability=data_args.mcam_probability,
        mcam_mode=data_args.mcam_mode,
        feature_transform=None if data_args.precompute_features else transform,
        seed=training_args.seed,
    )
    trainer = CTALPreTrainingTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
    )

    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    if trainer.is_world_process_zero():
        repo_id = (training_args.hub_model_id or Path(training_args.output_dir).name) if push_to_hub else None
        processor.save_pretrained(training_args.output_dir)
        # The processor in output_dir (and in every checkpoint) now carries the tokenizer: drop the hand-over copy.
        shutil.rmtree(trained_tokenizer_dir, ignore_errors=True)
        write_model_card(training_args.output_dir, config, dataset=data_args.dataset, training_args=training_args,
                         trainer_state=trainer.state, repo_id=repo_id, base_model=model_args.model_name_or_path)
        if push_to_hub:
            push_checkpoint_to_hub(training_args.output_dir, repo_id, token=training_args.hub_token,
                                   private=training_args.hub_private_repo)
        logger.info("Saved the model, processor and model card to %s (%d steps, %.2f epochs). Load them with:\n%s",
                    training_args.output_dir, trainer.state.global_step, trainer.state.epoch,
                    loading_snippet(training_args.output_dir))


if __name__ == "__main__":
    try:
        main()
    except (OutputDirNotEmptyError, IncompleteCheckpointError, NotADirectoryError) as error:  # the message says it all
        sys.exit(f"{Path(sys.argv[0]).name}: {error}")
