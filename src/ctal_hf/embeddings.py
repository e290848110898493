"""Utterance embeddings: the representation a classification model feeds its classifier, for speaker verification
(paper section 4.2.3: cosine-scored, taken before the speaker classifier) and for t-SNE plots (Figure 4).

`utterance_embeddings` runs any model whose classification output has an `embeddings` field (CTAL's fused vector
`(B, 2H)`, the second family's pooled vector `(B, 4H)`) over the rows of a dataset in batches, with a progress bar, and
keeps one `.npy` per utterance in a cache folder keyed by the model (weights, config, feature extractor, tokenizer)
and the utterance (its audio file's path, size and modification time, or its bytes, and its transcript): a second run
on the same model skips what it has computed, a changed model or file is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.labelled import DataCollatorForAudioTextClassification


def model_fingerprint(model: torch.nn.Module, processor: Any = None) -> str:
    """A hex digest of everything that decides a model's embeddings: its class, config, weights and buffers, and the
    processor's feature-extraction settings and tokenizer."""
    digest = hashlib.sha256(type(model).__name__.encode())
    digest.update(model.config.to_json_string(use_diff=False).encode())
    feature_extractor = getattr(processor, "feature_extractor", None)
    if feature_extractor is not None:
        digest.update(feature_extractor.to_json_string().encode())
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        digest.update((backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True))
                      .encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _utterance_key(row: Mapping[str, Any]) -> str:
    """A hex digest naming one utterance's input: the audio (a file by path, size and modification time; in-memory
    bytes or samples by content) and its transcript."""
    digest = hashlib.sha256(str(row.get("text")).encode())
    audio = row["audio"]
    if isinstance(audio, Mapping):
        if audio.get("bytes") is not None:
            digest.update(bytes(audio["bytes"]))
        elif audio.get("array") is not None:
            digest.update(np.ascontiguousarray(audio["array"], dtype=np.float64).tobytes())
            digest.update(str(audio.get("sampling_rate")).encode())
        audio = audio.get("path")
    if audio is not None:
        path = Path(os.fspath(audio)).resolve()
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}|{stat.st_size if stat else ''}|{stat.st_mtime_ns if stat else ''}".encode())
    return digest.hexdigest()


def _save(path: Path, embedding: np.ndarray) -> None:
    """Write-then-rename, so an interrupted run never leaves a truncated cache file."""
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as handle:
        np.save(handle, embedding)
    os.replace(handle.name, path)


@torch.no_grad()
def utterance_embeddings(
    model: torch.nn.Module,
    processor: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 8,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    description: str = "Embedding utterances",
) -> np.ndarray:
    """The `embeddings` output of `model` for each row, computed in batches with a progress bar (the uncached rows
    ordered by transcript length, so a batch holds utterances of similar length and little padding).

    Args:
        model: a classification model whose output has `embeddings` (e.g. `CTALForSequenceClassification`,
            `AudioTextCMAForSequenceClassification`); put in eval mode here.
        processor: its processor (`processor(audio=..., text=...)`).
        rows: a `datasets.Dataset` or a list of dicts with `audio` (a path or a `datasets` audio dict) and `text`.
        batch_size: utterances per forward pass.
        cache_dir: folder of the per-utterance cache (`<cache_dir>/<model fingerprint>/<utterance>.npy`); None
            computes everything.
        device: where to run the model (default: where its parameters are).
        description: the progress bar's label.

    Returns:
        `(len(rows), D)` float32 embeddings, in the order of `rows` (not normalised: see
        `ctal_hf.speaker_verification.l2_normalize`).
    """
    if len(rows) == 0:
        raise ValueError("No utterances to embed.")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    embeddings: list[np.ndarray | None] = [None] * len(rows)
    cached: list[Path] | None = None
    if cache_dir is not None:
        folder = Path(cache_dir) / model_fingerprint(model, processor)[:24]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.json").write_text(json.dumps({"model_type": model.config.model_type,
                                                       "class": type(model).__name__}) + "\n")
        cached = [folder / f"{_utterance_key(rows[index])}.npy" for index in range(len(rows))]
        for index, path in enumerate(cached):
            if path.is_file():
                embeddings[index] = np.load(path)
    todo = [index for index, embedding in enumerate(embeddings) if embedding is None]
    collator = DataCollatorForAudioTextClassification(processor)
    todo.sort(key=lambda index: len(str(rows[index].get("text") or "")))
    with tqdm(total=len(todo), desc=description, unit="utt", disable=not todo) as progress:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            batch = collator([{"audio": rows[index]["audio"], "text": rows[index]["text"]} for index in chunk])
            outputs = model(**{name: value.to(device) for name, value in batch.items()}, return_dict=True)
            if getattr(outputs, "embeddings", None) is None:
                raise ValueError(
                    f"{type(model).__name__} returns no `embeddings`; use a sequence-classification model of this "
                    "package (CTALForSequenceClassification, AudioTextCMAForSequenceClassification)."
                )
            values = outputs.embeddings.float().cpu().numpy()
            for index, embedding in zip(chunk, values):
                embeddings[index] = embedding
                if cached is not None:
                    _save(cached[index], embedding)
            progress.update(len(chunk))
    return np.stack(embeddings).astype(np.float32)


__all__ = ["model_fingerprint", "utterance_embeddings"]
