"""The model card of the audio-text cross-modal attention family (`AudioTextCMAForSequenceClassification`): pre-trained
speech and text encoders joined by cross-modal attention (Krishna D N et al., 2021, arXiv:2108.09669).

Kept apart from the CTAL card template (`model_card.py`): the paper published no weights, so its results are shown as
what the paper reports for its own models, never as results of the weights a card describes (no `model-index`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCardData

from ..models.audio_text_cma.configuration_audio_text_cma import AudioTextCMAConfig
from ..models.audio_text_cma.modeling_audio_text_cma import AudioTextCMAForSequenceClassification
from .model_card import _hub_id, _table


PAPER_URL = "https://arxiv.org/abs/2108.09669"
TAGS = ["audio-text-cma", "audio", "speech", "multimodal", "audio-text", "emotion-recognition", "wav2vec2", "bert"]
CITATION = """@article{krishna2021using,
    title = {Using Large Pre-Trained Models with Cross-Modal Attention for Multi-Modal Emotion Recognition},
    author = {Krishna D N and others},
    journal = {arXiv preprint arXiv:2108.09669},
    year = {2021},
    url = {https://arxiv.org/abs/2108.09669},
}"""

# Tables 1 and 2 of the paper: unweighted accuracy on IEMOCAP (4 classes, leave-one-session-out), as reported by the
# authors for their own models; not reproduced by ctal_hf. Each row with the config that builds that variant.
PAPER_RESULTS = (
    ("Table 1", "audio + text, encoders fine-tuned", "default", 0.7471),
    ("Table 1", "audio + text, encoders frozen (\"no fine-tuning\")", "`freeze_pretrained_encoders=True`", 0.7120),
    ("Table 2", "audio only (wav2vec 2.0 + CNN + BLSTM)", "`modality_outputs=\"audio\"`", 0.6001),
    ("Table 2", "text only (BERT fine-tuning)", "`modality_outputs=\"text\"`", 0.7101),
)


def _parameter_count(config: AudioTextCMAConfig) -> tuple[int, int]:
    """(all, trainable) parameters of the classification model of `config`, counted without weights."""
    with torch.device("meta"):
        model = AudioTextCMAForSequenceClassification(config)
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.requires_grad)


def _embedding_size(config: AudioTextCMAConfig) -> int:
    """Width of the fused utterance vector: `[mean | std]` of each stream used."""
    return 2 * config.hidden_size * (2 if config.modality_outputs == "both" else 1)


def _architecture(config: AudioTextCMAConfig) -> str:
    lines = []
    rows = []
    if config.modality_outputs != "text":
        audio = config.audio_config
        rows.append(("speech encoder", audio.model_type, audio.num_hidden_layers, audio.num_attention_heads,
                     audio.hidden_size))
    if config.modality_outputs != "audio":
        text = config.text_config
        rows.append(
            ("text encoder", text.model_type, text.num_hidden_layers, text.num_attention_heads, text.hidden_size)
        )
    lines += [_table(("part", "type", "layers", "heads", "hidden"), rows), ""]
    if config.modality_outputs != "text":
        blocks = ", ".join(
            f"{dim} filters (kernel {kernel}, stride {stride})"
            for dim, kernel, stride in zip(config.conv_dim, config.conv_kernel, config.conv_stride)
        )
        lines.append(
            f"- audio feature encoder (section 2.2): Conv1d + batch norm + ReLU blocks of {blocks}, then a BiLSTM of "
            f"{config.hidden_size // 2} per direction (dropout {config.lstm_dropout});"
        )
        mask = (
            "takes the waveform attention mask"
            if getattr(config.audio_config, "feat_extract_norm", "layer") == "layer"
            else "has a group-norm feature encoder and gets no attention mask (as it was pre-trained), so its outputs "
            "depend on how much padding a batch adds"
        )
        lines.append(f"- the speech encoder {mask};")
    if config.modality_outputs != "audio":
        lines.append(f"- text projection (section 2.3): {config.text_config.hidden_size} -> {config.hidden_size};")
    if config.modality_outputs == "both":
        lines.append(
            f"- cross-modal attention (section 2.4): CMA-1 (audio queries, text keys/values) and CMA-2 (text queries, "
            f"audio keys/values), {config.num_attention_heads} heads, width {config.hidden_size}, layer norm before "
            f"the attention, feed-forward {config.intermediate_size};"
        )
        streams = "CMA-1 and CMA-2"
    else:
        streams = "the BiLSTM" if config.modality_outputs == "audio" else "the projection"
    lines.append(
        f"- statistics pooling (section 2.5): mean and standard deviation over the valid positions of {streams}, "
        f"concatenated into a {_embedding_size(config)}-dimensional utterance vector (`embeddings`), then a linear "
        f"classifier over {config.num_labels} labels ({', '.join(str(label) for label in config.id2label.values())});"
    )
    frozen = (
        "both pre-trained encoders are frozen (the paper's \"no fine-tuning\" row)"
        if config.freeze_pretrained_encoders
        else "the speech encoder's convolutional feature encoder is frozen (section 4)"
        if config.freeze_feature_encoder
        else "nothing is frozen"
    )
    total, trainable = _parameter_count(config)
    lines.append(f"- {frozen}; {total / 1e6:.1f}M parameters, {trainable / 1e6:.1f}M of them trained.")
    return "\n".join(lines)


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
    repo_id = repo_id or model_name
    base_models = [name for name in (_hub_id(audio_base_model), _hub_id(text_base_model)) if name]
    metadata = ModelCardData(
        language=["en"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="audio-classification",
        tags=TAGS,
        datasets=[dataset] if _hub_id(dataset) else None,
        base_model=base_models or None,
        model_name=model_name,
    )
    started = [f"`{name}`" for name in (audio_base_model, text_base_model) if name]
    weights = [
        "## Weights",
        "",
        (f"Started from {' and '.join(started)} (`from_audio_text_pretrained`); " if started else "")
        + "the layers above the encoders were newly initialised"
        + (f" and the model was fine-tuned on `{dataset}`." if dataset else "; no fine-tuning is recorded here."),
    ]
    if training_details:
        weights += ["", _table(("hyper-parameter", "value"), sorted(training_details.items()))]
    if training_results:
        weights += ["", "Measured on this run:", "", _table(("metric", "value"), sorted(training_results.items()))]
    reported = _table(
        ("source", "model", "built here with", "UA (reported)"),
        [(table, model, how, f"{value:.2%}") for table, model, how, value in PAPER_RESULTS],
    )
    body = f"""# {model_name}

An audio-and-text classifier after "Using Large Pre-Trained Models with Cross-Modal Attention for Multi-Modal Emotion
Recognition" (Krishna D N et al., 2021, [arXiv:2108.09669]({PAPER_URL})), implemented by the `ctal_hf` package as
`AudioTextCMAForSequenceClassification`: a pre-trained wav2vec 2.0-style speech encoder and a pre-trained BERT-style
text encoder, joined by bidirectional cross-modal attention and statistics pooling. Padding is honoured in every block,
so a padded batch gives each utterance the result it gets alone (with speech encoders that take an attention mask, see
below).

## Architecture

{_architecture(config)}

{chr(10).join(weights)}

## Intended uses and limitations

- Use: utterance-level classification or regression of speech with its transcript (emotion, sentiment); the fused
  `embeddings` also serve as utterance vectors.
- Both inputs are needed unless the model is a single-modality variant; a transcript (human or ASR) must be supplied.
- The encoders' pre-training data decide what speech and text the model represents well; the paper's encoders saw read
  English audiobooks (wav2vec 2.0 on LibriVox) and English books and Wikipedia (BERT).
- Emotion models can be misused for profiling or surveillance; do not use them to make decisions about people.

## How to use

`import ctal_hf` registers the family with the transformers Auto classes (no `trust_remote_code`).

```python
import ctal_hf
import soundfile
from transformers import AutoModelForSequenceClassification, AutoProcessor

processor = AutoProcessor.from_pretrained("{repo_id}")
model = AutoModelForSequenceClassification.from_pretrained("{repo_id}")
waveform, sampling_rate = soundfile.read("speech.wav")
inputs = processor(audio=[waveform], text=["the transcript"], sampling_rate=sampling_rate, return_tensors="pt")
outputs = model(**inputs)
outputs.logits      # (batch, {config.num_labels})
outputs.embeddings  # (batch, {_embedding_size(config)}), the fused utterance vector
```

## Results reported by the paper

**As reported by the paper for the authors' own models (IEMOCAP, 4 classes, unweighted accuracy, leave-one-session-out);
not reproduced by `ctal_hf`, and not results of these weights.** The paper published neither code nor weights.

{reported}

## Citation

```bibtex
{CITATION}
```
"""
    return f"---\n{metadata.to_yaml()}\n---\n\n{body}"


def write_audio_text_cma_card(output_dir: str | Path, config: AudioTextCMAConfig, **render_kwargs) -> Path:
    """Write the card as `README.md` into `output_dir` (title: the folder name unless `model_name` is given; the
    snippet loads `repo_id`, else `output_dir` as given) and return its path."""
    render_kwargs.setdefault("model_name", Path(output_dir).name)
    render_kwargs.setdefault("repo_id", str(output_dir))
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_audio_text_cma_card(config, **render_kwargs), encoding="utf-8")
    return path


__all__ = ["PAPER_RESULTS", "render_audio_text_cma_card", "write_audio_text_cma_card"]
