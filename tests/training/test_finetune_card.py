"""The card of a fine-tuned model: metadata, protocol and the authors'-protocol warning."""

import yaml

from ctal_hf.training.finetune_card import TEST_SELECTION_WARNING, render_finetuned_card


def render(**overrides):
    arguments = dict(
        model_name="iemocap-fold-Session1", repo_id="outputs/iemocap/fold-Session1", model_type="ctal",
        problem_type="single_label_classification", label_names=("angry", "happy", "neutral", "sad"),
        base_model="outputs/ctal-large", dataset="/data/IEMOCAP_full_release",
        protocol=["leave-one-group-out cross-validation over `session`", "checkpoint selected on validation data"],
        selected_on_test=False, results={"validation": {"ua": 0.61, "loss": 1.1}, "test": {"ua": 0.58, "wa": 0.6}},
        label_counts={"train": {"angry": 3, "sad": 1}, "test": {"angry": 1}}, training_details={"learning_rate": 1e-5},
    )
    return render_finetuned_card(**{**arguments, **overrides})


def split(card):
    header, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_card_states_task_data_protocol_and_test_metrics():
    metadata, body = split(render())
    assert metadata["library_name"] == "transformers" and "ctal" in metadata["tags"]
    (index,) = metadata["model-index"]
    values = {metric["type"]: metric["value"] for result in index["results"] for metric in result["metrics"]}
    assert values == {"ua": 0.58, "wa": 0.6}  # test metrics only, without the loss
    assert index["results"][0]["dataset"]["name"] == "IEMOCAP_full_release (test)"
    assert "fine-tuned from `outputs/ctal-large`" in body
    assert "0 = `angry`, 1 = `happy`, 2 = `neutral`, 3 = `sad`" in body
    assert "| train | 3 | 1 | 4 |" in body and "| test | 1 | 0 | 1 |" in body
    assert "- leave-one-group-out cross-validation over `session`" in body
    assert "| ua | 0.6100 | 0.5800 |" in body
    assert 'pipeline("audio-text-classification", model="outputs/iemocap/fold-Session1")' in body
    assert "@inproceedings{li-etal-2021-ctal" in body
    assert TEST_SELECTION_WARNING not in body


def test_test_selection_is_announced_and_kept_out_of_the_metadata():
    metadata, body = split(render(selected_on_test=True, results={"test": {"ua": 0.7}}))
    assert body.index(TEST_SELECTION_WARNING) < body.index("## Labels")
    assert "test column is optimistic" in body
    assert "model-index" not in metadata


def test_random_weights_and_regression():
    _, body = split(render(base_model=None, problem_type="regression", label_names=None, results={}))
    assert "trained from **randomly initialised** weights" in body
    assert "One score per utterance" in body and "## Results" not in body
