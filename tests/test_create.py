"""`python -m ctal_hf.create`: a preset with random weights and a processor, loadable by name from the working dir."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModel, AutoModelForPreTraining, AutoProcessor

from ctal_hf import CTALModel, CTALProcessor, train_ctal_tokenizer
from ctal_hf.create import create_checkpoint, main, parse_overrides
from ctal_hf.models.ctal.configuration_ctal import CTALConfig
from ctal_hf.models.ctal.processing_ctal import processor_for_config
from ctal_hf.models.ctal.tokenization_ctal import load_tokenizer


SMALL = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    texts = ["hello world this is a test", "the lazy dog"] * 3
    tokenizer = train_ctal_tokenizer(texts, vocab_size=300, min_frequency=1)
    tokenizer.save_pretrained(folder)
    return folder


def test_created_preset_loads_by_name_from_the_working_directory(tmp_path, monkeypatch, tokenizer_dir):
    monkeypatch.chdir(tmp_path)
    folder = create_checkpoint("ctal-large", tokenizer_dir, **SMALL)
    assert folder.name == "ctal-large" and (tmp_path / "ctal-large" / "model.safetensors").is_file()

    model, info = AutoModel.from_pretrained("ctal-large", output_loading_info=True)
    assert isinstance(model, CTALModel) and not info["missing_keys"]
    assert model.config.num_hidden_layers == 1 and model.config.audio_causal_self_attention is False
    processor = AutoProcessor.from_pretrained("ctal-large")
    assert isinstance(processor, CTALProcessor)
    assert type(AutoModelForPreTraining.from_pretrained("ctal-large")).__name__ == "CTALForPreTraining"

    inputs = processor(audio=[[0.1, -0.1] * 4000], text=["hello world"], sampling_rate=16000, return_tensors="pt")
    outputs = model(**inputs)
    assert outputs.audio_last_hidden_state.shape[:2] == inputs["audio_features"].shape[:2]
    assert "randomly initialised, not pre-trained" in (tmp_path / "ctal-large" / "README.md").read_text()


def test_cli_with_overrides_and_output_dir(tmp_path, tokenizer_dir, caplog):
    main(
        ["ctal-base", "--tokenizer_dir", str(tokenizer_dir), "--output_dir", str(tmp_path / "out")]
        + [arg for key, value in SMALL.items() for arg in ("--override", f"{key}={value}")]
        + ["--override", "audio_causal_self_attention=true"]
    )
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["audio_causal_self_attention"] is True
    assert "RANDOMLY INITIALISED" in caplog.text
    # The card's snippets load the folder that was written, not the preset's name.
    card = (tmp_path / "out" / "README.md").read_text()
    assert f'AutoModel.from_pretrained("{tmp_path / "out"}")' in card and '"ctal-base"' not in card


def test_cli_rejects_unknown_overrides(tmp_path, tokenizer_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ctal-base", "--tokenizer-dir", str(tokenizer_dir), "--output-dir", str(tmp_path / "out"),
              "--override", "hiden_size=64"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "['hiden_size']" in err and "did you mean `hidden_size`" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="hiden_size"):
        create_checkpoint("ctal-base", tokenizer_dir, tmp_path / "api", hiden_size=64)


def test_cli_help_states_random_weights(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out


def test_parse_overrides():
    assert parse_overrides(["hidden_size=32", "hidden_act=gelu", " audio_causal_self_attention = false"]) == {
        "hidden_size": 32,
        "hidden_act": "gelu",
        "audio_causal_self_attention": False,
    }
    assert parse_overrides([]) == {}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["hidden_size"])
    with pytest.raises(ValueError, match=r"\['hiden_size', 'num_layers'\]"):
        parse_overrides(["num_layers=2", "hiden_size=64", "vocab_size=100"])


def test_tokenizer_folder_checks(tmp_path, tokenizer_dir):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match=r"only 100 word embeddings \(`vocab_size`\): use the tokenizer saved with "
                       r"the model, or build the model with vocab_size=\d+"):
        processor_for_config(load_tokenizer(tokenizer_dir), CTALConfig(vocab_size=100, **SMALL))
    with pytest.raises(ValueError, match="mask_token_id is 4 but the model's is 7: use the tokenizer saved with"):
        processor_for_config(load_tokenizer(tokenizer_dir), CTALConfig(mask_token_id=7, **SMALL))
    config = CTALConfig(max_position_embeddings=64, max_audio_frames=100, **SMALL)
    processor = processor_for_config(load_tokenizer(tokenizer_dir), config)
    assert processor.tokenizer.model_max_length == 64 and processor.feature_extractor.max_frames == 100


@pytest.mark.slow
def test_full_size_preset(tmp_path, monkeypatch, tokenizer_dir):
    monkeypatch.chdir(tmp_path)
    create_checkpoint("ctal-large", tokenizer_dir)
    model = AutoModel.from_pretrained("ctal-large")
    assert model.num_parameters() > 120_000_000 and model.config.num_hidden_layers == 6


def test_in_memory_the_preset_is_one_from_config_call(tmp_path, tokenizer_dir):
    """README: `AutoModel.from_config(CTALConfig.from_preset(...))` is the model `create` writes, minus the files."""
    folder = create_checkpoint("ctal-base", tokenizer_dir, tmp_path / "ctal-base", **SMALL)
    in_memory = AutoModel.from_config(CTALConfig.from_preset("ctal-base", **SMALL))
    saved = AutoModel.from_pretrained(folder)
    saved_config = {k: v for k, v in saved.config.to_diff_dict().items() if k not in ("architectures", "dtype")}
    assert type(in_memory) is type(saved) and in_memory.config.to_diff_dict() == saved_config
    shapes = [{key: value.shape for key, value in model.state_dict().items()} for model in (in_memory, saved)]
    assert shapes[0] == shapes[1]


def test_a_non_empty_output_dir_is_refused_unless_overwrite(tmp_path, tokenizer_dir, monkeypatch, folder_digest):
    out = tmp_path / "ctal-base"
    create_checkpoint("ctal-base", tokenizer_dir, out, **SMALL)
    before = folder_digest(out)
    cli = ["ctal-base", "--tokenizer_dir", str(tokenizer_dir), "--output_dir", str(out)] + [
        arg for key, value in SMALL.items() for arg in ("--override", f"{key}={value}")
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(cli)
    message = str(exit_info.value)
    assert f"--output_dir {out} is not empty: it holds saved model files (README.md, config.json" in message
    assert "pass --overwrite to replace them" in message
    assert folder_digest(out) == before

    # An interrupted write leaves the folder as it was, even with --overwrite.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr("ctal_hf.create.write_model_card", interrupted)
        with pytest.raises(KeyboardInterrupt):
            main(cli + ["--overwrite", "--seed", "1"])
    assert folder_digest(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ctal-base"]

    main(cli + ["--overwrite", "--seed", "1"])
    assert folder_digest(out)["model.safetensors"] != before["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctal-base"]
