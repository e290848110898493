"""The model card of a fine-tuned utterance-level model (`examples/run_classification.py`): task, labels, data,
evaluation protocol and the metrics obtained, for any model family (paper section 3.3 for CTAL).

The pre-trained and converted CTAL checkpoints have their own card (`ctal_hf.training.model_card`); this one describes
what fine-tuning added and measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from .model_card import CITATION, _hub_id, _table


TASK_NAMES = {
    "single_label_classification": "classification (one label per utterance)",
    "regression": "regression (one score per utterance)",
    "multi_label_classification": "multi-label classification",
}
TEST_SELECTION_WARNING = (
    "**WARNING: the checkpoint was selected on the TEST data (the authors' protocol, `--model_selection test`). The "
    "test metrics below are optimistic and are not an unbiased estimate of performance on new data; they are only "
    "comparable with results obtained the same way.**"
)


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_finetuned_card(
    *,
    model_name: str,
    repo_id: str,
    model_type: str,
    problem_type: str,
    label_names: Sequence[str] | None,
    base_model: str | None,
    dataset: str,
    protocol: Sequence[str],
    selected_on_test: bool,
    results: Mapping[str, Mapping[str, float]],
    label_counts: Mapping[str, Mapping[str, int]] | None = None,
    training_details: Mapping[str, Any] | None = None,
) -> str:
    """The card (YAML metadata + markdown).

    Args:
        model_name: the title, e.g. `"ctal-iemocap-fold-Session1"`.
        repo_id: what the usage snippet loads (the output folder or a Hub id).
        model_type: `config.model_type` (e.g. `"ctal"`).
        problem_type: one of `ctal_hf.metrics.PROBLEM_TYPES`.
        label_names: the class names in id order (None for regression).
        base_model: the checkpoint fine-tuning started from; None for randomly initialised weights.
        dataset: the training data as given (a path, Hub id or name); a Hub id also goes into the YAML `datasets`.
        protocol: one markdown bullet per protocol fact (folds, validation, model selection).
        selected_on_test: the checkpoint was selected on the test data; the card then says so at the top and in the
            results.
        results: `{split name: {metric: value}}`, e.g. `{"validation": {...}, "test": {...}}`.
        label_counts: `{split name: {label: count}}` of the data used.
        training_details: hyper-parameters shown as a table.
    """
    hub_dataset = _hub_id(dataset)
    eval_results = [
        EvalResult(
            task_type="audio-classification",
            task_name=TASK_NAMES[problem_type],
            dataset_type=hub_dataset or "custom",
            dataset_name=f"{hub_dataset or Path(dataset).name} ({split})",
            metric_type=metric,
            metric_value=value,
            verified=False,
        )
        for split, metrics in results.items()
        if split == "test" and not selected_on_test
        for metric, value in metrics.items()
        if isinstance(value, float) and metric != "loss"
    ]
    metadata = ModelCardData(
        library_name="transformers",
        tags=[model_type, "audio", "speech", "multimodal", "audio-text-classification"],
        datasets=[hub_dataset] if hub_dataset else None,
        base_model=_hub_id(base_model),
        model_name=model_name,
        eval_results=eval_results or None,
    )
    start = f"fine-tuned from `{base_model}`" if base_model else "trained from **randomly initialised** weights"
    lines = [f"# {model_name}", ""]
    if selected_on_test:
        lines += [TEST_SELECTION_WARNING, ""]
    lines += [
        f"A `{model_type}` audio + text model {start} for utterance-level {TASK_NAMES[problem_type]} on `{dataset}`, "
        "with `examples/run_classification.py` of `ctal_hf`. It takes the speech of an utterance and its transcript.",
        "",
        "## Labels",
        "",
        (
            ", ".join(f"{index} = `{name}`" for index, name in enumerate(label_names))
            if label_names is not None
            else "One score per utterance (the model's single output)."
        ),
        "",
    ]
    if label_counts:
        names = sorted({name for counts in label_counts.values() for name in counts})
        rows = [(split, *(counts.get(name, 0) for name in names), sum(counts.values())) for split, counts in label_counts.items()]
        lines += ["## Data", "", _table(("split", *names, "total"), rows), ""]
    lines += ["## Evaluation protocol", "", *(f"- {line}" for line in protocol), ""]
    if results:
        metrics = sorted({metric for values in results.values() for metric in values})
        rows = [(metric, *(_format(results[split].get(metric, "")) for split in results)) for metric in metrics]
        lines += ["## Results", ""]
        if selected_on_test:
            lines += ["Selected on the test data (see the warning above): the test column is optimistic.", ""]
        lines += [_table(("metric", *results), rows), ""]
        lines += [
            "WA = accuracy; UA = mean per-class recall; F1 macro / weighted; for sentiment MAE, Pearson correlation, "
            "Acc2 / F1 in the has0 (negative vs non-negative) and non0 (negative vs positive, zero truths excluded) "
            "conventions, Acc5 and Acc7 (see `ctal_hf.metrics`).",
            "",
        ]
    if training_details:
        lines += ["## Training", "", _table(("hyper-parameter", "value"), sorted(training_details.items())), ""]
    lines += [
        "## How to use",
        "",
        "```python",
        "import ctal_hf  # registers the model classes with the transformers Auto classes",
        "import torch",
        "from transformers import AutoModelForSequenceClassification, AutoProcessor",
        "",
        f'processor = AutoProcessor.from_pretrained("{repo_id}")',
        f'model = AutoModelForSequenceClassification.from_pretrained("{repo_id}").eval()',
        'inputs = processor(audio=["speech.wav"], text=["the transcript"], sampling_rate=16000, return_tensors="pt")',
        "with torch.no_grad():",
        "    logits = model(**inputs).logits",
        (
            "print(model.config.id2label[int(logits.argmax(-1))])"
            if problem_type == "single_label_classification"
            else "print(logits)"
        ),
        "```",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
    ]
    return f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"


def write_finetuned_card(output_dir: str | Path, **render_kwargs) -> Path:
    """Writes `render_finetuned_card(**render_kwargs)` to `<output_dir>/README.md` and returns its path."""
    path = Path(output_dir) / "README.md"
    path.write_text(render_finetuned_card(**render_kwargs), encoding="utf-8")
    return path


__all__ = ["TEST_SELECTION_WARNING", "render_finetuned_card", "write_finetuned_card"]
