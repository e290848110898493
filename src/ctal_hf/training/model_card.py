"""The CTAL model card: one template for every card this package writes.

- `model_cards/ctal-base/README.md` and `model_cards/ctal-large/README.md` (the Hub cards of the published presets) are
  `render_published_card(name)`; `python -m ctal_hf.training.model_card` rewrites them and a test keeps them equal to a fresh
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

from ..models.ctal.configuration_ctal import CTAL_PRESETS, CTALConfig


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


def _hub_id(name: str | None) -> str | None:
    """`name` when it reads as a Hub repository id rather than a local path, for the YAML `datasets` / `base_model`."""
    if name is None or Path(name).exists():
        return None
    return name if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) else None


def _paper_name(preset: str) -> str:
    """How the paper writes a preset's size: `"ctal-base"` -> `"CTAL_BASE"`."""
    return preset.upper().replace("-", "_")


def _paper_sizes() -> str:
    return " and ".join(
        f"`{name}` = {_paper_name(name)} (N={size['num_hidden_layers']}, A={size['num_attention_heads']}, "
        f"H={size['hidden_size']})"
        for name, size in CTAL_PRESETS.items()
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _architecture(config: CTALConfig) -> str:
    sizes = (config.num_hidden_layers, config.num_attention_heads, config.hidden_size, config.intermediate_size)
    rows = [(stack, *sizes) for stack in ("text", "audio")]
    attention = (
        "causal (each frame attends to earlier frames only), as in the authors' released code"
        if config.audio_causal_self_attention
        else "bidirectional, as in the paper"
    )
    return "\n".join(
        [
            _table(("stack", "layers N", "heads A", "hidden H", "FFN"), rows),
            "",
            f"The presets of `ctal_hf` follow the paper's sizes (section 4.1): {_paper_sizes()}.",
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
    config: CTALConfig,
    kind: str,
    model_name: str,
    source: str | None,
    dataset: str | None,
    base_model: str | None,
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
        attention_flag = "" if config.audio_causal_self_attention else " --no-audio_causal_self_attention"
        attention = (
            "`audio_causal_self_attention=True`, because the released code's audio stack was causal;"
            if config.audio_causal_self_attention
            else "`audio_causal_self_attention=False` (converted with `--no-audio_causal_self_attention`): the "
            "paper's bidirectional attention, which the original weights were not trained with, so these weights "
            "compute a different function than the original checkpoint did;"
        )
        decoder = (
            "the MLM decoder was checked to be the word embeddings, as RoBERTa ties them, and stays tied"
            if config.tie_word_embeddings
            else "the MLM decoder differs from the word embeddings in this checkpoint, so it is kept as a weight of "
            "its own (`tie_word_embeddings=False`)"
        )
        return "\n".join(
            [
                "## Weights: how the checkpoint was converted",
                "",
                f"Converted with the converter of this package from {source or 'a checkpoint of the original code'}:",
                "",
                "```bash",
                f"ctal-convert-original states-<step>.ckpt {model_name} \\",
                f"    --tokenizer_dir tokenizer/libri-roberta_train-960{attention_flag} --verify",
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
                f"- the MLM and MCAM heads are kept (`CTALForPreTraining` loads them); {decoder};",
                f"- {attention}",
                "- the size is the checkpoint's actual depth (see \"Architecture\"): the training yamls of the "
                "released code name their sizes differently from the paper (their `base` yaml has 6 layers per "
                "stack, their `large` 12), so a converted checkpoint is named, and compared with the paper, by the "
                "number of layers it has, not by the name of the yaml it was trained with;",
                "- the tokenizer is the authors' `vocab.json` / `merges.txt` with their text normalisation built in, "
                "the feature extractor reproduces their recipe.",
                "",
                "The conversion is checked in `tests/test_convert_original_checkpoint.py` against an independent "
                "implementation of the original equations (hidden states, MLM logits and MCAM predictions agree to "
                "1e-5).",
            ]
        )
    start = f"Continued pre-training from `{base_model}`" if base_model else "Pre-trained from scratch"
    lines = [
        "## Weights: pre-training",
        "",
        f"{start} with `examples/run_pretraining.py` of `ctal_hf` (MLM + MCAM, paper section 3.2)"
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
            f"**As reported by the paper for {_paper_name(paper_results)} "
            f"(N={CTAL_PRESETS[paper_results]['num_hidden_layers']} layers per stack, the depth of these weights); "
            "not verified by `ctal_hf`.** They are the paper's results for a model of this size, not a measurement "
            "of these weights. The paper fine-tunes with the fusion head and orthogonal loss of section 3.3 "
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
    base_model: str | None = None,
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
        base_model: for pre-trained weights, the checkpoint pre-training continued from (`None`: from scratch; a Hub
            id also goes into the YAML `base_model`).
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
        # "demo" is the package's synthetic corpus, not a Hub dataset.
        datasets = [dataset] if dataset != "demo" and _hub_id(dataset) else None
    else:
        datasets = ["librispeech_asr"] if weights == "converted" else None
    metadata = ModelCardData(
        language=["en"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=TAGS + (["random-weights"] if weights == "random" else []),
        datasets=datasets,
        base_model=_hub_id(base_model) if weights == "pretrained" else None,
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

{_weights_section(config, weights, model_name, source, dataset, base_model, training_details, training_results)}

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
outputs.text_last_hidden_state   # (batch, tokens, {config.hidden_size})
outputs.audio_last_hidden_state  # (batch, frames, {config.hidden_size}), one frame per 12.5 ms
```

Fine-tuning with the paper's head (attention + max pooling, fusion, orthogonal loss; section 3.3):

```python
import torch
from ctal_hf import CTALForSequenceClassification

model = CTALForSequenceClassification.from_pretrained("{repo_id}", num_labels=4)  # num_labels=1: regression (L1)
labels = torch.tensor([0])  # one class index per utterance (a float score per utterance when num_labels=1)
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
- **Fine-tuning head.** The released fine-tuning code projects each stream with tanh(Linear) before pooling, leaves
  `<s>` out of the text max-pool and puts a tanh(Linear 2H->2H) layer before a bias-free classifier;
  `CTALForSequenceClassification` follows the paper's section 3.3 by default and the code with
  `classifier_head="original_code"` (this config: `{config.classifier_head}`).

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
    repo_id: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    training_args: Any | None = None,
    log_history: Sequence[Mapping[str, Any]] | None = None,
    **render_kwargs,
) -> Path:
    """Write `README.md` into `output_dir` and return its path.

    `model_name` (the title) defaults to the folder name. The usage snippets load `repo_id` (the Hub repository the
    folder is pushed to), else `output_dir` as given, so that they work from where the folder was written. With a
    Trainer's `training_args` (and `log_history`) the card describes a pre-training run (`weights="pretrained"`),
    continued from `base_model` when given. Other keyword arguments go to `render_model_card`.
    """
    snippet_path = repo_id or str(output_dir)
    output_dir = Path(output_dir)
    if training_args is not None:
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
    card = render_model_card(
        config,
        model_name=model_name or output_dir.name,
        repo_id=snippet_path,
        base_model=base_model,
        dataset=dataset,
        **render_kwargs,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "README.md"
    path.write_text(card, encoding="utf-8")
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
        source=f"a checkpoint of the authors' code ({ORIGINAL_CODE_URL}) with "
        f"N={CTAL_PRESETS[name]['num_hidden_layers']} layers per stack, the paper's {_paper_name(name)} size",
        paper_results=name,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Re-render the committed model cards of the paper presets.")
    # Underscored and dashed spellings both work, whichever style a user types from the other commands.
    parser.add_argument(
        "--output_dir", "--output-dir", default="model_cards", help="folder holding <preset>/README.md"
    )
    args = parser.parse_args(argv)
    for name in CTAL_PRESETS:
        path = Path(args.output_dir) / name / "README.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_published_card(name), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
