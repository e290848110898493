"""CTALConfig as a transformers 5 `@strict` config: unknown keys, the keys transformers itself writes, config files of
earlier versions with per-stack `text_*` / `audio_*` sizes."""

import json

import pytest
import torch

from transformers import AutoConfig, AutoModel, Trainer, TrainingArguments

from ctal_hf import CTALConfig, CTALForPreTraining, CTALForSequenceClassification
from ctal_hf.models.ctal.configuration_ctal import SHARED_STACK_FIELDS, check_config_keys


SMALL = dict(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)


def write_config(folder, values: dict):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(values), encoding="utf-8")
    return folder


def legacy_config(**changes) -> dict:
    """A config.json as earlier versions of ctal_hf wrote it: every shared size once per stack."""
    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, hidden_act="gelu",
                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, layer_norm_eps=1e-12)
    values = {"model_type": "ctal", "architectures": ["CTALForPreTraining"], "vocab_size": 50,
              "transformers_version": "5.24.0", "dtype": "float32", "audio_causal_self_attention": True}
    values.update({f"{stack}_{field}": value for field, value in sizes.items() for stack in ("text", "audio")})
    values.update(changes)
    return values


def test_unknown_key_names_the_closest_key_in_every_route(tmp_path):
    with pytest.raises(ValueError, match=r"\['hiden_size'\]\. `hiden_size`: did you mean `hidden_size`"):
        CTALConfig(hiden_size=64)
    with pytest.raises(ValueError, match="did you mean `hidden_size`"):
        CTALConfig.from_preset("ctal-base", hiden_size=64)

    # A config.json with a misspelt key: the case, a 768-wide model built silently.
    folder = write_config(tmp_path / "typo", {"model_type": "ctal", **SMALL, "hiden_size": 64})
    routes = [(CTALConfig.from_pretrained, folder), (AutoConfig.from_pretrained, folder),
              (CTALConfig.from_json_file, folder / "config.json")]
    for load, source in routes:
        with pytest.raises(ValueError, match="`hiden_size`: did you mean `hidden_size`"):
            load(source)
    for model_class in (AutoModel, CTALForPreTraining):
        with pytest.raises(ValueError, match="`hiden_size`: did you mean `hidden_size`"):
            model_class.from_pretrained(folder)

    # Keyword arguments of from_pretrained, which transformers would otherwise drop.
    good = write_config(tmp_path / "good", {"model_type": "ctal", **SMALL})
    closest = r"\['num_layers'\]\. `num_layers`: did you mean `num_labels` \(or `num_hidden_layers`\)\?"
    with pytest.raises(ValueError, match=closest):
        CTALConfig.from_pretrained(good, num_layers=2)
    with pytest.raises(ValueError, match="num_layers"):
        AutoConfig.from_pretrained(good, num_layers=2)
    # Asked for, they come back (transformers' contract, used by PreTrainedModel.from_pretrained).
    config, unused = CTALConfig.from_pretrained(good, num_layers=2, return_unused_kwargs=True)
    assert unused == {"num_layers": 2} and config.hidden_size == 32


def test_check_config_keys_is_the_one_check():
    check_config_keys(["hidden_size", "num_labels", "id2label", "torch_dtype", "_name_or_path", "model_type"])
    with pytest.raises(ValueError) as error:
        check_config_keys({"hiden_size": 1, "audio_casual_self_attention": True, "zzz": 0})
    message = str(error.value)
    assert "['audio_casual_self_attention', 'hiden_size', 'zzz']" in message
    assert "`audio_casual_self_attention`: did you mean `audio_causal_self_attention`?" in message
    assert "`zzz`: no similar key." in message
    # A per-stack key of earlier versions, given as a new setting, points to the shared field.
    with pytest.raises(ValueError, match="`text_hidden_act`: the text and audio stacks share one `hidden_act`"):
        check_config_keys(["text_hidden_act"])


def test_keys_transformers_writes_are_accepted(tmp_path):
    config = CTALConfig(**SMALL, num_labels=3, problem_type="single_label_classification")
    model = CTALForSequenceClassification(config)
    Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[]))  # sets use_cache
    model.save_pretrained(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    written = {"architectures", "transformers_version", "dtype", "model_type", "id2label", "label2id", "use_cache"}
    assert written <= set(saved)
    loaded = AutoConfig.from_pretrained(tmp_path / "model")
    # `PreTrainedConfig.__post_init__` drops `use_cache` on loading, as every generation parameter.
    expected = {key: value for key, value in config.to_diff_dict().items() if key != "use_cache"}
    assert loaded.to_diff_dict() == expected and loaded.num_labels == 3

    # The full dict (not the diff) and keys older or other transformers code writes.
    full = config.to_dict()
    assert {"_name_or_path", "output_attentions", "return_dict"} <= set(full)
    full.update({"torch_dtype": "float32", "_commit_hash": None, "_attn_implementation_autoset": True,
                 "auto_map": {"AutoConfig": "configuration_ctal.CTALConfig"}})
    full.pop("dtype")
    reloaded = CTALConfig.from_pretrained(write_config(tmp_path / "full", full))
    assert reloaded.dtype == torch.float32 and reloaded.id2label == config.id2label
    assert reloaded.problem_type == "single_label_classification" and reloaded.hidden_size == 32


def test_earlier_per_stack_config_files_load_when_the_stacks_are_equal(tmp_path):
    folder = write_config(tmp_path / "legacy", legacy_config())
    config = AutoConfig.from_pretrained(folder)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        32, 1, 4, 64
    )
    assert config.audio_causal_self_attention is True
    model = AutoModel.from_config(config)
    assert len(model.text_encoder.layer) == len(model.audio_encoder.layer) == 1
    config.save_pretrained(tmp_path / "resaved")
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert resaved["hidden_size"] == 32 and not any(key.startswith("text_") for key in resaved)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"audio_num_hidden_layers": 2}, r"different sizes \(text_num_hidden_layers=1, audio_num_hidden_layers=2\)"),
        ({"audio_layer_norm_eps": 1e-5}, "one `layer_norm_eps` for both stacks"),
        ({"num_hidden_layers": 3}, r"`num_hidden_layers=3` contradicts text_num_hidden_layers=1"),
    ],
)
def test_earlier_config_files_with_different_stacks_fail_clearly(tmp_path, changes, message):
    folder = write_config(tmp_path / "legacy", legacy_config(**changes))
    with pytest.raises(ValueError, match=message):
        AutoConfig.from_pretrained(folder)


def test_one_stack_key_alone_fails_clearly():
    values = legacy_config()
    del values["audio_hidden_act"], values["model_type"]
    with pytest.raises(ValueError, match="text_hidden_act='gelu' sets one stack only.*pass `hidden_act`"):
        CTALConfig(**values)
