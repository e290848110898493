"""The model card of a fine-tuned utterance-level model (`examples/run_classification.py`): task, labels, data,
evaluation protocol and the metrics obtained, for any model family (paper section 3.3 for CTAL). One Jinja template
(`templates/finetuned_model_card.md`) rendered with `huggingface_hub.ModelCard`.

The pre-trained and converted CTAL checkpoints have their own card (`ctal_hf.training.model_card`); this one describes
what fine-tuning added and measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .model_card import PAPER, TEMPLATES, _hub_id


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
# The paper each model family implements, cited on its cards.
CITATIONS = {
    "ctal": PAPER["citation"],
    "audio_text_cma": yaml.safe_load((TEMPLATES / "audio_text_cma_paper.yaml").read_text(encoding="utf-8"))["citation"],
}


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
    verification: bool = False,
) -> str:
    """The card (YAML metadata + markdown).

    Args:
        model_name: the title, e.g. `"iemocap-fold-Session1"`.
        repo_id: what the usage snippet loads (the output folder or a Hub id).
        model_type: `config.model_type` (e.g. `"ctal"`).
        problem_type: one of `ctal_hf.metrics.PROBLEM_TYPES`.
        label_names: the class names in id order (None for regression).
        base_model: the checkpoint fine-tuning started from; None for randomly initialised weights.
        dataset: the training data as given (a path, Hub id or name); a Hub id also goes into the YAML `datasets`.
        protocol: one markdown bullet per protocol fact (folds, validation, model selection).
        selected_on_test: the checkpoint was selected on the test data; the card then says so at the top and in the
            results, and publishes no `model-index`.
        results: `{split name: {metric: value}}`, e.g. `{"validation": {...}, "test": {...}}`.
        label_counts: `{split name: {label: count}}` of the data used.
        training_details: hyper-parameters shown as a table.
        verification: a speaker classifier whose embeddings are scored for speaker verification
            (`examples/run_speaker_verification.py`): the card describes that task and metric, lists no speakers, and
            shows how to score two utterances.
    """
    hub_dataset = _hub_id(dataset)
    eval_results = [
        EvalResult(
            task_type="audio-classification",
            task_name="speaker verification" if verification else TASK_NAMES[problem_type],
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
        pipeline_tag="audio-classification",
        tags=[model_type, "audio", "speech", "multimodal", "audio-text-classification"],
        datasets=[hub_dataset] if hub_dataset else None,
        base_model=_hub_id(base_model),
        model_name=model_name,
        eval_results=eval_results or None,
    )
    names = sorted({name for counts in (label_counts or {}).values() for name in counts})
    splits = list(results)
    card = ModelCard.from_template(
        metadata,
        template_path=str(TEMPLATES / "finetuned_model_card.md"),
        model_name=model_name,
        repo_id=repo_id,
        model_type=model_type,
        task_name=TASK_NAMES[problem_type],
        label_names=list(label_names) if label_names is not None else None,
        base_model=base_model,
        dataset=dataset,
        protocol=list(protocol),
        selected_on_test=selected_on_test,
        warning=TEST_SELECTION_WARNING,
        label_header=["split", *names, "total"],
        label_rows=[(split, *(counts.get(name, 0) for name in names), sum(counts.values()))
                    for split, counts in (label_counts or {}).items()],
        result_splits=splits,
        result_rows=[(metric, *(_format(results[split].get(metric, "")) for split in splits))
                     for metric in sorted({metric for values in results.values() for metric in values})],
        training_details=sorted((training_details or {}).items()),
        citation=CITATIONS.get(model_type),
        verification=verification,
    )
    return str(card)


def write_finetuned_card(output_dir: str | Path, **render_kwargs) -> Path:
    """Writes `render_finetuned_card(**render_kwargs)` to `<output_dir>/README.md` and returns its path."""
    path = Path(output_dir) / "README.md"
    path.write_text(render_finetuned_card(**render_kwargs), encoding="utf-8")
    return path


__all__ = ["TEST_SELECTION_WARNING", "render_finetuned_card", "write_finetuned_card"]
