"""The CTAL model card: one Jinja template (`templates/ctal_model_card.md`) rendered with `huggingface_hub.ModelCard`,
with the paper's figures as data (`templates/ctal_paper.yaml`).

- `model_cards/ctal-base/README.md` and `model_cards/ctal-large/README.md` (the Hub cards of the published presets) are
  `render_published_card(name)`; `python -m ctal_hf.training.model_card` rewrites them and a test keeps them equal to a
  fresh render;
- the converter (`ctal-convert-original`), `python -m ctal_hf.create` and `examples/run_pretraining.py` write the
  card of the folder they produce with `write_model_card`;
- README.md's "Paper vs. released code" table is `paper_vs_code_table()` (a test keeps them equal).

The YAML header is the Hub's model-card metadata (`huggingface_hub.ModelCardData`); its `model-index` holds the results
the paper reports (Tables 1-3), marked `verified: false` with the paper as source, and only on cards of weights the
paper's numbers are about (`paper_results`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..models.ctal.configuration_ctal import CTAL_PRESETS, CTALConfig


TEMPLATES = Path(__file__).parent / "templates"
PAPER: dict[str, Any] = yaml.safe_load((TEMPLATES / "ctal_paper.yaml").read_text(encoding="utf-8"))
# Paper Tables 1-3 (CTAL_BASE / CTAL_LARGE rows) by preset and metric key.
PAPER_RESULTS: dict[str, dict[str, float]] = PAPER["results"]
# Where the published `ctal-base` / `ctal-large` repositories live (`<org>/ctal-large`).
HUB_ORGANIZATION = "ctal-hf"
WEIGHT_KINDS = ("converted", "pretrained", "random")
# Columns N, A, H, FFN of the card's architecture table.
ARCHITECTURE_FIELDS = ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size")

# TrainingArguments fields shown in the card of a pre-training run.
TRAINING_FIELDS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "max_steps",
    "num_train_epochs",
    "seed",
    "bf16",
    "fp16",
)
# Per-step bookkeeping of the Trainer logs, not results.
_LOG_NOISE = re.compile(r"(runtime|per_second|^epoch$|^step$|^total_flos$|^grad_norm$|^learning_rate$)")


def paper_vs_code_table() -> str:
    """The markdown table of the paper's and the released code's differences, as in the cards and README.md."""
    rows = [["behaviour", "paper (default)", "released code"], ["---"] * 3, *PAPER["paper_vs_code"]]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _paper_name(preset: str) -> str:
    """How the paper writes a preset's size: `"ctal-base"` -> `"CTAL_BASE"`."""
    return preset.upper().replace("-", "_")


def _eval_results(preset: str) -> list[EvalResult]:
    source = "Reported by the CTAL paper (Li et al., EMNLP 2021), {}; not verified by ctal_hf"
    return [
        EvalResult(
            task_type=benchmark["task_type"],
            task_name=benchmark["task_name"],
            dataset_type=benchmark["dataset_type"],
            dataset_name=benchmark["dataset_name"],
            dataset_config=benchmark.get("dataset_config"),
            dataset_split=benchmark.get("dataset_split"),
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=PAPER_RESULTS[preset][key],
            verified=False,
            source_name=source.format(benchmark["table"]),
            source_url=PAPER["paper_url"],
        )
        for benchmark in PAPER["benchmarks"]
        for key, metric_type, metric_name in benchmark["metrics"]
    ]


def _hub_id(name: str | None) -> str | None:
    """`name` when it reads as a Hub repository id rather than a local path, for the YAML `datasets` / `base_model`."""
    if name is None or Path(name).exists():
        return None
    return name if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) else None


def _loading_lines(path: str) -> str:
    return f'processor = AutoProcessor.from_pretrained("{path}")\nmodel = AutoModel.from_pretrained("{path}")'


def loading_snippet(path: str | Path) -> str:
    """The Python lines that load the CTAL folder (or Hub repository) `path`, as the card's "How to use" does."""
    return f"import ctal_hf\nfrom transformers import AutoModel, AutoProcessor\n\n{_loading_lines(str(path))}"


def render_model_card(
    config: CTALConfig,
    *,
    model_name: str,
    repo_id: str | None = None,
    weights: str = "pretrained",
    source: str | None = None,
    dataset: str | None = None,
    base_model: str | None = None,
    training_details: Mapping[str, Any] | None = None,
    training_results: Mapping[str, Any] | None = None,
    training_progress: tuple[int, float] | None = None,
    paper_results: str | None = None,
) -> str:
    """The model card (YAML metadata + markdown) of a CTAL checkpoint.

    Args:
        config: the checkpoint's config; the architecture section is rendered from it.
        model_name: title and `model-index` name, e.g. `"ctal-large"`.
        repo_id: what the usage snippets load (a Hub id or a local folder); defaults to `model_name`.
        weights: `"converted"` (from the original code's format), `"pretrained"` (by `examples/run_pretraining.py`) or
            `"random"` (`python -m ctal_hf.create`).
        source: for converted weights, which original checkpoint (markdown).
        dataset: for pre-trained weights, the training data (a Hub id also goes into the YAML `datasets`).
        base_model: for pre-trained weights, the checkpoint pre-training continued from (`None`: from scratch; a Hub
            id also goes into the YAML `base_model`).
        training_details: hyper-parameters shown as a table.
        training_results: final metrics shown as a table.
        training_progress: for pre-trained weights, `(optimizer steps, epochs)` actually run.
        paper_results: `"ctal-base"` or `"ctal-large"` to attach that row of the paper's Tables 1-3 as `model-index`
            (only for weights those numbers are about).
    """
    if weights not in WEIGHT_KINDS:
        raise ValueError(f"`weights` must be one of {WEIGHT_KINDS}, got {weights!r}.")
    if paper_results is not None and paper_results not in PAPER_RESULTS:
        raise ValueError(f"`paper_results` must be one of {sorted(PAPER_RESULTS)}, got {paper_results!r}.")
    if weights == "pretrained":
        # "demo" is the package's synthetic corpus, not a Hub dataset.
        datasets = [dataset] if dataset != "demo" and _hub_id(dataset) else None
    else:
        datasets = ["librispeech_asr"] if weights == "converted" else None
    metadata = ModelCardData(
        language=["en"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=PAPER["tags"] + (["random-weights"] if weights == "random" else []),
        datasets=datasets,
        base_model=_hub_id(base_model) if weights == "pretrained" else None,
        model_name=model_name,
        eval_results=_eval_results(paper_results) if paper_results else None,
    )
    card = ModelCard.from_template(
        metadata,
        template_path=str(TEMPLATES / "ctal_model_card.md"),
        model_name=model_name,
        repo_id=repo_id or model_name,
        loading_lines=_loading_lines(repo_id or model_name),
        weights=weights,
        config=config,
        stacks=[
            [stack, *(getattr(config, field) for field in ARCHITECTURE_FIELDS)]
            for stack in ("text", "audio")
        ],
        presets=[{"name": name, "paper_name": _paper_name(name), **size} for name, size in CTAL_PRESETS.items()],
        source=source,
        dataset=dataset,
        base_model=base_model,
        training_details=sorted((training_details or {}).items()),
        training_results=sorted((training_results or {}).items()),
        training_progress=training_progress and {"steps": training_progress[0], "epochs": training_progress[1]},
        paper_results=paper_results and {"paper_name": _paper_name(paper_results), **CTAL_PRESETS[paper_results]},
        results_rows=[
            (benchmark["task_name"], benchmark["dataset_name"], name, f"{PAPER_RESULTS[paper_results][key]:.4f}",
             benchmark["table"])
            for benchmark in PAPER["benchmarks"]
            for key, _, name in benchmark["metrics"]
        ] if paper_results else [],
        paper=PAPER,
        paper_vs_code=paper_vs_code_table(),
    )
    return str(card)


def write_model_card(
    output_dir: str | Path,
    config: CTALConfig,
    *,
    model_name: str | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    training_args: Any | None = None,
    trainer_state: Any | None = None,
    **render_kwargs,
) -> Path:
    """Write `README.md` into `output_dir` and return its path.

    `model_name` (the title) defaults to the folder name. The usage snippets load `repo_id` (the Hub repository the
    folder is pushed to), else `output_dir` as given, so that they work from where the folder was written. With a
    Trainer's `training_args` (and its `trainer_state` after training: the steps and epochs actually run, the last
    logged losses) the card describes a pre-training run (`weights="pretrained"`), continued from `base_model` when
    given. Other keyword arguments go to `render_model_card`.
    """
    snippet_path = repo_id or str(output_dir)
    output_dir = Path(output_dir)
    if training_args is not None:
        # `max_steps` > 0 overrides `num_train_epochs`, which would then be a number that did not apply.
        by_steps = getattr(training_args, "max_steps", 0) > 0
        fields = [field for field in TRAINING_FIELDS if not (by_steps and field == "num_train_epochs")]
        render_kwargs["training_details"] = {
            # Enum fields (e.g. lr_scheduler_type) read better as their value.
            field: getattr(getattr(training_args, field), "value", getattr(training_args, field))
            for field in fields
            if hasattr(training_args, field)
        }
    log_history = trainer_state.log_history if trainer_state is not None else None
    if trainer_state is not None and trainer_state.epoch is not None:
        render_kwargs["training_progress"] = (trainer_state.global_step, trainer_state.epoch)
    if log_history:
        results = {}
        for marker in ("loss", "eval_loss"):
            entries = [entry for entry in log_history if marker in entry]
            if entries:
                step = entries[-1].get("step", "?")
                kept = {key: value for key, value in entries[-1].items() if not _LOG_NOISE.search(key)}
                results.update({f"{key} (step {step})": value for key, value in kept.items()})
        render_kwargs["training_results"] = results
    card = render_model_card(
        config, model_name=model_name or output_dir.name, repo_id=snippet_path, base_model=base_model, dataset=dataset,
        **render_kwargs,
    )  # fmt: skip
    path = output_dir / "README.md"
    ModelCard(card).save(path)
    return path


def render_published_card(name: str) -> str:
    """The committed Hub card of a paper preset (`"ctal-base"` or `"ctal-large"`): converted original weights of that
    paper size, so causal audio attention and the paper's results for that size in `model-index`."""
    # As the converter leaves it: RoBERTa's 512-row text position table minus its two padding-offset rows.
    config = CTALConfig.from_preset(name, audio_causal_self_attention=True, max_position_embeddings=510)
    return render_model_card(
        config,
        model_name=name,
        repo_id=f"{HUB_ORGANIZATION}/{name}",
        weights="converted",
        source=f"a checkpoint of the authors' code ({PAPER['original_code_url']}) with "
        f"N={CTAL_PRESETS[name]['num_hidden_layers']} layers per stack, the paper's {_paper_name(name)} size",
        paper_results=name,
    )


def main() -> None:
    """`python -m ctal_hf.training.model_card [FOLDER]`: re-render `FOLDER/<preset>/README.md` (FOLDER: model_cards)."""
    for name in CTAL_PRESETS:
        ModelCard(render_published_card(name)).save(Path(*sys.argv[1:2] or ["model_cards"], name, "README.md"))


if __name__ == "__main__":
    main()
