#!/usr/bin/env python
"""Speaker verification (paper section 4.2.3, Table 3): fine-tune a speaker classifier on the training speakers, take
the representation before the classifier as each utterance's embedding, score a trial list of unseen test speakers by
cosine similarity (optionally s-normalised), and report EER and minDCF.

The paper's setting, LibriSpeech in its release layout (training speakers of the three training splits, 40 unseen
test-clean speakers, a balanced trial list drawn with a seed and written next to the results):
    python examples/run_speaker_verification.py --model_name_or_path outputs/ctal-large \
        --dataset /data/LibriSpeech --train_split train-clean-100,train-clean-360,train-other-500 \
        --test_split test-clean --output_dir outputs/librispeech-sv

A fixed trial list in the VoxCeleb format (`label enroll test` lines naming utterance ids or audio paths):
    ... --trials veri_test2.txt
Training is done by `examples/run_classification.py`'s code (Trainer, the paper's recipe, checkpoints selected on
held-out utterances of the training speakers; `accelerate launch` trains on several GPUs, then the main process embeds
and scores); `--do_train false` evaluates a given model as it is.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from transformers import AutoModelForSequenceClassification, set_seed
from transformers.trainer_utils import IntervalStrategy

import ctal_hf  # noqa: F401  (registers both model families with the Auto classes)
from ctal_hf.data.labelled import LabelSpec, prepare_labels
from ctal_hf.embeddings import utterance_embeddings
from ctal_hf.metrics.verification import verification_metrics
from ctal_hf.output_dir import check_output_dir, resolve_resume_checkpoint
from ctal_hf.speaker_verification import (
    check_disjoint_speakers,
    draw_per_speaker,
    generate_trials,
    ge2e_random_eer,
    l2_normalize,
    read_trials,
    score_trials,
    write_scores,
    write_trials,
)
from ctal_hf.training.finetune_card import write_finetuned_card

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_classification  # noqa: E402  (the fine-tuning code: one training route for every task)
from run_classification import FineTuningArguments, ModelArguments  # noqa: E402


logger = logging.getLogger(__name__)

PROTOCOLS = ("trials", "ge2e_random")
SCORE_NORMS = ("none", "s-norm", "as-norm")
GE2E_LABEL = ("ge2e_random: the authors' random GE2E-style protocol (4 speakers x 50 utterances drawn with "
              "replacement, thresholds in steps of 0.01, 10 repeats), seed {seed}; for comparison with the paper's "
              "Table 3 only, NOT comparable with trial-list EERs")
EMBEDDINGS_DIR = "embeddings"
GE2E_SPEAKERS = 4  # speakers per draw of the authors' protocol


@dataclass
class VerificationArguments:
    dataset: str = field(
        default=None,
        metadata={"help": "LibriSpeech release folder, manifest (CSV / TSV / JSON lines with audio, text and a speaker "
                  "column), saved dataset folder or Hub id."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset config."})
    speaker_column: str = field(default="speaker_id", metadata={"help": "Column naming each utterance's speaker."})
    train_split: str | None = field(
        default=None,
        metadata={"help": "Training speakers' data, e.g. 'train-clean-100,train-clean-360,train-other-500' (the "
                  "paper). Default: the whole source except the test data."},
    )
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Validation data of the training speakers; default: --validation_fraction of each training "
                  "speaker's utterances held out."},
    )
    validation_fraction: float = field(default=0.1, metadata={"help": "Share of the training utterances held out."})
    test_split: str | None = field(
        default=None, metadata={"help": "The unseen test speakers' data, e.g. 'test-clean'."}
    )
    test_speakers: str | None = field(
        default=None,
        metadata={"help": "Instead of --test_split: comma-separated speakers whose utterances form the test set (the "
                  "others train)."},
    )
    trials: str | None = field(
        default=None,
        metadata={"help": "Trial list to score, VoxCeleb format (`1|0 enroll test` per line; utterance ids or audio "
                  "paths, matched by their ending). Default: one drawn with --trials_seed over the test speakers."},
    )
    num_trials: int = field(default=20000, metadata={"help": "Trials to draw (half target, half non-target)."})
    trials_seed: int = field(default=0, metadata={"help": "Seed of the drawn trial list and of the GE2E protocol."})
    score_norm: str = field(
        default="none",
        metadata={"help": f"One of {SCORE_NORMS}: score normalisation against a cohort of the training speakers "
                  "(s-norm: all of them; as-norm: each utterance's --cohort_top_n closest)."},
    )
    cohort_top_n: int = field(default=300, metadata={"help": "Closest cohort speakers used by as-norm."})
    cohort_utterances_per_speaker: int = field(
        default=5, metadata={"help": "Training utterances averaged into each cohort speaker's embedding (seeded)."}
    )
    protocol: str = field(
        default="trials",
        metadata={"help": "'trials' (default: EER and minDCF of a trial list) or 'ge2e_random': the authors' random "
                  "protocol, for comparison with the paper's Table 3 only; labelled so in every output."},
    )
    embedding_cache_dir: str | None = field(
        default=None,
        metadata={"help": f"Per-utterance embedding cache, keyed by model and file; default <output_dir>/"
                  f"{EMBEDDINGS_DIR}. Share it between runs that embed the same files with the same model."},
    )
    skip_unreadable: bool = field(default=False, metadata={"help": "Skip (and count) rows whose audio is missing."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace what --output_dir holds (its embedding cache is kept)."}
    )
    plot_det: bool = field(default=True, metadata={"help": "Write det_curve.png (needs matplotlib)."})


@dataclass
class SpeakerTrainingArguments(FineTuningArguments):
    """The fine-tuning recipe (`run_classification.FineTuningArguments`), with the options' meaning in this script."""

    do_train: bool = field(
        default=True, metadata={"help": "Train the speaker classifier (false: score the given model as it is)."}
    )
    do_eval: bool = field(
        default=True, metadata={"help": "Evaluate the speaker classifier on the validation utterances after training "
                                "(verification is always scored)."}
    )


def validate_arguments(model_args, args: VerificationArguments) -> None:
    """Fails on impossible combinations before any work."""
    if not args.dataset:
        raise ValueError("Pass --dataset: a LibriSpeech folder, a manifest with a speaker column, a saved dataset "
                         "folder or a Hub id.")
    if (model_args.model_name_or_path is None) == (model_args.config_name is None):
        raise ValueError("Pass exactly one of --model_name_or_path (a checkpoint) and --config_name (randomly "
                         "initialised weights).")
    run_classification.check_processor_source(model_args)
    for name, allowed in (("protocol", PROTOCOLS), ("score_norm", SCORE_NORMS)):
        if getattr(args, name) not in allowed:
            raise ValueError(f"--{name} must be one of {list(allowed)}, got {getattr(args, name)!r}.")
    if (args.test_split is None) == (args.test_speakers is None):
        raise ValueError("Name the unseen test speakers' data with exactly one of --test_split and --test_speakers.")
    if args.protocol == "ge2e_random" and (args.trials or args.score_norm != "none"):
        raise ValueError("--protocol ge2e_random draws its own random trials without score normalisation; drop "
                         "--trials / --score_norm.")
    if args.cohort_top_n < 1 or args.cohort_utterances_per_speaker < 1:
        raise ValueError("--cohort_top_n and --cohort_utterances_per_speaker must be at least 1.")


def classification_arguments(args: VerificationArguments) -> run_classification.DataArguments:
    """The fine-tuning data arguments of speaker classification: speakers as classes, validation on held-out
    utterances of the same speakers (the test speakers are unseen, so validation must share the training speakers)."""
    return run_classification.DataArguments(
        dataset=args.dataset, dataset_config_name=args.dataset_config_name, eval_split=args.eval_split,
        validation_split_by="random", validation_fraction=args.validation_fraction,
        problem_type="single_label_classification", skip_unreadable=args.skip_unreadable,
        plot_confusion_matrix=False, group_column=args.speaker_column,
    )


# ---------------------------------------------------------------------------------------------------- data


def load_split(args: VerificationArguments, data_args, split: str | None) -> datasets.Dataset:
    """Rows of `split` with the speaker as a string `speaker` column and an `id` per row."""
    dataset = run_classification._load(args.dataset, split, data_args, labelled=False)
    if args.speaker_column not in dataset.column_names:
        raise ValueError(f"{args.dataset} has no speaker column {args.speaker_column!r} (columns: "
                         f"{dataset.column_names}); name it with --speaker_column.")
    speakers = [str(speaker) for speaker in dataset[args.speaker_column]]
    # The speakers become the classes: another label column of the source (e.g. an emotion) plays no part.
    dataset = dataset.remove_columns([name for name in ("speaker", "label") if name in dataset.column_names])
    return dataset.add_column("speaker", speakers)


def load_data(args: VerificationArguments, data_args) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(training speakers' rows, test speakers' rows), speaker-disjoint (checked)."""
    if args.test_speakers:
        pool = load_split(args, data_args, args.train_split)
        wanted = {name.strip() for name in args.test_speakers.split(",") if name.strip()}
        unknown = sorted(wanted - set(pool["speaker"]))
        if unknown:
            raise ValueError(f"--test_speakers {unknown} have no utterances in {args.dataset}.")
        is_test = np.isin(np.asarray(pool["speaker"]), sorted(wanted))
        train, test = pool.select(np.flatnonzero(~is_test)), pool.select(np.flatnonzero(is_test))
    else:
        test = load_split(args, data_args, args.test_split)
        try:
            train = load_split(args, data_args, args.train_split)
        except ValueError as error:
            if args.train_split is not None:
                raise
            raise ValueError(f"{error} Name the training speakers' data with --train_split.") from None
        if args.train_split is None:  # the whole source: without the test rows
            test_audio = {str(audio) for audio in test["audio"]}
            train = train.select([index for index, audio in enumerate(train["audio"]) if str(audio) not in test_audio])
    if len(train) == 0:
        raise ValueError("No training utterances are left besides the test data; pass --train_split.")
    check_disjoint_speakers(train["speaker"], test["speaker"])
    return train, test


def check_validation_share(speakers: list[str], fraction: float) -> None:
    """Validation holds out `fraction` of each training speaker's utterances (stratified): every speaker needs two
    utterances, and the share at least one utterance per speaker."""
    counts = Counter(speakers)
    single = sorted(speaker for speaker, count in counts.items() if count < 2)
    if single:
        raise ValueError(f"Training speakers {single[:10]} have a single utterance; holding out validation utterances "
                         "of every speaker needs two. Remove them, or pass --eval_split.")
    if math.ceil(fraction * len(speakers)) < len(counts):
        raise ValueError(f"--validation_fraction {fraction} holds out {math.ceil(fraction * len(speakers))} of "
                         f"{len(speakers)} utterances, fewer than the {len(counts)} training speakers; raise it to at "
                         f"least {len(counts) / len(speakers):.3f} or pass --eval_split.")


def match_trials(trials, ids: list[str], paths: list[str]) -> dict[str, int]:
    """Test row of each utterance a trial list names: by id, else by the ending of its audio path (VoxCeleb lists name
    `speaker/video/00001.wav`)."""
    rows = {name: index for index, name in enumerate(ids)}
    names = sorted({name for trial in trials for name in (trial.enroll, trial.test)})
    unmatched = [name for name in names if name not in rows]
    if unmatched:
        by_ending: dict[str, list[int]] = {}
        for index, path in enumerate(paths):
            parts = Path(path).parts
            for start in range(len(parts)):
                by_ending.setdefault("/".join(parts[start:]), []).append(index)
        for name in unmatched:
            found = by_ending.get(name.strip("/"), [])
            if len(found) != 1:
                problem = "matches no test utterance" if not found else f"matches {len(found)} test utterances"
                raise ValueError(f"Trial list utterance {name!r} {problem} (by id or by the end of its audio path); "
                                 "the trial list must name utterances of the test data.")
            rows[name] = found[0]
    return {name: rows[name] for name in names}


def cohort_embeddings(model, processor, train: datasets.Dataset, args, training_args, cache_dir) -> np.ndarray:
    """`(speakers, D)`: per training speaker, the mean of the L2-normalised embeddings of up to
    `--cohort_utterances_per_speaker` of its utterances drawn with `--trials_seed`."""
    chosen = draw_per_speaker(train["speaker"], args.cohort_utterances_per_speaker, args.trials_seed)
    vectors = l2_normalize(utterance_embeddings(
        model, processor, train.select(np.concatenate(chosen)), batch_size=training_args.per_device_eval_batch_size,
        cache_dir=cache_dir, device=training_args.device, description="Embedding the cohort"))
    ends = np.cumsum([len(rows) for rows in chosen])
    return np.stack([part.mean(axis=0) for part in np.split(vectors, ends[:-1])])


# --------------------------------------------------------------------------------------------------- model


def load_model(model_args, training_args, output_dir: Path, spec: LabelSpec | None):
    """(model, processor, base model name): the fine-tuned model of this run, or the given one as it is (a pre-trained
    checkpoint gets a fresh head: its pooling weights are then random, drawn with --seed)."""
    if training_args.do_train:
        model = AutoModelForSequenceClassification.from_pretrained(output_dir)
        return model, run_classification.load_processor(str(output_dir), model.config), model_args.model_name_or_path
    set_seed(training_args.seed)
    if model_args.model_name_or_path:
        return (*run_classification.load_given_model(model_args), model_args.model_name_or_path)
    model, processor, _ = run_classification.build_model(model_args, spec)
    return model, processor, None


# ------------------------------------------------------------------------------------------------- outputs


def plot_det(scores: np.ndarray, labels: np.ndarray, metrics: dict, path: Path, title: str, name: str) -> None:
    """The DET curve (miss vs false-alarm rate on normal-deviate axes) with the EER point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm
    from sklearn.metrics import DetCurveDisplay

    figure, axes = plt.subplots(figsize=(5.5, 5))
    DetCurveDisplay.from_predictions(labels, scores, ax=axes, name=name, pos_label=1)
    eer = float(np.clip(metrics["eer"], 1e-4, 1 - 1e-4))
    axes.plot(norm.ppf(eer), norm.ppf(eer), "o", color="tab:red", label=f"EER {metrics['eer']:.2%}")
    axes.set_xlabel("false-alarm rate (non-target trials accepted)")
    axes.set_ylabel("miss rate (target trials rejected)")
    axes.legend(loc="upper right")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def clear_output_dir(output_dir: Path, keep: Path) -> None:
    """--overwrite_output_dir: remove what an earlier run wrote, except the embedding cache (and the folders that
    hold it)."""
    keep = keep.resolve()
    for entry in output_dir.iterdir() if output_dir.is_dir() else ():
        if entry.resolve() == keep:
            continue
        if entry.is_dir() and entry.resolve() in keep.parents:
            clear_output_dir(entry, keep)
        elif entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    model_args, args, training_args = run_classification.parse_arguments(
        (ModelArguments, VerificationArguments, SpeakerTrainingArguments), argv, logger
    )
    validate_arguments(model_args, args)
    if not training_args.do_train:
        training_args.eval_strategy = IntervalStrategy.NO  # nothing is trained, so nothing to evaluate periodically
    if args.plot_det:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("det_curve.png needs matplotlib: pip install 'ctal_hf[examples]' (or pass --plot_det "
                              "false).") from None
    output_dir = Path(training_args.output_dir)
    cache_dir = Path(args.embedding_cache_dir) if args.embedding_cache_dir else output_dir / EMBEDDINGS_DIR
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, output_dir)
    training_args.resume_from_checkpoint = str(resume) if resume else None
    check_output_dir(output_dir, overwrite=args.overwrite_output_dir, overwrite_option="--overwrite_output_dir",
                     resume_from=resume, resume_option="--resume_from_checkpoint",
                     inputs=[("--model_name_or_path", model_args.model_name_or_path),
                             ("--config_name", model_args.config_name), ("--processor_name", model_args.processor_name),
                             ("--dataset", args.dataset), ("--trials", args.trials)])
    if args.protocol == "ge2e_random":
        logger.warning(GE2E_LABEL.format(seed=args.trials_seed))

    data_args = classification_arguments(args)
    train, test = load_data(args, data_args)
    logger.info("Speakers: %d training (%d utterances), %d test (%d utterances)", len(set(train["speaker"])),
                len(train), len(set(test["speaker"])), len(test))
    num_train_speakers = len(set(train["speaker"]))
    if args.protocol == "ge2e_random" and len(set(test["speaker"])) < GE2E_SPEAKERS:
        raise ValueError(f"--protocol ge2e_random draws {GE2E_SPEAKERS} test speakers at a time; the test data has "
                         f"{len(set(test['speaker']))}.")
    if args.score_norm == "as-norm" and args.cohort_top_n > num_train_speakers:
        raise ValueError(f"--cohort_top_n {args.cohort_top_n} exceeds the cohort of {num_train_speakers} training "
                         "speakers; pass a smaller one.")
    # The trials are settled before training, so an impossible request fails before any work.
    trials, rows = None, None
    if args.trials:
        trials = read_trials(args.trials)
        rows = match_trials(trials, list(test["id"]), [str(audio) for audio in test["audio"]])
        check_disjoint_speakers(train["speaker"], test.select(sorted(set(rows.values())))["speaker"])
    elif args.protocol == "trials":
        try:
            trials = generate_trials(test["id"], test["speaker"], args.num_trials, seed=args.trials_seed,
                                     train_speakers=train["speaker"])
        except ValueError as error:
            raise ValueError(f"{error} (--num_trials {args.num_trials})") from None
        rows = {row_id: index for index, row_id in enumerate(test["id"])}
    if training_args.do_train and args.eval_split is None and training_args.eval_strategy != "no":
        check_validation_share(train["speaker"], args.validation_fraction)

    if args.overwrite_output_dir and resume is None:
        clear_output_dir(output_dir, keep=cache_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    spec = None
    results: dict = {}
    if training_args.do_train or model_args.config_name:
        labelled = train.add_column("label", train["speaker"])
        labelled, spec = prepare_labels(labelled, problem_type="single_label_classification")
    if training_args.do_train:
        validation = None
        if args.eval_split:
            validation = load_split(args, data_args, args.eval_split)
            validation, _ = prepare_labels(validation.add_column("label", validation["speaker"]),
                                           problem_type=spec.problem_type, label_names=spec.names)
        run_classification.resolve_metric_for_best_model(training_args, spec.problem_type)
        (run,) = run_classification.plan_runs(data_args, training_args, spec,
                                              {"train": labelled, "validation": validation, "test": None})
        classification = run_classification.run_one(run, model_args, data_args, training_args, spec, overwrite=False,
                                                    predict_data=None)
        # The speaker classifier's validation metrics; eval_* are the verification metrics below.
        results.update({f"speaker_classification_eval_{key}": value
                        for key, value in classification.get("validation", {}).items()})
    if training_args.process_index != 0:  # the other processes of a distributed run have helped train; one scores
        return results
    model, processor, base_model = load_model(model_args, training_args, output_dir, spec)

    embeddings = utterance_embeddings(model, processor, test, batch_size=training_args.per_device_eval_batch_size,
                                      cache_dir=cache_dir, device=training_args.device,
                                      description="Embedding the test utterances")
    metrics: dict = {"protocol": args.protocol, "num_test_speakers": len(set(test["speaker"])),
                     "num_test_utterances": len(test)}
    if args.protocol == "ge2e_random":
        metrics["protocol"] = GE2E_LABEL.format(seed=args.trials_seed)
        metrics["ge2e_random_eer"] = ge2e_random_eer(embeddings, test["speaker"], seed=args.trials_seed,
                                                     num_speakers=GE2E_SPEAKERS)
        summary = f"authors' random GE2E EER {metrics['ge2e_random_eer']:.2%} (not a trial-list EER)"
    else:
        if resume is not None:  # a resumed run writes its trials and scores again
            for name in ("trials.txt", "scores.txt"):
                (output_dir / name).unlink(missing_ok=True)
        trials_path = write_trials(trials, output_dir / "trials.txt")
        vectors = {name: embeddings[index] for name, index in rows.items()}
        cohort = None
        if args.score_norm != "none":
            cohort = cohort_embeddings(model, processor, train, args, training_args, cache_dir)
        top_n = args.cohort_top_n if args.score_norm == "as-norm" else None
        scores = score_trials(trials, vectors, cohort=cohort, top_n=top_n)
        labels = np.array([trial.label for trial in trials])
        scores_path = write_scores(trials, scores, output_dir / "scores.txt")
        metrics.update(verification_metrics(scores, labels))
        norm_name = "cosine" if cohort is None else (
            f"cosine, {args.score_norm} ({len(cohort)} training speakers"
            + (f", top {top_n}" if top_n else "") + ")")
        metrics.update(score_norm=norm_name, num_trials=len(trials), num_target_trials=int(labels.sum()),
                       trials_file=str(trials_path), scores_file=str(scores_path),
                       trials_source=args.trials or f"drawn with seed {args.trials_seed}")
        summary = (f"EER {metrics['eer']:.2%}, minDCF(0.01) {metrics['min_dcf_0.01']:.4f}, minDCF(0.001) "
                   f"{metrics['min_dcf_0.001']:.4f} on {len(trials)} trials ({norm_name})")
        if args.plot_det:
            title = f"{output_dir.name}: {len(trials)} trials, {norm_name}\n{summary.split(' on ')[0]}"
            plot_det(scores, labels, metrics, output_dir / "det_curve.png", title,
                     args.score_norm.replace("none", "cosine"))
    results.update({f"eval_{key}": value for key, value in metrics.items()})
    run_classification.write_json(output_dir / "eval_results.json", results)
    train_results = output_dir / "train_results.json"
    run_classification.write_json(output_dir / "all_results.json",
               {**(json.loads(train_results.read_text()) if train_results.is_file() else {}), **results})
    if training_args.do_train:  # the folder holds the fine-tuned model: its card
        write_finetuned_card(
            output_dir, model_name=output_dir.name, repo_id=str(output_dir), model_type=model.config.model_type,
            problem_type="single_label_classification", label_names=None, base_model=base_model, dataset=args.dataset,
            protocol=[f"speaker verification on {metrics['num_test_speakers']} speakers unseen in training: "
                      + (metrics["protocol"] if args.protocol == "ge2e_random"
                         else f"{metrics['num_trials']} trials ({metrics['trials_source']}), {metrics['score_norm']}")],
            selected_on_test=False, results={"test": {key: value for key, value in metrics.items()
                                                      if isinstance(value, float) and not key.endswith("_threshold")}},
            training_details=run_classification.training_details(training_args, data_args, model.config),
            verification=True,
        )
    logger.info("Speaker verification: %s. Results in %s", summary, output_dir / "eval_results.json")
    return results


if __name__ == "__main__":
    main()
