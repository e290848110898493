"""The transitivity task on the demo corpus: labels from the sentence, disjoint word halves between fine-tuning and test."""

import json

import pytest

from ctal_hf.data import demo_corpus
from ctal_hf.data.demo_tasks import build_transitivity_task
from ctal_hf.data.labelled import prepare_labels
from ctal_hf.data.sources import load_speech_dataset


pytest.importorskip("espeakng_loader")


def test_labels_and_word_halves(tmp_path):
    path = build_transitivity_task(tmp_path, num_utterances=60)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {row["split"] for row in rows} == {"train", "validation", "test"}
    verbs = demo_corpus._TRANSITIVE + demo_corpus._INTRANSITIVE
    second_half = set(demo_corpus._TRANSITIVE[7:] + demo_corpus._INTRANSITIVE[7:])
    for row in rows:
        words = row["text"].lower().split()
        first_verb = next(word for word in words if word in verbs)
        assert row["label"] == ("transitive" if first_verb in demo_corpus._TRANSITIVE else "intransitive")
        used_verbs = {word for word in words if word in verbs}
        # Fine-tuning sentences use first-half verbs only, test sentences second-half verbs only.
        assert used_verbs <= second_half if row["split"] == "test" else not used_verbs & second_half
    dataset = load_speech_dataset(path, split="test")
    encoded, spec = prepare_labels(dataset)
    assert spec.names == ("intransitive", "transitive") and len(encoded) == sum(row["split"] == "test" for row in rows)
