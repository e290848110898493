"""The CTAL model card: one template for every card this package writes.

- `model_cards/ctal-base/README.md` and `model_cards/ctal-large/README.md` (the Hub cards of the published presets) are
  `render_published_card(name)`; `python -m ctal_hf.model_card` rewrites them and a test keeps them equal to a fresh
  render;
- the converter (`ctal-convert-original`), `python -m ctal_hf.create` and `examples/run_pretraining.py` write the
  card of the folder they produce with `write_model_card`.

The YAML header is the Hub's model-card metadata (`huggingface_hub.ModelCardData`); its `model-index` holds the results
the paper reports (Tables 1-3), marked `verified: false` with the paper as source, and only on cards of weights the
paper's numbers are about (`paper_results`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from .configuration_ctal import CTAL_PRESETS, CTALConfig


# Where the published `ctal-base` / `ctal-large` repositories live (`<org>/ctal-large`).
HUB_ORGANIZATION = "ctal-hf"
PAPER_URL = "https://aclanthology.org/2021.emnlp-main.323"
ORIGINAL_CODE_URL = "https://github.com/Ydkwim/CTAL"
WEIGHT_KINDS = ("converted", "pretrained", "random")
TAGS = [
    "ctal",
    "audio",
    "speech",
    "multimodal",
    "audio-text",
    "emotion-recognition",
    "sentiment-analysis",
    "speaker-verification",
]

CITATION = """@inproceedings{li-etal-2021-ctal,
    title = "{CTAL}: Pre-training Cross-modal Transformer for Audio-and-Language Representations",
    author = "Li, Hang and Ding, Wenbiao and Kang, Yu and Liu, Tianqiao and Wu, Zhongqin and Liu, Zitao",
    booktitle = "Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing",
    month = nov,
    year = "2021",
    address = "Online and Punta Cana, Dominican Republic",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/2021.emnlp-main.323",
    doi = "10.18653/v1/2021.emnlp-main.323",
    pages = "3966--3977",
}"""


@dataclass(frozen=True)
class Benchmark:
    """One results table of the paper: a task on a dataset with its metrics (key, Hub metric type, display name)."""

    table: str
    task_type: str
    task_name: str
    dataset_type: str
    dataset_name: str
    metrics: tuple[tuple[str, str, str], ...]
    dataset_config: str | None = None
    dataset_split: str | None = None


BENCHMARKS = (
    Benchmark(
        "Table 1",
        "audio-classification",
        "Emotion recognition",
        "iemocap",
        "IEMOCAP (4 classes, 5-fold leave-one-session-out)",
        (("WA", "accuracy", "WA (weighted accuracy)"), ("UA", "recall", "UA (unweighted accuracy, mean class recall)")),
    ),
    Benchmark(
        "Table 2",
        "audio-classification",
        "Sentiment analysis",
        "cmu_mosei",
        "CMU-MOSEI (audio + text)",
        (
            ("Acc2", "accuracy", "Acc2 (binary accuracy)"),
            ("F1", "f1", "F1 (weighted)"),
            ("MAE", "mae", "MAE"),
            ("Corr", "pearsonr", "Corr (Pearson)"),
        ),
    ),
    Benchmark(
        "Table 3",
        "audio-classification",
        "Speaker verification",
        "librispeech_asr",
        "LibriSpeech test-clean",
        (("EER", "eer", "EER"),),
        dataset_config="clean",
        dataset_split="test",
    ),
)

# Paper Tables 1-3 (CTAL_BASE / CTAL_LARGE rows), as reported by the authors; not reproduced by this package.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "ctal-base": {"WA": 0.7286, "UA": 0.7370, "Acc2": 0.8036, "F1": 0.8055, "MAE": 0.6061, "Corr": 0.6828,
                  "EER": 0.0194},
    "ctal-large": {"WA": 0.7395, "UA": 0.7463, "Acc2": 0.8077, "F1": 0.8101, "MAE": 0.6027, "Corr": 0.6809,
                   "EER": 0.0155},
}

# Provenance of the published cards' weights (`render_published_card`).
PUBLISHED_SOURCES = {
    "ctal-base": f"the CTAL-Base checkpoint the authors link from the README of {ORIGINAL_CODE_URL}",
    "ctal-large": (
        "a CTAL-Large checkpoint in the authors' format (their README announces CTAL-Large but gives no download link "
        "at the time of writing)"
    ),
}

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


def _eval_results(model_name: str) -> list[EvalResult]:
    values = PAPER_RESULTS[model_name]
    return [
        EvalResult(
            task_type=benchmark.task_type,
            task_name=benchmark.task_name,
            dataset_type=benchmark.dataset_type,
            dataset_name=benchmark.dataset_name,
            dataset_config=benchmark.dataset_config,
            dataset_split=benchmark.dataset_split,
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=values[key],
            verified=False,
            source_name=f"Reported by the CTAL paper (Li et al., EMNLP 2021), {benchmark.table}; "
            "not verified by ctal_hf",
            source_url=PAPER_URL,
        )
        for benchmark in BENCHMARKS
        for key, metric_type, metric_name in benchmark.metrics
    ]


def _hub_dataset_id(dataset: str | None) -> str | None:
    """`dataset` when it names a Hub dataset (not the demo corpus or a local path), for the YAML `datasets` field."""
    if dataset is None or dataset == "demo" or Path(dataset).exists():
        return None
    return dataset if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", dataset) else None


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _architecture(config: CTALConfig) -> str:
    rows = [
        (
            stack,
            getattr(config, f"{stack}_num_hidden_layers"),
            getattr(config, f"{stack}_num_attention_heads"),
            getattr(config, f"{stack}_hidden_size"),
            getattr(config, f"{stack}_intermediate_size"),
        )
        for stack in ("text", "audio")
    ]
    attention = (
        "causal (each frame attends to earlier frames only), as in the authors' released code"
        if config.audio_causal_self_attention
        else "bidirectional, as in the paper"
    )
    return "\n".join(
        [
            _table(("stack", "layers N", "heads A", "hidden H", "FFN"), rows),
            "",
            f"- vocabulary: {config.vocab_size:,} byte-level BPE tokens; at most "
            f"{config.max_position_embeddings} tokens per text (with `<s>` and `</s>`);",
            f"- audio: {config.audio_feature_size}-dimensional frames (80 log-mel + 80 delta, per-utterance CMVN, "
            f"50 ms window every 12.5 ms), at most {config.max_audio_frames:,} frames "
            f"({config.max_audio_frames * 12.5 / 1000:g} s);",
            f"- audio self-attention: {attention} "
            f"(`audio_causal_self_attention={config.audio_causal_self_attention}`);",
            "- pre-training heads kept: MLM (decoder tied to the word embeddings"
            + ("" if config.tie_word_embeddings else " in the paper; untied in these weights")
            + ") and MCAM (frame reconstruction).",
        ]
    )


def _weights_section(
    kind: str,
    model_name: str,
    source: str | None,
    dataset: str | None,
    training_details: Mapping[str, Any] | None,
    training_results: Mapping[str, Any] | None,
) -> str:
    if kind == "random":
        return (
            "## Weights\n\n**These weights are randomly initialised, not pre-trained.** They were created by "
            f"`python -m ctal_hf.create {model_name}` to give the architecture, config and processor a loadable folder "
            "(tests, pipelines, a starting point for `examples/run_pretraining.py`). Do not use them for feature "
            "extraction or fine-tuning expecting pre-trained behaviour."
        )
    if kind == "converted":
        return "\n".join(
            [
                "## Weights: how the checkpoint was converted",
                "",
                f"Converted from {source or 'a checkpoint of the original code'} with the converter of this package:",
                "",
                "```bash",
                f"ctal-convert-original states-<step>.ckpt {model_name} \\",
                "    --tokenizer_dir tokenizer/libri-roberta_train-960 --verify",
                "```",
                "",
                "- the file is read without executing code from it (a restricted unpickler stands in for the optimizer "
                "and argument objects pickled with the weights);",
                "- `config.json` comes from the checkpoint's own settings (`Settings.Config`, RoBERTa-style "
                "`semantic` / `acoustic` sections);",
                "- every original tensor is mapped and shape-checked; the text position table drops RoBERTa's two "
                "padding-offset rows (positions start at 0 here) and the token-type row 0, which the original adds to "
                "every token and frame, is folded into the text and audio position tables (exact: "
                "`word + pos + type0 = word + (pos + type0)`);",
                "- the MLM and MCAM heads are kept (`CTALForPreTraining` loads them); the MLM decoder is checked to be "
                "the word embeddings, as RoBERTa ties them;",
                "- `audio_causal_self_attention=True`, because the released code's audio stack was causal;",
                "- the tokenizer is the authors' `vocab.json` / `merges.txt` with their text normalisation built in, "
                "the feature extractor reproduces their recipe.",
                "",
                "The conversion is checked in `tests/test_convert_original_checkpoint.py` against an independent "
                "implementation of the original equations (hidden states, MLM logits and MCAM predictions agree to "
                "1e-5).",
            ]
        )
    lines = [
        "## Weights: pre-training",
        "",
        "Pre-trained from scratch with `examples/run_pretraining.py` of `ctal_hf` (MLM + MCAM, paper section 3.2)"
        + (f" on `{dataset}`." if dataset else "."),
    ]
    if training_details:
        lines += ["", _table(("hyper-parameter", "value"), sorted(training_details.items()))]
    if training_results:
        lines += ["", "Final logged values:", "", _table(("metric", "value"), sorted(training_results.items()))]
    return "\n".join(lines)


def _results_section(paper_results: str | None) -> str:
    if paper_results is None:
        return (
            "## Results\n\nNo downstream results are claimed for these weights. For reference, the paper's results "
            "for its CTAL-Base and CTAL-Large models are on the cards of `ctal-base` and `ctal-large`."
        )
    values = PAPER_RESULTS[paper_results]
    rows = [
        (benchmark.task_name, benchmark.dataset_name, metric_name, f"{values[key]:.4f}", benchmark.table)
        for benchmark in BENCHMARKS
        for key, _, metric_name in benchmark.metrics
    ]
    return "\n".join(
        [
            "## Results reported by the paper",
            "",
            f"**As reported by the paper for {paper_results.upper().replace('-', '_')}; not verified by `ctal_hf`.** "
            "The paper fine-tunes with the fusion head and orthogonal loss of section 3.3 "
            "(`CTALForSequenceClassification`).",
            "",
            _table(("task", "dataset", "metric", "value", "source"), rows),
        ]
    )


def render_model_card(
    config: CTALConfig,
    *,
    model_name: str,
    repo_id: str | None = None,
    weights: str = "pretrained",
    source: str | None = None,
    dataset: str | None = None,
    training_details: Mapping[str, Any] | None = None,
    training_results: Mapping[str, Any] | None = None,
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
        training_details: hyper-parameters shown as a table.
        training_results: final metrics shown as a table.
        paper_results: `"ctal-base"` or `"ctal-large"` to attach that row of the paper's Tables 1-3 as `model-index`
            (only for weights those numbers are about).
    """
    if weights not in WEIGHT_KINDS:
        raise ValueError(f"`weights` must be one of {WEIGHT_KINDS}, got {weights!r}.")
    if paper_results is not None and paper_results not in PAPER_RESULTS:
        raise ValueError(f"`paper_results` must be one of {sorted(PAPER_RESULTS)}, got {paper_results!r}.")
    repo_id = repo_id or model_name
    if weights == "pretrained":
        datasets = [_hub_dataset_id(dataset)] if _hub_dataset_id(dataset) else None
    else:
        datasets = ["librispeech_asr"] if weights == "converted" else None
    metadata = ModelCardData(
        language=["en"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=TAGS + (["random-weights"] if weights == "random" else []),
        datasets=datasets,
        model_name=model_name,
        eval_results=_eval_results(paper_results) if paper_results else None,
    )
    body = f"""# {model_name}

CTAL ("CTAL: Pre-training Cross-modal Transformer for Audio-and-Language Representations", Li et al., EMNLP 2021) for
Hugging Face transformers, implemented by the `ctal_hf` package. CTAL encodes a speech recording together with its
transcript: a Transformer text encoder, and a text-referred audio encoder whose layers apply audio self-attention and
then cross-attention to the final text states. It is pre-trained on speech with its transcripts (the paper: LibriSpeech,
960 h) by masked language modelling (MLM) and masked cross-modal acoustic modelling (MCAM), and fine-tuned for
audio-and-language tasks such as emotion recognition, sentiment analysis and speaker verification.

## Architecture

{_architecture(config)}

{_weights_section(weights, model_name, source, dataset, training_details, training_results)}

## Intended uses and limitations

- Use: utterance-level audio-and-language representations (`text_last_hidden_state`, `audio_last_hidden_state`) and
  fine-tuning on tasks where both the speech and its transcript are available (emotion, sentiment, speaker).
- Both inputs are needed: the audio stream attends to the transcript, so a transcript (human or ASR) must be supplied.
- CTAL is pre-trained on read English audiobooks (LibriSpeech in the paper; see "Weights" for these weights): expect
  weaker representations for spontaneous, conversational, noisy or non-English speech, and for text far from audiobook
  style. The tokenizer lowercases text and drops `.`, `,`, `?`, `!` as the original pipeline did.
- Audio is used at 16 kHz (the processor resamples); the processor truncates audio to {config.max_audio_frames:,}
  frames and text to {config.max_position_embeddings} tokens, the model's positions.
- Emotion and speaker models can be misused for profiling or surveillance; speaker verification results do not
  transfer to security-critical use without proper evaluation.

## How to use

`import ctal_hf` registers CTAL with the transformers Auto classes (no `trust_remote_code`).

```python
import ctal_hf
import soundfile
from transformers import AutoModel, AutoProcessor

processor = AutoProcessor.from_pretrained("{repo_id}")
model = AutoModel.from_pretrained("{repo_id}")
waveform, sampling_rate = soundfile.read("speech.wav")
inputs = processor(audio=[waveform], text=["the transcript"], sampling_rate=sampling_rate, return_tensors="pt")
outputs = model(**inputs)
outputs.text_last_hidden_state   # (batch, tokens, {config.text_hidden_size})
outputs.audio_last_hidden_state  # (batch, frames, {config.audio_hidden_size}), one frame per 12.5 ms
```

Fine-tuning with the paper's head (attention + max pooling, fusion, orthogonal loss; section 3.3):

```python
from ctal_hf import CTALForSequenceClassification

model = CTALForSequenceClassification.from_pretrained("{repo_id}", num_labels=4)  # num_labels=1: regression (L1)
loss = model(**inputs, labels=labels).loss
```

The pre-training heads load with `AutoModelForPreTraining` (MLM logits, MCAM predictions, losses).

## Paper vs. released code

The package follows the paper by default and offers the authors' code behaviour behind switches:

- **Causal audio attention.** The released code built the audio stack as a RoBERTa decoder, so its audio
  self-attention is causal; the paper describes it without a future mask. Weights trained by that code need
  `audio_causal_self_attention=True` (this config: `{config.audio_causal_self_attention}`); changing it changes the
  function the weights compute.
- **Orthogonal loss.** The paper's formula (section 3.3.1) has a typo in its second denominator and the released code
  divides by `||a||^2` instead of `||a|| ||s||`; `ctal_hf` uses the intended cosine form `|a.s| / (||a|| ||s||)`.
- **MCAM masking.** The paper masks 15% of non-overlapping segments of 20-50 frames and picks zero / replace / keep
  (80/10/10) per segment; the released code draws possibly overlapping segments and picks per frame.
  `DataCollatorForCTALPretraining(mcam_mode="segment")` (default) follows the paper, `mcam_mode="per_frame"` the code.

{_results_section(paper_results)}

## Citation

```bibtex
{CITATION}
```

Original code: {ORIGINAL_CODE_URL} (Apache-2.0).
"""
    return f"---\n{metadata.to_yaml()}\n---\n\n{body}"


def write_model_card(
    output_dir: str | Path,
    config: CTALConfig,
    *,
    model_name: str | None = None,
    dataset: str | None = None,
    training_args: Any | None = None,
    log_history: Sequence[Mapping[str, Any]] | None = None,
    **render_kwargs,
) -> Path:
    """Write `README.md` into `output_dir` and return its path. `model_name` defaults to the folder name; with a
    Trainer's `training_args` (and `log_history`) the card describes a pre-training run (`weights="pretrained"`).
    Other keyword arguments go to `render_model_card`."""
    output_dir = Path(output_dir)
    if training_args is not None:
        render_kwargs.setdefault("repo_id", getattr(training_args, "hub_model_id", None))
        render_kwargs["training_details"] = {
            # Enum fields (e.g. lr_scheduler_type) read better as their value.
            field: getattr(getattr(training_args, field), "value", getattr(training_args, field))
            for field in TRAINING_FIELDS
            if hasattr(training_args, field)
        }
    if log_history:
        train = [entry for entry in log_history if "loss" in entry]
        evaluation = [entry for entry in log_history if "eval_loss" in entry]
        results = {}
        for entries in (train, evaluation):
            if entries:
                last = entries[-1]
                step = last.get("step", "?")
                kept = {key: value for key, value in last.items() if not _LOG_NOISE.search(key)}
                results.update({f"{key} (step {step})": value for key, value in kept.items()})
        render_kwargs["training_results"] = results
    card = render_model_card(config, model_name=model_name or output_dir.name, dataset=dataset, **render_kwargs)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "README.md"
    path.write_text(card, encoding="utf-8")
    return path


def render_published_card(name: str) -> str:
    """The committed Hub card of a paper preset (`"ctal-base"` or `"ctal-large"`): converted original weights, so
    causal audio attention and the paper's results in `model-index`."""
    # As the converter leaves it: RoBERTa's 512-row text position table minus its two padding-offset rows.
    config = CTALConfig.from_preset(name, audio_causal_self_attention=True, max_position_embeddings=510)
    return render_model_card(
        config,
        model_name=name,
        repo_id=f"{HUB_ORGANIZATION}/{name}",
        weights="converted",
        source=PUBLISHED_SOURCES[name],
        paper_results=name,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Re-render the committed model cards of the paper presets.")
    parser.add_argument("--output_dir", default="model_cards", help="folder holding <preset>/README.md")
    args = parser.parse_args(argv)
    for name in CTAL_PRESETS:
        path = Path(args.output_dir) / name / "README.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_published_card(name), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
