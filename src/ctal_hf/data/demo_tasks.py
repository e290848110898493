"""A labelled task on the synthesised demo corpus, to run fine-tuning end to end and see what pre-training adds.

`build_transitivity_task` labels each utterance of a demo corpus (`ctal_hf.data.demo_corpus`) by whether the first
verb of its sentence takes an object ("transitive": "the baker carried a heavy basket") or not ("intransitive": "the
baker waited"). The label is in the words, so both the transcript and the speech carry it. The grammar's verbs and
object phrases are split in two halves: training and validation sentences use only the first half, test sentences
only the second, and sentences mixing the halves are left out. The test thus measures generalisation to words never
seen in fine-tuning; a model pre-trained on the demo corpus has seen them in pre-training (from a corpus built with
another seed: other sentences, same grammar and voices), a model trained from random weights has not.

CLI: `python -m ctal_hf.data.demo_tasks --help` prints the manifest path.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from . import demo_corpus


def _halves(words: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return words[: len(words) // 2], words[len(words) // 2:]


def build_transitivity_task(
    output_dir: str | os.PathLike | None = None, num_utterances: int = 600, seed: int = 1
) -> Path:
    """Builds (or finds) the demo corpus of `num_utterances` and `seed` and writes `transitivity.jsonl` next to its
    manifest.

    Rows: the demo manifest's fields (`audio`, `text`, `speaker_id`, `id`) with `label` ("transitive" or
    "intransitive") and `split`: "train" and "validation" (every fourth of the first-half sentences) or "test" (the
    second-half sentences). The default `seed=1` keeps the sentences apart from the default pre-training corpus
    (`seed=0`).

    Returns:
        The path of `transitivity.jsonl`, loadable with `load_speech_dataset` (audio paths are relative to it).
    """
    manifest = demo_corpus.build_demo_corpus(output_dir, num_utterances=num_utterances, seed=seed)
    transitive, intransitive = _halves(demo_corpus._TRANSITIVE), _halves(demo_corpus._INTRANSITIVE)
    objects = _halves(demo_corpus._OBJECTS)
    rows, first_half = [], 0
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text = row["text"].lower()
        words = set(text.split())
        # A sentence belongs to a half when it uses a verb or an object phrase of it.
        uses = [bool(words & {*transitive[half], *intransitive[half]}) or any(f" {phrase}" in f" {text}" for phrase in
                objects[half]) for half in (0, 1)]
        if uses[0] == uses[1]:
            continue
        first_verb = next(word for word in text.split() if word in demo_corpus._TRANSITIVE + demo_corpus._INTRANSITIVE)
        row.pop("split", None)
        if uses[1]:
            split = "test"
        else:
            split = "validation" if first_half % 4 == 3 else "train"
            first_half += 1
        rows.append({**row, "label": "transitive" if first_verb in demo_corpus._TRANSITIVE else "intransitive",
                     "split": split})
    path = manifest.parent / "transitivity.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ctal_hf.data.demo_tasks",
        description="Build the transitivity task on a demo corpus and print the path of its manifest.",
    )
    parser.add_argument("--output-dir", "--output_dir", default=None,
                        help=f"root folder of the corpus (default: ${demo_corpus.CORPUS_DIR_ENV}, else "
                        f"{demo_corpus.DEFAULT_ROOT})")
    parser.add_argument("--num-utterances", "--num_utterances", type=int, default=600, help="default: 600")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sentences (default: 1; pre-training uses 0)")
    args = parser.parse_args(argv)
    print(build_transitivity_task(args.output_dir, num_utterances=args.num_utterances, seed=args.seed))


if __name__ == "__main__":
    main()
