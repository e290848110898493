"""The model card of the audio-text cross-modal attention family (`AudioTextCMAForSequenceClassification`): one Jinja
template (`templates/audio_text_cma_model_card.md`) rendered with `huggingface_hub.ModelCard`, with the paper's
figures as data (`templates/audio_text_cma_paper.yaml`).

Kept apart from the CTAL card (`model_card.py`): the paper published no weights, so its results are shown as what the
paper reports for its own models, never as results of the weights a card describes (no `model-index`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData

from ..models.audio_text_cma.configuration_audio_text_cma import AudioTextCMAConfig
from ..models.audio_text_cma.modeling_audio_text_cma import AudioTextCMAForSequenceClassification
from .model_card import TEMPLATES, _hub_id


PAPER: dict[str, Any] = yaml.safe_load((TEMPLATES / "audio_text_cma_paper.yaml").read_text(encoding="utf-8"))


def _parameter_counts(config: AudioTextCMAConfig) -> tuple[int, int]:
    """(all, trainable) parameters of the classification model of `config`, counted without weights."""
    with torch.device("meta"):
        parameters = list(AudioTextCMAForSequenceClassification(config).parameters())
    return sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.requires_grad)


def _encoders(config: AudioTextCMAConfig) -> list[list[Any]]:
    """Rows of the card's encoder table: part, model type, layers, heads, hidden size (the encoders a variant uses)."""
    parts = []
    if config.modality_outputs != "text":
        parts.append(("speech encoder", config.audio_config))
    if config.modality_outputs != "audio":
        parts.append(("text encoder", config.text_config))
    return [
        [part, sub.model_type, sub.num_hidden_layers, sub.num_attention_heads, sub.hidden_size] for part, sub in parts
    ]


def render_audio_text_cma_card(
    config: AudioTextCMAConfig,
    *,
    model_name: str,
    repo_id: str | None = None,
    audio_base_model: str | None = None,
    text_base_model: str | None = None,
    dataset: str | None = None,
    training_details: Mapping[str, Any] | None = None,
    training_results: Mapping[str, Any] | None = None,
) -> str:
    """The model card (YAML metadata + markdown) of an `AudioTextCMAForSequenceClassification` checkpoint.

    Args:
        config: the checkpoint's config; the architecture section is rendered from it.
        model_name: the title.
        repo_id: what the usage snippet loads (a Hub id or a local folder); defaults to `model_name`.
        audio_base_model, text_base_model: the pre-trained encoders the model started from (Hub ids also go into the
            YAML `base_model`); None when unknown.
        dataset: the fine-tuning data, if any (a Hub id also goes into the YAML `datasets`).
        training_details: hyper-parameters shown as a table.
        training_results: the run's measured results shown as a table.
    """
    base_models = [name for name in (_hub_id(audio_base_model), _hub_id(text_base_model)) if name]
    metadata = ModelCardData(
        language=["en"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="audio-classification",
        tags=PAPER["tags"],
        datasets=[dataset] if _hub_id(dataset) else None,
        base_model=base_models or None,
        model_name=model_name,
    )
    parameters, trainable = _parameter_counts(config)
    card = ModelCard.from_template(
        metadata,
        template_path=str(TEMPLATES / "audio_text_cma_model_card.md"),
        model_name=model_name,
        repo_id=repo_id or model_name,
        config=config,
        encoders=_encoders(config),
        conv_blocks=list(zip(config.conv_dim, config.conv_kernel, config.conv_stride)),
        speech_takes_mask=getattr(config.audio_config, "feat_extract_norm", "layer") == "layer",
        # `[mean | std]` of each stream used.
        embedding_size=2 * config.hidden_size * (2 if config.modality_outputs == "both" else 1),
        labels=[str(label) for label in config.id2label.values()],
        parameters=parameters,
        trainable=trainable,
        audio_base_model=audio_base_model,
        text_base_model=text_base_model,
        dataset=dataset,
        training_details=sorted((training_details or {}).items()),
        training_results=sorted((training_results or {}).items()),
        paper=PAPER,
        results_rows=[(row["table"], row["model"], row["config"], f"{row['ua']:.2%}") for row in PAPER["results"]],
    )
    return str(card)


def write_audio_text_cma_card(output_dir: str | Path, config: AudioTextCMAConfig, **render_kwargs) -> Path:
    """Write the card as `README.md` into `output_dir` (title: the folder name unless `model_name` is given; the
    snippet loads `repo_id`, else `output_dir` as given) and return its path."""
    render_kwargs.setdefault("model_name", Path(output_dir).name)
    render_kwargs.setdefault("repo_id", str(output_dir))
    path = Path(output_dir) / "README.md"
    ModelCard(render_audio_text_cma_card(config, **render_kwargs)).save(path)
    return path


__all__ = ["PAPER", "render_audio_text_cma_card", "write_audio_text_cma_card"]
