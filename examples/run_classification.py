#!/usr/bin/env python
"""Fine-tune and evaluate an audio + text model on utterance-level labels (paper sections 3.3 and 4.2): emotion
recognition (IEMOCAP, leave-one-session-out), sentiment regression (CMU-MOSEI) or any labelled manifest.

IEMOCAP, 5 folds, checkpoints selected on a speaker-disjoint validation split of the training sessions:
    python examples/run_classification.py --model_name_or_path outputs/ctal-large --dataset /data/IEMOCAP_full_release \
        --cross_validation leave_one_session_out --output_dir outputs/iemocap

CMU-MOSEI from a manifest with audio, text, a sentiment score and a split column:
    python examples/run_classification.py --model_name_or_path outputs/ctal-large --dataset mosei.csv \
        --train_split train --eval_split valid --test_split test --output_dir outputs/mosei

The script is model-agnostic (`AutoModelForSequenceClassification` + `AutoProcessor`): any model whose processor takes
`processor(audio=..., text=..., sampling_rate=...)` and whose classification model takes `labels` trains through it.
Defaults follow the paper: AdamW, lr 1e-5, cosine schedule, batch 4, 20 epochs, orthogonal loss on (CTAL).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch
import transformers
from sklearn.utils.class_weight import compute_class_weight
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoProcessor,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import IntervalStrategy

import ctal_hf  # noqa: F401  (registers both model families with the Auto classes)
from ctal_hf.data.features import add_length_column
from ctal_hf.data.labelled import DataCollatorForAudioTextClassification, LabelSpec, prepare_labels
from ctal_hf.data.sources import load_speech_dataset
from ctal_hf.metrics import (
    PROBLEM_TYPES,
    compute_metrics_for,
    confusion_matrix,
    default_metric_for_best_model,
    predictions_from_logits,
    task_metrics,
)
from ctal_hf.models.ctal.configuration_ctal import CTAL_PRESETS, CTALConfig
from ctal_hf.models.ctal.processing_ctal import processor_for_config
from ctal_hf.models.ctal.tokenization_ctal import load_tokenizer
from ctal_hf.output_dir import check_output_dir, latest_checkpoint, remove_checkpoints, resolve_resume_checkpoint
from ctal_hf.pipelines.audio_text_classification import scores_from_logits
from ctal_hf.training.cross_validation import (
    VALIDATION_SPLITS,
    leave_one_group_out,
    natural_key,
    split_validation,
    stratified_fraction,
    summarize_folds,
)
from ctal_hf.training.finetune_card import TEST_SELECTION_WARNING, write_finetuned_card
from ctal_hf.training.model_card import TRAINING_FIELDS


logger = logging.getLogger(__name__)

CROSS_VALIDATION = ("none", "leave_one_session_out", "leave_one_group_out")
MODEL_SELECTION = ("validation", "test")
# How every output names the model-selection protocol.
SELECTION_LABELS = {
    "validation": "validation (checkpoint selected on held-out training data; test data unseen)",
    "test": "TEST (authors' protocol: checkpoint selected on the test data; optimistic, for comparison only)",
    "last": "none (the last checkpoint; no validation)",
    "given": "none (a fine-tuned model evaluated as given)",
}
LOWER_IS_BETTER = ("mae", "loss")
RUN_CONFIG = "run_config.json"
RESULTS = "results.json"
# Arguments that do not change what a run trains or measures: a sweep repeated with other values resumes.
RUN_CONTROL_ARGUMENTS = ("folds", "overwrite_output_dir", "plot_confusion_matrix", "predict_dataset")
TRAINING_ARGUMENTS = (*TRAINING_FIELDS, "optim", "metric_for_best_model", "eval_strategy", "eval_steps",
                      "load_best_model_at_end")
# Trainer's bookkeeping entries in metric dicts, left out of results.json and the card.
BOOKKEEPING = re.compile(r"runtime|per_second")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Checkpoint to fine-tune: pre-trained, converted or already fine-tuned (folder or Hub id)."},
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "Instead of a checkpoint, RANDOMLY INITIALISED weights of this config (the paper's "
                  f"'w/o pre-training' baseline): a preset ({', '.join(CTAL_PRESETS)}), a config JSON or a model "
                  "folder."},
    )
    processor_name: str | None = field(
        default=None,
        metadata={"help": "Processor folder (or, for CTAL, a tokenizer folder); default: the model or config folder."},
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Comma-separated config fields to change, e.g. 'classifier_dropout=0.2'."}
    )
    orthogonal_loss_weight: float | None = field(
        default=None,
        metadata={"help": "Weight of the orthogonal loss (CTAL section 3.3.1; default: the config's, 1.0); 0 turns "
                  "it off."},
    )
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Replace a fine-tuned checkpoint's classifier of another label count."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa or flex_attention."})


@dataclass
class DataArguments:
    dataset: str = field(
        default=None,
        metadata={"help": "Manifest (CSV / TSV / JSON lines), IEMOCAP release folder, saved dataset folder or Hub id."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset config."})
    label_column: str | None = field(
        default=None,
        metadata={"help": "Column holding the targets (default: label / emotion / major_emotion / sentiment), e.g. "
                  "'valence' for IEMOCAP dimensional regression."},
    )
    problem_type: str | None = field(
        default=None, metadata={"help": f"One of {PROBLEM_TYPES}; default: from the label column's type."}
    )
    label_separator: str | None = field(
        default=None, metadata={"help": "Multi-label CSV/TSV cells: the separator between labels (e.g. ';')."}
    )
    train_split: str | None = field(
        default=None,
        metadata={"help": "Training split (manifest split value, IEMOCAP sessions, Hub split); with cross-validation "
                  "the data the folds are made of. Default: the whole source."},
    )
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Validation split; default: held out of the training data (--validation_split_by)."},
    )
    test_split: str | None = field(default=None, metadata={"help": "Test split (without cross-validation)."})
    predict_dataset: str | None = field(
        default=None,
        metadata={"help": "With --do_predict: a manifest / folder of new utterances to predict instead of the test "
                  "set."},
    )
    cross_validation: str = field(
        default="none",
        metadata={"help": "'leave_one_session_out' (one fold per session; same as 'leave_one_group_out' with "
                  "--group_column session) or 'none'."},
    )
    group_column: str = field(default="session", metadata={"help": "Column of the cross-validation groups."})
    folds: str | None = field(
        default=None, metadata={"help": "Comma-separated test groups to run (e.g. 'Session1,Session2'); default all."}
    )
    validation_split_by: str = field(
        default="speaker",
        metadata={"help": "How validation data is held out of the training data: 'speaker' (whole speakers, "
                  "ceil(validation_fraction x training speakers), speaker-disjoint; default), 'group' (the training "
                  "group after the test group, e.g. Session2 for Session1) or 'random' (utterances; shares speakers)."},
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of the training speakers ('speaker') or utterances ('random') held out."}
    )
    model_selection: str = field(
        default="validation",
        metadata={"help": "'validation' (default) or 'test': select checkpoints on the test data as the authors' code "
                  "did; optimistic, for comparison with the paper only, and labelled so in every output."},
    )
    train_fraction: float = field(
        default=1.0, metadata={"help": "Seeded share of the training data used (stratified by class), e.g. 0.1."}
    )
    class_weights: str | None = field(
        default=None, metadata={"help": "'balanced': weight the cross-entropy by n / (classes x class count)."}
    )
    skip_unreadable: bool = field(
        default=False, metadata={"help": "Skip (and count) rows whose audio file is missing."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Write into a non-empty --output_dir, re-running finished folds (their fold folders are "
                  "replaced)."},
    )
    plot_confusion_matrix: bool = field(
        default=True,
        metadata={"help": "Write confusion-matrix PNGs (needs matplotlib: pip install 'ctal_hf[examples]')."},
    )


@dataclass
class FineTuningArguments(TrainingArguments):
    """`TrainingArguments` with the paper's fine-tuning recipe as defaults (section 4.2): AdamW, lr 1e-5, cosine
    schedule, batch 4, 20 epochs; evaluated and saved every epoch, keeping the best checkpoint on validation."""

    do_train: bool = field(default=True, metadata={"help": "Fine-tune (false: evaluate / predict the given model)."})
    do_eval: bool = field(default=True, metadata={"help": "Evaluate on the validation and test data."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate (paper: 1e-5)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule (paper: cosine)."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Batch size (paper: 4)."})
    per_device_eval_batch_size: int = field(default=4, metadata={"help": "Evaluation batch size."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs (paper: 20)."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate on validation."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save checkpoints."})
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Keep the checkpoint best on --metric_for_best_model."}
    )
    metric_for_best_model: str = field(
        default="auto", metadata={"help": "Checkpoint selection metric; 'auto': ua (classification), mae "
                                  "(regression), macro_f1 (multi-label)."}
    )
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept besides the best one."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator reads the audio and text columns."}
    )


# ---------------------------------------------------------------------------------------------- arguments


def validate_arguments(
    model_args: ModelArguments, data_args: DataArguments, training_args: FineTuningArguments
) -> None:
    """Fails on impossible combinations before any work."""
    if not data_args.dataset:
        raise ValueError("Pass --dataset: a manifest, an IEMOCAP folder, a saved dataset folder or a Hub id.")
    if not training_args.output_dir:
        raise ValueError("Pass --output_dir.")
    if (model_args.model_name_or_path is None) == (model_args.config_name is None):
        raise ValueError("Pass exactly one of --model_name_or_path (fine-tune a checkpoint) and --config_name "
                         "(randomly initialised weights).")
    check_processor_source(model_args)
    choices = {"cross_validation": CROSS_VALIDATION, "model_selection": MODEL_SELECTION,
               "validation_split_by": VALIDATION_SPLITS, "problem_type": (None, *PROBLEM_TYPES),
               "class_weights": (None, "balanced")}
    for name, allowed in choices.items():
        if getattr(data_args, name) not in allowed:
            shown = [value for value in allowed if value]
            raise ValueError(f"--{name} must be one of {shown}, got {getattr(data_args, name)!r}.")
    cross_validation = data_args.cross_validation != "none"
    if cross_validation and (data_args.eval_split or data_args.test_split):
        raise ValueError("With --cross_validation every fold takes its test group and validation from the data; drop "
                         "--eval_split / --test_split (use --train_split to choose the data the folds are made of).")
    if data_args.folds and not cross_validation:
        raise ValueError("--folds selects cross-validation folds; pass --cross_validation too.")
    if data_args.model_selection == "test" and not (cross_validation or data_args.test_split):
        raise ValueError("--model_selection test selects on the test data: pass --test_split or --cross_validation.")
    if data_args.model_selection == "test" and data_args.eval_split:
        raise ValueError("--model_selection test uses the test data for selection; drop --eval_split.")
    if cross_validation and training_args.resume_from_checkpoint:
        raise ValueError("A cross-validation sweep resumes by itself: repeat the command with the same --output_dir "
                         "(finished folds are skipped, an interrupted fold continues from its last checkpoint).")
    if cross_validation and not training_args.do_train:
        raise ValueError("--do_train false evaluates one given model; it does not combine with --cross_validation.")
    if not training_args.do_train and model_args.model_name_or_path is None:
        raise ValueError("--do_train false evaluates a fine-tuned model: pass it with --model_name_or_path.")
    if training_args.do_predict and not (cross_validation or data_args.test_split or data_args.predict_dataset):
        raise ValueError(
            "--do_predict predicts the test data: pass --test_split, --predict_dataset or --cross_validation."
        )
    if data_args.predict_dataset and not training_args.do_predict:
        raise ValueError("--predict_dataset is predicted with --do_predict; pass it too.")


def resolve_metric_for_best_model(training_args, problem_type: str) -> None:
    """`--metric_for_best_model auto` -> the task's metric (ua, mae or macro_f1), and whether greater is better."""
    if training_args.metric_for_best_model == "auto":
        training_args.metric_for_best_model = default_metric_for_best_model(problem_type)[0]
    training_args.greater_is_better = training_args.metric_for_best_model.removeprefix("eval_") not in LOWER_IS_BETTER


def check_processor_source(model_args: ModelArguments) -> None:
    """Random weights of a preset or config file come without a tokenizer: --processor_name must name one."""
    name = model_args.config_name
    if name and model_args.processor_name is None and not Path(name).is_dir():
        raise ValueError(f"--config_name {name} has no tokenizer: pass --processor_name (a saved processor or CTAL "
                         "tokenizer folder, e.g. the one of the pre-trained model you compare with).")


def run_fingerprint(model_args, data_args, training_args) -> dict:
    """The arguments that decide what a run trains and measures; a resumed sweep must repeat them."""
    fingerprint = {**asdict(model_args)}
    fingerprint.update({key: value for key, value in asdict(data_args).items() if key not in RUN_CONTROL_ARGUMENTS})
    for name in TRAINING_ARGUMENTS:
        value = getattr(training_args, name, None)
        fingerprint[name] = getattr(value, "value", value)
    return json.loads(json.dumps(fingerprint, default=str))


def is_resumable_run(output_dir: Path, fingerprint: dict) -> bool:
    """Whether `output_dir` holds a run of this script with the same arguments (to resume); a run with other
    arguments is an error naming the differences."""
    config_file = output_dir / RUN_CONFIG
    if not config_file.is_file():
        return False
    stored = json.loads(config_file.read_text())["arguments"]
    changed = sorted(key for key in {*stored, *fingerprint} if stored.get(key) != fingerprint.get(key))
    if changed:
        details = ", ".join(f"{key}: {stored.get(key)!r} -> {fingerprint.get(key)!r}" for key in changed)
        raise ValueError(
            f"--output_dir {output_dir} holds a run with other arguments ({details}). Use a new --output_dir, repeat "
            "the original arguments to resume it, or pass --overwrite_output_dir to replace it."
        )
    return True


# ---------------------------------------------------------------------------------------------------- data


def _load(source: str, split: str | None, data_args: DataArguments, labelled: bool = True) -> datasets.Dataset:
    """The rows of `source` (a split of it), with the --label_column as `label` and an `id` per row; new data to
    predict (`labelled=False`) may come without labels."""
    dataset = load_speech_dataset(source, split=split, skip_unreadable=data_args.skip_unreadable,
                                  config_name=data_args.dataset_config_name)
    column = data_args.label_column
    if column and column != "label" and column in dataset.column_names:
        if "label" in dataset.column_names:
            dataset = dataset.remove_columns("label")
        dataset = dataset.rename_column(column, "label")
    elif column and column not in dataset.column_names and labelled:
        raise ValueError(f"--label_column {column!r} is not a column of {source} ({dataset.column_names}).")
    if "id" not in dataset.column_names:
        # Rows are named by their audio file in predictions when the source has no id column.
        ids = [audio if isinstance(audio, str) else (audio or {}).get("path") or str(index)
               for index, audio in enumerate(dataset["audio"])]
        dataset = dataset.add_column("id", ids)
    if dataset.features["id"] != datasets.Value("string"):
        dataset = dataset.cast_column("id", datasets.Value("string"))
    return dataset


def label_counts(dataset: datasets.Dataset, spec: LabelSpec) -> dict[str, int]:
    """Rows per class (per label for multi-label; all rows under "rows" for regression)."""
    if spec.problem_type == "regression":
        return {"rows": len(dataset)}
    if spec.problem_type == "multi_label_classification":
        totals = np.asarray(dataset["label"]).sum(axis=0) if len(dataset) else np.zeros(spec.num_labels)
        return {name: int(total) for name, total in zip(spec.names, totals)}
    counts = np.bincount(np.asarray(dataset["label"], dtype=np.int64), minlength=spec.num_labels)
    return {name: int(count) for name, count in zip(spec.names, counts)}


def data_summary(dataset: datasets.Dataset, spec: LabelSpec, group_column: str | None) -> dict:
    """Counts per class, overall and per group (e.g. IEMOCAP session), for data_summary.json and the log."""
    summary = {"problem_type": spec.problem_type, "label_names": list(spec.names or []), "rows": len(dataset),
               "counts": label_counts(dataset, spec)}
    if group_column and group_column in dataset.column_names:
        groups = np.asarray(dataset[group_column], dtype=str)
        summary[f"counts_by_{group_column}"] = {
            group: label_counts(dataset.select(np.flatnonzero(groups == group)), spec)
            for group in sorted(set(groups), key=natural_key)
        }
    return summary


def fold_dir(output_dir: Path, name: str) -> Path:
    """The folder of the fold whose test group is `name`."""
    return output_dir / ("fold-" + re.sub(r"[^\w.-]", "_", name))


@dataclass
class Run:
    """One training run: a cross-validation fold or the single run, with its data."""

    name: str | None
    output_dir: Path
    train: datasets.Dataset | None
    validation: datasets.Dataset | None
    test: datasets.Dataset | None
    selected_on_test: bool


def _subset(dataset: datasets.Dataset, indices) -> datasets.Dataset | None:
    return None if indices is None else dataset.select(np.asarray(indices))


def _column(dataset: datasets.Dataset, name: str) -> np.ndarray | None:
    return np.asarray(dataset[name], dtype=str) if name in dataset.column_names else None


def plan_runs(data_args, training_args, spec: LabelSpec, data: dict[str, datasets.Dataset | None]) -> list[Run]:
    """The runs to do: one per fold with cross-validation, else one. Validation is held out of the training data when
    no --eval_split is given; --train_fraction then subsamples the training rows."""
    output_dir = Path(training_args.output_dir)
    select_on_test = data_args.model_selection == "test"
    evaluate = training_args.eval_strategy != "no"
    stratify = spec.problem_type == "single_label_classification"
    seed = training_args.seed
    full = data["train"]
    if full is None:  # evaluating a fine-tuned model: nothing to train or hold out
        return [Run(None, output_dir, None, data["validation"], data["test"], False)]
    labels = np.asarray(full["label"]) if stratify else None
    speakers = _column(full, "speaker_id")
    if data_args.cross_validation != "none":
        groups = _column(full, data_args.group_column)
        if groups is None:
            raise ValueError(f"Cross-validation groups come from the column {data_args.group_column!r}, which the data "
                             f"lacks (columns: {full.column_names}); pass --group_column.")
        folds = leave_one_group_out(
            groups, select_on_test=select_on_test or not evaluate, validation_split_by=data_args.validation_split_by,
            validation_fraction=data_args.validation_fraction, speakers=speakers, labels=labels, seed=seed,
        )
        if data_args.folds:
            wanted = [name.strip() for name in data_args.folds.split(",") if name.strip()]
            unknown = sorted(set(wanted) - {fold.name for fold in folds})
            if unknown:
                names = [fold.name for fold in folds]
                raise ValueError(f"--folds {unknown} are not groups of the data; the folds are {names}.")
            folds = [fold for fold in folds if fold.name in wanted]
        runs = []
        for fold in folds:
            train = stratified_fraction(fold.train, data_args.train_fraction, labels=labels, seed=seed)
            runs.append(Run(fold.name, fold_dir(output_dir, fold.name), full.select(train),
                            _subset(full, fold.validation), full.select(fold.test), select_on_test))
        return runs
    validation = data["validation"]
    train_indices = np.arange(len(full))
    if validation is None and evaluate and not select_on_test:
        train_indices, validation_indices = split_validation(
            train_indices, by=data_args.validation_split_by, fraction=data_args.validation_fraction, speakers=speakers,
            groups=_column(full, data_args.group_column), labels=labels, seed=seed,
        )
        validation = full.select(validation_indices)
    train_indices = stratified_fraction(train_indices, data_args.train_fraction, labels=labels, seed=seed)
    return [Run(None, output_dir, full.select(train_indices), validation, data["test"], select_on_test)]


# --------------------------------------------------------------------------------------------------- model


def load_processor(name: str, config):
    """The model's processor from a saved processor folder; for CTAL also from a tokenizer-only folder (the original
    vocab.json + merges.txt), completed with the feature extractor of `config`."""
    folder = Path(name)
    saved = any((folder / file).is_file() for file in ("processor_config.json", "preprocessor_config.json"))
    if config.model_type == "ctal" and folder.is_dir() and not saved:
        return processor_for_config(load_tokenizer(folder), config)
    return AutoProcessor.from_pretrained(name)


def build_model(model_args: ModelArguments, spec: LabelSpec):
    """(model, processor, base model name): the checkpoint with a classification head for `spec`, or random weights of
    `--config_name`."""
    labels = {"num_labels": spec.num_labels, "problem_type": spec.problem_type}
    if spec.names is not None:
        labels.update(id2label=spec.id2label, label2id=spec.label2id)
    name = model_args.model_name_or_path or model_args.config_name
    processor_name = model_args.processor_name or name
    if model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(name, **labels)
    elif name in CTAL_PRESETS:
        tokenizer_size = len(load_processor(processor_name, CTALConfig.from_preset(name)).tokenizer)
        config = CTALConfig.from_preset(name, vocab_size=tokenizer_size, **labels)
    else:
        config = AutoConfig.from_pretrained(name, **labels)
    if model_args.config_overrides:
        config.update_from_string(model_args.config_overrides)
    if model_args.orthogonal_loss_weight is not None:
        if not hasattr(config, "orthogonal_loss_weight"):
            raise ValueError(f"The {config.model_type} model has no orthogonal loss; drop --orthogonal_loss_weight.")
        config.orthogonal_loss_weight = model_args.orthogonal_loss_weight
    kwargs = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    if model_args.model_name_or_path:
        model = AutoModelForSequenceClassification.from_pretrained(
            name, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **kwargs
        )
    else:
        model = AutoModelForSequenceClassification.from_config(config, **kwargs)
        logger.warning("Training from RANDOMLY INITIALISED weights (--config_name %s).", name)
    return model, load_processor(processor_name, config), model_args.model_name_or_path


def load_given_model(model_args: ModelArguments):
    """(model, processor) of --model_name_or_path as it is, for evaluation without training."""
    model = AutoModelForSequenceClassification.from_pretrained(model_args.model_name_or_path)
    return model, load_processor(model_args.processor_name or model_args.model_name_or_path, model.config)


def spec_of_model(name: str) -> LabelSpec:
    """The labels a fine-tuned model was trained on (for evaluation without training)."""
    config = AutoConfig.from_pretrained(name)
    problem_type = config.problem_type or ("regression" if config.num_labels == 1 else "single_label_classification")
    if problem_type == "regression":
        return LabelSpec(problem_type)
    names = tuple(config.id2label[index] for index in range(config.num_labels))
    return LabelSpec(problem_type, names)


def weighted_loss(model, class_weights: np.ndarray):
    """`Trainer(compute_loss_func=...)` for --class_weights: cross-entropy weighted per class plus the model's
    orthogonal term (CTAL section 3.3.1) when it returns one, normalised per utterance over the accumulated batch."""
    weights = torch.tensor(class_weights, dtype=torch.float32)
    ortho_weight = getattr(model.config, "orthogonal_loss_weight", 0.0)

    def compute_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"].float()
        per_item = torch.nn.functional.cross_entropy(logits, labels, weight=weights.to(logits.device), reduction="none")
        ortho = outputs.get("orthogonal_loss")
        if ortho is not None and model.training and ortho_weight > 0:
            per_item = per_item + ortho_weight * ortho
        return per_item.sum() / num_items_in_batch if num_items_in_batch is not None else per_item.mean()

    return compute_loss


def first_output(logits, labels):
    """Keep only the logits of the model outputs (not the embeddings or scalar losses) for metrics and predictions."""
    return logits[0] if isinstance(logits, tuple) else logits


# ------------------------------------------------------------------------------------------------- outputs


def write_predictions(path: Path, ids, logits: np.ndarray, spec: LabelSpec, config, references,
                      selected_on_test: bool) -> None:
    """predict_results.tsv: id, predicted label (or value), reference when known, and one score per class
    (softmax probabilities; sigmoid for multi-label), the scores the inference pipeline gives."""
    table = {"id": list(ids)}
    predictions = predictions_from_logits(logits, spec.problem_type)
    if spec.problem_type == "regression":
        table["prediction"] = predictions
    elif spec.problem_type == "single_label_classification":
        table["prediction"] = [spec.names[index] for index in predictions]
    else:
        table["prediction"] = [";".join(name for name, on in zip(spec.names, row) if on) for row in predictions]
    if references is not None:
        if spec.problem_type == "single_label_classification":
            references = [spec.names[int(index)] for index in references]
        elif spec.problem_type == "multi_label_classification":
            references = [";".join(name for name, on in zip(spec.names, row) if on) for row in references]
        table["reference"] = list(references)
    if spec.problem_type != "regression":
        scores = scores_from_logits(torch.from_numpy(np.asarray(logits)), config)
        for index, name in enumerate(spec.names):
            table[f"score_{name}"] = scores[:, index].numpy()
    if selected_on_test:
        table["model_selection"] = SELECTION_LABELS["test"]
    pd.DataFrame(table).to_csv(path, sep="\t", index=False, float_format="%.6f")


def plot_confusion_matrix(matrix: np.ndarray, names, path: Path, title: str) -> None:
    """A confusion-matrix PNG: counts, rows = true class, with the row-normalised share in brackets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(1.2 * len(names) + 3, 1.2 * len(names) + 2))
    display = ConfusionMatrixDisplay(matrix, display_labels=list(names))
    display.plot(ax=axes, cmap="Blues", colorbar=False, values_format="d")
    for (row, column), text in np.ndenumerate(display.text_):
        text.set_text(f"{matrix[row, column]}\n({shares[row, column]:.0%})")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def selection_of(data_args, training_args) -> str:
    """How checkpoints are chosen: "test" (authors' protocol), "validation", "last" (no evaluation), or "given" (no
    training)."""
    if not training_args.do_train:
        return "given"
    if data_args.model_selection == "test":
        return "test"
    return "validation" if training_args.eval_strategy != "no" and training_args.load_best_model_at_end else "last"


def protocol_lines(data_args, training_args, fold: str | None = None) -> list[str]:
    """The evaluation protocol in words, for results.json, cv_results.json and the card."""
    lines = []
    if data_args.cross_validation != "none":
        lines.append(f"leave-one-group-out cross-validation over `{data_args.group_column}`, one fold per group"
                     + (f"; this model is the fold whose test group is `{fold}`" if fold else ""))
    selection = selection_of(data_args, training_args)
    if selection == "validation":
        how = {"speaker": "whole held-out training speakers (speaker-disjoint from training)",
               "group": "one whole held-out training group", "random": "a random share of the training utterances "
               "(shares speakers with training)"}[data_args.validation_split_by]
        source = f"the `{data_args.eval_split}` split" if data_args.eval_split else how
        lines.append(f"checkpoint selected on validation data: {source}, never the test data; metric "
                     f"`{training_args.metric_for_best_model}`")
    lines.append(f"model selection: {SELECTION_LABELS[selection]}")
    if data_args.train_fraction < 1:
        lines.append(f"trained on a stratified {data_args.train_fraction:.0%} of the training data "
                     f"(seed {training_args.seed})")
    if data_args.class_weights:
        lines.append(f"class weights: {data_args.class_weights}")
    return lines


def training_details(training_args, data_args, config) -> dict:
    """The hyper-parameters a model card lists."""
    details = {name: getattr(getattr(training_args, name), "value", getattr(training_args, name))
               for name in TRAINING_ARGUMENTS if hasattr(training_args, name)}
    details.update(train_fraction=data_args.train_fraction, class_weights=data_args.class_weights,
                   orthogonal_loss_weight=getattr(config, "orthogonal_loss_weight", None))
    return details


def write_json(path: Path, content) -> None:
    path.write_text(json.dumps(content, indent=2, default=str) + "\n")


def labelled(metrics: dict, selection: str) -> dict:
    """Metrics as written to a JSON file: with the model-selection protocol named."""
    return {**metrics, "model_selection": SELECTION_LABELS[selection]}


def plain_metrics(metrics: dict, prefix: str) -> dict[str, float]:
    """`{"eval_ua": 0.7, "eval_runtime": 3.1, "epoch": 2.0}` -> `{"ua": 0.7}`: the measured values only."""
    return {key.removeprefix(f"{prefix}_"): value for key, value in metrics.items()
            if key.startswith(f"{prefix}_") and isinstance(value, (int, float)) and not BOOKKEEPING.search(key)}


def run_one(run: Run, model_args, data_args, training_args, spec: LabelSpec, overwrite: bool,
            predict_data: datasets.Dataset | None) -> dict:
    """Trains (or resumes) and evaluates one run; writes its outputs into `run.output_dir` and returns results.json."""
    selection = selection_of(data_args, training_args)
    if selection == "test":
        logger.warning("Fold %s: selecting the checkpoint on the TEST data (authors' protocol); its test metrics are "
                       "optimistic.", run.name or "run")
    if overwrite and run.name is not None and run.output_dir.exists():
        shutil.rmtree(run.output_dir)  # a fold folder of this script's previous sweep
    elif overwrite and run.output_dir.exists():
        removed = remove_checkpoints(run.output_dir)  # a resumed run must not pick up the old run's checkpoints
        if removed:
            logger.info("--overwrite_output_dir: deleted the previous run's %s", ", ".join(removed))
    run.output_dir.mkdir(parents=True, exist_ok=True)
    training_args.output_dir = str(run.output_dir)
    set_seed(training_args.seed)  # every fold starts alike, so a resumed sweep equals an uninterrupted one

    if training_args.do_train:
        model, processor, base_model = build_model(model_args, spec)
    else:
        model, processor = load_given_model(model_args)
        base_model = model_args.model_name_or_path
    evaluation = run.test if run.selected_on_test else run.validation
    compute_loss_func = None
    if data_args.class_weights:
        present = np.asarray(run.train["label"])
        if len(np.unique(present)) < spec.num_labels:
            raise ValueError(f"--class_weights balanced: fold {run.name} trains on classes "
                             f"{sorted(set(present.tolist()))} of {spec.num_labels}; every class needs examples.")
        weights = compute_class_weight("balanced", classes=np.arange(spec.num_labels), y=present)
        logger.info("Class weights: %s", dict(zip(spec.names, np.round(weights, 4))))
        compute_loss_func = weighted_loss(model, weights)
    if training_args.do_train and training_args.train_sampling_strategy == "group_by_length":
        run.train = with_lengths(run.train, processor, training_args)
    trainer = FineTuningTrainer(
        model=model,
        args=training_args,
        train_dataset=run.train if training_args.do_train else None,
        eval_dataset=evaluation if training_args.eval_strategy != "no" else None,
        data_collator=DataCollatorForAudioTextClassification(processor),
        processing_class=processor,
        compute_metrics=compute_metrics_for(spec.problem_type, spec.names),
        compute_loss_func=compute_loss_func,
        preprocess_logits_for_metrics=first_output,
    )
    results = {"fold": run.name, "model_selection": SELECTION_LABELS[selection],
               "protocol": protocol_lines(data_args, training_args, run.name), "problem_type": spec.problem_type,
               "label_names": list(spec.names or []), "sizes": {}, "label_counts": {}}
    splits = {"train": run.train, "validation": run.validation, "test": run.test}
    for split, dataset in splits.items():
        if dataset is not None:
            results["sizes"][split] = len(dataset)
            results["label_counts"][split] = label_counts(dataset, spec)
            for column in (data_args.group_column, "speaker_id"):
                if column in dataset.column_names:
                    values = sorted(set(map(str, dataset[column])), key=natural_key)
                    results.setdefault(f"{column}_values", {})[split] = values
    if trainer.is_world_process_zero():
        write_json(run.output_dir / "data_split.json",
                   {split: list(dataset["id"]) for split, dataset in splits.items() if dataset is not None})

    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint is None and not overwrite:
            checkpoint = latest_checkpoint(run.output_dir)  # an interrupted run continues from its last complete save
            if checkpoint:
                logger.info("Resuming fold %s from %s", run.name or "run", checkpoint)
        train_result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", labelled(train_result.metrics, selection))
        trainer.save_state()
        results["best_checkpoint"] = trainer.state.best_model_checkpoint
    if training_args.do_eval and evaluation is not None:
        metrics = trainer.evaluate(evaluation)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", labelled(metrics, selection))
        results["validation" if selection != "test" else "selection (test data)"] = plain_metrics(metrics, "eval")
    if run.test is not None and (training_args.do_eval or training_args.do_predict):
        output = trainer.predict(run.test, metric_key_prefix="test")
        trainer.log_metrics("test", output.metrics)
        trainer.save_metrics("test", labelled(output.metrics, selection))
        predictions = predictions_from_logits(output.predictions, spec.problem_type)
        references = np.asarray(run.test["label"])
        results["test"] = plain_metrics(output.metrics, "test")
        results["test_predictions"] = predictions.tolist()
        results["test_references"] = references.tolist()
        if spec.problem_type == "single_label_classification":
            matrix = confusion_matrix(predictions, references, spec.num_labels)
            results["confusion_matrix"] = matrix.tolist()
            if data_args.plot_confusion_matrix and trainer.is_world_process_zero():
                scores = output.metrics
                title = (f"{run.name or 'test'}: WA {scores['test_wa']:.3f}, UA {scores['test_ua']:.3f}\n"
                         f"model selection: {SELECTION_LABELS[selection]}")
                plot_confusion_matrix(matrix, spec.names, run.output_dir / "confusion_matrix.png", title)
        if training_args.do_predict and predict_data is None and trainer.is_world_process_zero():
            write_predictions(run.output_dir / "predict_results.tsv", run.test["id"], output.predictions, spec,
                              trainer.model.config, references, run.selected_on_test)
    if training_args.do_predict and predict_data is not None:
        output = trainer.predict(predict_data, metric_key_prefix="predict")
        references = np.asarray(predict_data["label"]) if "label" in predict_data.column_names else None
        if trainer.is_world_process_zero():
            write_predictions(run.output_dir / "predict_results.tsv", predict_data["id"], output.predictions, spec,
                              trainer.model.config, references, run.selected_on_test)
    if trainer.is_world_process_zero():
        card_results = {key: results[key] for key in ("validation", "selection (test data)", "test") if key in results}
        model_name = f"{run.output_dir.parent.name}-fold-{run.name}" if run.name else run.output_dir.name
        write_finetuned_card(
            run.output_dir, model_name=model_name, repo_id=str(run.output_dir),
            model_type=trainer.model.config.model_type, problem_type=spec.problem_type, label_names=spec.names,
            base_model=base_model, dataset=data_args.dataset, protocol=results["protocol"],
            selected_on_test=run.selected_on_test, results=card_results, label_counts=results["label_counts"],
            training_details=training_details(training_args, data_args, trainer.model.config),
        )
        # Written last: its presence marks the run as finished for a repeated command.
        write_json(run.output_dir / RESULTS, results)
    return results


def summarize_sweep(output_dir: Path, data_args, spec: LabelSpec, fold_names: list[str], selection: str,
                    protocol: list[str]) -> dict:
    """cv_results.json: every finished fold's test metrics, their mean and standard deviation, and the metrics of
    the pooled test predictions (with the pooled confusion matrix and its PNG)."""
    finished, missing = {}, []
    for name in fold_names:
        path = fold_dir(output_dir, name) / RESULTS
        if path.is_file():
            finished[name] = json.loads(path.read_text())
        else:
            missing.append(name)
    per_fold = {name: results.get("test", {}) for name, results in finished.items()}
    summary = {"model_selection": SELECTION_LABELS[selection], "protocol": protocol, "folds_finished": list(finished),
               "folds_missing": missing, "folds": per_fold, **summarize_folds(per_fold)}
    if selection == "test":
        summary["warning"] = TEST_SELECTION_WARNING.strip("*")
    if finished:
        predictions = [np.asarray(results["test_predictions"]) for results in finished.values()]
        references = [np.asarray(results["test_references"]) for results in finished.values()]
        predictions, references = np.concatenate(predictions), np.concatenate(references)
        summary["pooled"] = task_metrics(spec.problem_type, predictions, references, spec.names)
        if spec.problem_type == "single_label_classification":
            matrix = confusion_matrix(predictions, references, spec.num_labels)
            summary["pooled"]["confusion_matrix"] = matrix.tolist()
            if data_args.plot_confusion_matrix:
                pooled = summary["pooled"]
                title = (f"{len(finished)} folds pooled: WA {pooled['wa']:.3f}, UA {pooled['ua']:.3f}"
                         f"\nmodel selection: {SELECTION_LABELS[selection]}")
                plot_confusion_matrix(matrix, spec.names, output_dir / "confusion_matrix_pooled.png", title)
    write_json(output_dir / "cv_results.json", summary)
    return summary


class FineTuningTrainer(Trainer):
    """`Trainer` that evaluates and predicts in the dataset's order. With `--train_sampling_strategy group_by_length`
    transformers also regroups evaluation batches by length, which would pair the predictions written here
    (predict_results.tsv, results.json) with the wrong rows."""

    def _get_eval_sampler(self, eval_dataset):
        # Trainer's sampler without length grouping: in order (across processes, accelerate shards that order).
        if eval_dataset is None or self.args.world_size > 1:
            return None
        return torch.utils.data.SequentialSampler(eval_dataset)


def with_lengths(dataset: datasets.Dataset, processor, training_args) -> datasets.Dataset:
    """The training rows with their audio length in frames (`--length_column_name`, read from the file headers by
    `ctal_hf.add_length_column`), which `--train_sampling_strategy group_by_length` batches by."""
    feature_extractor = getattr(processor, "feature_extractor", None)
    if not hasattr(feature_extractor, "num_frames"):
        raise ValueError(
            f"--train_sampling_strategy group_by_length batches by audio frames, which the "
            f"{type(feature_extractor).__name__} of this model does not count; use --train_sampling_strategy random."
        )
    return add_length_column(dataset, processor, column_name=training_args.length_column_name)


# ---------------------------------------------------------------------------------------------------- main


def parse_arguments(dataclass_types: tuple, argv: list[str] | None, script_logger: logging.Logger) -> tuple:
    """The argument dataclasses (the last one `TrainingArguments`) from `argv`, or from a single JSON file given on
    the command line, and logging set up as transformers' examples do (info on the main process, the training
    arguments' replica level elsewhere)."""
    parser = HfArgumentParser(dataclass_types)
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        parsed = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        parsed = parser.parse_args_into_dataclasses(args=argv)
    training_args = parsed[-1]
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    if training_args.should_log:
        # The default of training_args.log_level is passive: log at info level, as transformers' examples do.
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    script_logger.setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    return tuple(parsed)


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments((ModelArguments, DataArguments, FineTuningArguments), argv,
                                                           logger)

    validate_arguments(model_args, data_args, training_args)
    if not training_args.do_train:
        training_args.eval_strategy = IntervalStrategy.NO  # nothing is trained, so nothing to evaluate periodically
    if data_args.plot_confusion_matrix:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("The confusion-matrix PNGs need matplotlib: pip install 'ctal_hf[examples]' (or pass "
                              "--plot_confusion_matrix false).") from None
    output_dir = Path(training_args.output_dir)
    fingerprint = run_fingerprint(model_args, data_args, training_args)
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, output_dir)
    training_args.resume_from_checkpoint = str(resume) if resume else None
    resuming = not data_args.overwrite_output_dir and is_resumable_run(output_dir, fingerprint)
    if not resuming:  # this run's own folder may hold its finished folds; any other non-empty folder is refused
        check_output_dir(output_dir, overwrite=data_args.overwrite_output_dir, overwrite_option="--overwrite_output_dir",
                         resume_from=resume, resume_option="--resume_from_checkpoint",
                         inputs=[("--model_name_or_path", model_args.model_name_or_path),
                                 ("--config_name", model_args.config_name),
                                 ("--processor_name", model_args.processor_name), ("--dataset", data_args.dataset),
                                 ("--predict_dataset", data_args.predict_dataset)])
    if data_args.model_selection == "test":
        logger.warning("--model_selection test: checkpoints are selected on the TEST data, as the authors' code did. "
                       "The test metrics are optimistic; every output of this run says so.")

    # Labels: from the fine-tuned model when only evaluating, else from the (training) data.
    cross_validation = data_args.cross_validation != "none"
    splits = {"train": data_args.train_split if training_args.do_train else None, "validation": data_args.eval_split,
              "test": data_args.test_split}
    data = {name: _load(data_args.dataset, split, data_args) if split or (name == "train" and training_args.do_train)
            else None for name, split in splits.items()}
    if training_args.do_train:
        data["train"], spec = prepare_labels(data["train"], problem_type=data_args.problem_type,
                                             label_separator=data_args.label_separator)
    else:
        spec = spec_of_model(model_args.model_name_or_path)
    for split in ("validation", "test"):
        if data[split] is not None:
            data[split], _ = prepare_labels(data[split], problem_type=spec.problem_type, label_names=spec.names,
                                            label_separator=data_args.label_separator)
    predict_data = None
    if data_args.predict_dataset:
        predict_data = _load(data_args.predict_dataset, None, data_args, labelled=False)
        if "label" in predict_data.column_names:
            predict_data, _ = prepare_labels(predict_data, problem_type=spec.problem_type, label_names=spec.names,
                                             label_separator=data_args.label_separator)
    if data_args.class_weights and spec.problem_type != "single_label_classification":
        raise ValueError(f"--class_weights applies to single-label classification, not {spec.problem_type}.")
    resolve_metric_for_best_model(training_args, spec.problem_type)

    output_dir.mkdir(parents=True, exist_ok=True)
    summary = data_summary(data["train"], spec, data_args.group_column) if data["train"] is not None else {}
    for split in ("validation", "test"):
        if data[split] is not None:
            summary[f"{split}_counts"] = label_counts(data[split], spec)
    logger.info("Data: %s", json.dumps(summary, indent=1))
    runs = plan_runs(data_args, training_args, spec, data)
    if training_args.process_index == 0:
        selection = SELECTION_LABELS[selection_of(data_args, training_args)]
        write_json(output_dir / RUN_CONFIG, {"arguments": fingerprint, "model_selection": selection})
        write_json(output_dir / "data_summary.json", summary)

    results = {}
    for run in runs:
        finished = run.output_dir / RESULTS
        if finished.is_file() and resuming:
            logger.info("Fold %s is finished (%s); skipping it.", run.name or "run", finished)
            results[run.name] = json.loads(finished.read_text())
            continue
        results[run.name] = run_one(run, model_args, data_args, training_args, spec, data_args.overwrite_output_dir,
                                    predict_data)
    if cross_validation and training_args.process_index == 0:
        groups = sorted(set(map(str, data["train"][data_args.group_column])), key=natural_key)
        sweep = summarize_sweep(output_dir, data_args, spec, groups, selection_of(data_args, training_args),
                                protocol_lines(data_args, training_args))
        logger.info("Cross-validation (%d of %d folds): mean %s", len(sweep["folds_finished"]), len(groups),
                    json.dumps(sweep["mean"], indent=1))
        return sweep
    return results[None]


if __name__ == "__main__":
    main()
