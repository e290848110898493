#!/usr/bin/env python
"""t-SNE of utterance embeddings (paper Figure 4): the representation a classification model feeds its classifier
(`embeddings`), for any CTAL checkpoint (or one of the second family), with or without fine-tuning, coloured by
speaker or by label.

The paper's figure, the pre-trained model without fine-tuning on LibriSpeech test-clean, 50 utterances per speaker:
    python examples/plot_embeddings.py --model_name_or_path outputs/ctal-large --dataset /data/LibriSpeech \
        --split test-clean --color_by speaker_id --max_per_class 50 --output outputs/tsne-test-clean.png

A pre-trained checkpoint has no fine-tuning head: its pooling weights are drawn with --seed (the representation is
then the attention + max pooled encoder states with random attention-pooling weights). Writes the PNG and, next to it,
a TSV of the plotted points (id, class, x, y). Needs matplotlib (`pip install 'ctal_hf[examples]'`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.manifold import TSNE
from transformers import AutoModelForSequenceClassification, set_seed

import ctal_hf  # noqa: F401  (registers both model families with the Auto classes)
import run_classification
from ctal_hf.data.sources import load_speech_dataset
from ctal_hf.embeddings import utterance_embeddings
from ctal_hf.speaker_verification import draw_per_speaker, l2_normalize


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="Checkpoint folder or Hub id (pre-trained, "
                        "converted or fine-tuned).")
    parser.add_argument("--processor_name", help="Processor (or CTAL tokenizer) folder; default: the model's.")
    parser.add_argument("--dataset", required=True, help="LibriSpeech / IEMOCAP folder, manifest, saved dataset or "
                        "Hub id.")
    parser.add_argument("--split", help="Split of the dataset, e.g. test-clean.")
    parser.add_argument("--color_by", default="speaker_id", help="Column whose values colour the points, e.g. "
                        "speaker_id or label.")
    parser.add_argument("--max_per_class", type=int, default=50, help="Utterances per class at most (seeded draw).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the draw, of t-SNE and of a fresh head.")
    parser.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (below the point count).")
    parser.add_argument("--batch_size", type=int, default=8, help="Utterances per forward pass.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda.")
    parser.add_argument("--cache_dir", help="Per-utterance embedding cache (see ctal_hf.embeddings); default none.")
    parser.add_argument("--output", default="embeddings_tsne.png", help="PNG to write (a .tsv of the points beside).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --output.")
    parser.add_argument("--skip_unreadable", action="store_true", help="Skip rows whose audio file is missing.")
    return parser.parse_args(argv)


def plot(points: pd.DataFrame, path: Path, title: str) -> None:
    """A scatter plot of the points, one colour and marker pair per class (up to 80 distinct pairs, e.g. the 40
    speakers of LibriSpeech test-clean), with a legend beside it up to 80 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(points["class"].unique(), key=run_classification.natural_key)
    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    markers = "os^D"
    figure, axes = plt.subplots(figsize=(8.5 if len(names) > 20 else 6.5, 6))
    for number, name in enumerate(names):
        part = points[points["class"] == name]
        axes.scatter(part["x"], part["y"], s=14, color=colours(number % colours.N),
                     marker=markers[number // colours.N % len(markers)], label=name)
    if len(names) <= 80:
        axes.legend(fontsize=6, markerscale=1.2, loc="center left", bbox_to_anchor=(1.0, 0.5),
                    ncol=1 + len(names) // 21)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title, fontsize=9)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    output = Path(args.output)
    table = output.with_suffix(".tsv")
    if output.suffix.lower() != ".png":
        raise ValueError(f"--output must name a .png file, got {output}.")
    existing = [str(path) for path in (output, table) if path.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite to replace, or choose another "
                              "--output.")
    dataset = load_speech_dataset(args.dataset, split=args.split, skip_unreadable=args.skip_unreadable)
    if args.color_by not in dataset.column_names:
        raise ValueError(f"--color_by {args.color_by!r} is not a column of {args.dataset} ({dataset.column_names}).")
    classes = np.asarray([str(value) for value in dataset[args.color_by]])
    if args.max_per_class < 1:
        raise ValueError(f"--max_per_class must be at least 1, got {args.max_per_class}.")
    rows = np.sort(np.concatenate(draw_per_speaker(classes, args.max_per_class, args.seed)))
    if len(rows) <= args.perplexity:
        raise ValueError(f"t-SNE needs more points than its perplexity: {len(rows)} utterances, perplexity "
                         f"{args.perplexity}; pass a smaller --perplexity or a larger --max_per_class.")
    set_seed(args.seed)  # a checkpoint without a fine-tuning head gets the same fresh head every time
    model = AutoModelForSequenceClassification.from_pretrained(args.model_name_or_path)
    processor = run_classification.load_processor(args.processor_name or args.model_name_or_path, model.config)
    subset = dataset.select(rows)
    embeddings = utterance_embeddings(model, processor, subset, batch_size=args.batch_size, cache_dir=args.cache_dir,
                                      device=args.device)
    # On unit vectors Euclidean distance orders pairs as cosine similarity does, the score verification uses.
    coordinates = TSNE(n_components=2, perplexity=args.perplexity, init="pca",
                       random_state=args.seed).fit_transform(l2_normalize(embeddings))
    ids = subset["id"] if "id" in subset.column_names else [str(audio) for audio in subset["audio"]]
    points = pd.DataFrame({"id": ids, "class": classes[rows], "x": coordinates[:, 0], "y": coordinates[:, 1]})
    output.parent.mkdir(parents=True, exist_ok=True)
    points.to_csv(table, sep="\t", index=False, float_format="%.5f")
    title = (f"t-SNE of {len(points)} utterance embeddings, {points['class'].nunique()} {args.color_by} values\n"
             f"{Path(args.model_name_or_path).name}")
    plot(points, output, title)
    print(f"Wrote {output} ({len(points)} points) and {table}.")
    return points


if __name__ == "__main__":
    main()
