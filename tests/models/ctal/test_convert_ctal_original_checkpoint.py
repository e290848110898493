"""The converter from the authors' checkpoint format (docs: original-ctal-code.md, "Released checkpoint format").

A tiny checkpoint is built here exactly as the original `m2p_runner.save_model` lays it out, with random weights,
non-trivial LayerNorms/biases and non-zero token-type rows. The converted model must match a reference implementation
of the ORIGINAL architecture written below directly from its documented equations (RoBERTa positions from the ids with
padding_idx 1, token-type row 0 added, post-LN, causal audio self-attention, erf-GELU, the two heads), on a padded
batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import re
import shlex
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining, AutoProcessor, RobertaConfig, RobertaForMaskedLM

import ctal_hf
from ctal_hf import CTALModel, CTALProcessor, train_ctal_tokenizer
from ctal_hf.models.ctal.convert_ctal_original_checkpoint import (
    OriginalCheckpointError,
    OriginalObjectPlaceholder,
    config_from_original,
    convert_original_checkpoint,
    convert_state_dict,
    load_original_checkpoint,
    main,
    original_settings,
    original_state_dict,
    weight_mapping,
)


HIDDEN, HEADS, FFN, LAYERS = 16, 2, 24, 2
TEXT_POSITIONS, AUDIO_POSITIONS, FEATURES = 22, 40, 160
PAD = 1
# Not RoBERTa's 1e-12, so that the test sees the value come from the checkpoint's settings.
EPS = 1e-5


# ------------------------------------------------------------------------------------------------ original checkpoint


def write_original_tokenizer(folder: Path) -> int:
    """A small byte-level BPE written as the original `vocab.json` + `merges.txt`; returns its size."""
    texts = ["hello world this is a test", "the quick brown fox jumps over the lazy dog"] * 3
    tokenizer = train_ctal_tokenizer(texts, vocab_size=300, min_frequency=1)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    merges = ["#version: 0.2"] + [" ".join(merge) for merge in model["merges"]]
    (folder / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    return len(model["vocab"])


def original_settings_dict(vocab_size: int) -> dict:
    """`Settings.Config` as the original yaml (m2pretrain_*.yaml) gives it, with a layer_norm_eps in both sections."""
    common = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": FFN,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "layer_norm_eps": EPS,
        "mask_proportion": 0.15,
    }
    return {
        "acoustic": {
            **common,
            "audio_size": FEATURES,
            "max_position_embeddings": AUDIO_POSITIONS,
            "downsample_rate": 1,
            "mask_consecutive_min": 20,
            "is_decoder": True,
            "add_cross_attention": True,
        },
        "semantic": {**common, "vocab_size": vocab_size, "max_position_embeddings": TEXT_POSITIONS},
        "optimizer": {"type": "adam", "learning_rate": "5e-5", "warmup_proportion": 0.07},
        "runner": {"total_steps": 1000000, "save_step": 10000},
    }


def _linear(generator, out_features, in_features):
    return {
        "weight": torch.randn(out_features, in_features, generator=generator) / math.sqrt(in_features),
        "bias": 0.1 * torch.randn(out_features, generator=generator),
    }


def _layer_norm(generator, size):
    return {
        "weight": 1 + 0.2 * torch.randn(size, generator=generator),
        "bias": 0.1 * torch.randn(size, generator=generator),
    }


def _add(state, prefix, params):
    for name, tensor in params.items():
        state[f"{prefix}.{name}"] = tensor


def _roberta_layer(state, prefix, generator, cross_attention):
    blocks = ["attention"] + (["crossattention"] if cross_attention else [])
    for block in blocks:
        for name in ("query", "key", "value"):
            _add(state, f"{prefix}.{block}.self.{name}", _linear(generator, HIDDEN, HIDDEN))
        _add(state, f"{prefix}.{block}.output.dense", _linear(generator, HIDDEN, HIDDEN))
        _add(state, f"{prefix}.{block}.output.LayerNorm", _layer_norm(generator, HIDDEN))
    _add(state, f"{prefix}.intermediate.dense", _linear(generator, FFN, HIDDEN))
    _add(state, f"{prefix}.output.dense", _linear(generator, HIDDEN, FFN))
    _add(state, f"{prefix}.output.LayerNorm", _layer_norm(generator, HIDDEN))


def original_state_dicts(vocab_size: int, seed: int = 0) -> tuple[OrderedDict, OrderedDict]:
    """`RobertaForMaskedLM.state_dict()` and `RobertaForMaskedAM.state_dict()` of the original code (transformers 4.5
    layout: persistent `position_ids` buffers, `lm_head.decoder.weight` tied to the word embeddings and
    `decoder.bias` being the head's `bias`)."""
    generator = torch.Generator().manual_seed(seed)
    text = OrderedDict()
    word = torch.randn(vocab_size, HIDDEN, generator=generator)
    text["roberta.embeddings.position_ids"] = torch.arange(TEXT_POSITIONS).expand(1, -1)
    text["roberta.embeddings.word_embeddings.weight"] = word
    text["roberta.embeddings.position_embeddings.weight"] = torch.randn(TEXT_POSITIONS, HIDDEN, generator=generator)
    text["roberta.embeddings.token_type_embeddings.weight"] = torch.randn(2, HIDDEN, generator=generator)
    _add(text, "roberta.embeddings.LayerNorm", _layer_norm(generator, HIDDEN))
    for i in range(LAYERS):
        _roberta_layer(text, f"roberta.encoder.layer.{i}", generator, cross_attention=False)
    lm_bias = 0.1 * torch.randn(vocab_size, generator=generator)
    text["lm_head.bias"] = lm_bias
    _add(text, "lm_head.dense", _linear(generator, HIDDEN, HIDDEN))
    _add(text, "lm_head.layer_norm", _layer_norm(generator, HIDDEN))
    text["lm_head.decoder.weight"] = word
    text["lm_head.decoder.bias"] = lm_bias

    audio = OrderedDict()
    audio["acoustic.embeddings.position_ids"] = torch.arange(AUDIO_POSITIONS).expand(1, -1)
    audio["acoustic.embeddings.position_embeddings.weight"] = torch.randn(AUDIO_POSITIONS, HIDDEN, generator=generator)
    audio["acoustic.embeddings.token_type_embeddings.weight"] = torch.randn(2, HIDDEN, generator=generator)
    _add(audio, "acoustic.embeddings.dense", _linear(generator, HIDDEN, FEATURES))
    _add(audio, "acoustic.embeddings.LayerNorm", _layer_norm(generator, HIDDEN))
    for i in range(LAYERS):
        _roberta_layer(audio, f"acoustic.encoder.layer.{i}", generator, cross_attention=True)
    am_bias = 0.1 * torch.randn(FEATURES, generator=generator)
    audio["am_head.bias"] = am_bias
    _add(audio, "am_head.dense", _linear(generator, HIDDEN, HIDDEN))
    _add(audio, "am_head.layer_norm", _layer_norm(generator, HIDDEN))
    audio["am_head.decoder.weight"] = torch.randn(FEATURES, HIDDEN, generator=generator) / math.sqrt(HIDDEN)
    audio["am_head.decoder.bias"] = am_bias
    return text, audio


class WarmupLinearSchedule:
    """Stands for the original `m2p_optimization.WarmupLinearSchedule` pickled in the optimizer state."""

    def __init__(self, warmup, t_total):
        self.warmup, self.t_total = warmup, t_total


def save_original_checkpoint(path: Path, vocab_size: int, extra=None, text=None, audio=None, **save_kwargs) -> None:
    """`torch.save` a full original checkpoint. The schedule class is pickled under the original module name
    `m2p_optimization`, which exists only while saving, so it cannot be imported at load time."""
    if text is None:
        text, audio = original_state_dicts(vocab_size)
    fake_module = types.ModuleType("m2p_optimization")
    fake_module.WarmupLinearSchedule = WarmupLinearSchedule
    checkpoint = {
        "semantic_model": text,
        "acoustic_model": audio,
        "Optimizer": {
            "state": {0: {"next_m": torch.zeros(3), "next_v": torch.ones(3)}},
            "param_groups": [{"lr": 5e-5, "schedule": WarmupLinearSchedule(0.07, 1000000), "params": [0]}],
        },
        "Global_step": 1234,
        "Settings": {
            "Config": original_settings_dict(vocab_size),
            "Paras": argparse.Namespace(config="m2pretrain_tiny.yaml", name="tiny", multi_gpu=False, resume=None),
        },
        **(extra or {}),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WarmupLinearSchedule, "__module__", "m2p_optimization")
        patch.setitem(sys.modules, "m2p_optimization", fake_module)
        torch.save(checkpoint, path, **save_kwargs)
    assert "m2p_optimization" not in sys.modules


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """Paths of a full original checkpoint and the original tokenizer folder, plus the original state dicts."""
    folder = tmp_path_factory.mktemp("original")
    vocab_size = write_original_tokenizer(folder / "tokenizer")
    save_original_checkpoint(folder / "states-1234.ckpt", vocab_size)
    text, audio = original_state_dicts(vocab_size)
    return types.SimpleNamespace(
        checkpoint=folder / "states-1234.ckpt",
        tokenizer=folder / "tokenizer",
        vocab_size=vocab_size,
        text=text,
        audio=audio,
    )


@pytest.fixture(scope="module")
def converted(original, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("converted") / "ctal-tiny"
    model = convert_original_checkpoint(original.checkpoint, output_dir, original.tokenizer, verify=True)
    return types.SimpleNamespace(model=model, output_dir=output_dir)


# ------------------------------------------------------------------------------------------------ reference equations


def _dense(x, state, prefix):
    return x @ state[f"{prefix}.weight"].T + state[f"{prefix}.bias"]


def _norm(x, state, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], state[f"{prefix}.weight"], state[f"{prefix}.bias"], eps)


def _attention_block(x, kv, state, prefix, additive_mask, eps):
    """RoBERTa attention block: multi-head scaled dot-product attention, output dense, add & LayerNorm (post-LN)."""
    batch, head_dim = x.shape[0], HIDDEN // HEADS

    def heads(t):
        return t.view(batch, -1, HEADS, head_dim).transpose(1, 2)

    query = heads(_dense(x, state, f"{prefix}.self.query"))
    key, value = (heads(_dense(kv, state, f"{prefix}.self.{name}")) for name in ("key", "value"))
    scores = query @ key.transpose(-1, -2) / math.sqrt(head_dim) + additive_mask
    context = (scores.softmax(-1) @ value).transpose(1, 2).reshape(batch, -1, HIDDEN)
    return _norm(_dense(context, state, f"{prefix}.output.dense") + x, state, f"{prefix}.output.LayerNorm", eps)


def _feed_forward(x, state, prefix, eps):
    hidden = F.gelu(_dense(x, state, f"{prefix}.intermediate.dense"))  # erf GELU
    return _norm(_dense(hidden, state, f"{prefix}.output.dense") + x, state, f"{prefix}.output.LayerNorm", eps)


def _head(x, state, prefix, eps):
    hidden = _norm(F.gelu(_dense(x, state, f"{prefix}.dense")), state, f"{prefix}.layer_norm", eps)
    return hidden @ state[f"{prefix}.decoder.weight"].T + state[f"{prefix}.bias"]


def reference_forward(text_state, audio_state, input_ids, attention_mask, features, audio_mask):
    """The original RobertaM2Model forward (eval mode) on its own state dicts."""
    # Text stream: RobertaForMaskedLM. Positions from the ids: padding_idx + cumulative count of real tokens.
    real = input_ids.ne(PAD).long()
    positions = torch.cumsum(real, dim=1) * real + PAD
    emb = "roberta.embeddings"
    x = (
        text_state[f"{emb}.word_embeddings.weight"][input_ids]
        + text_state[f"{emb}.position_embeddings.weight"][positions]
        + text_state[f"{emb}.token_type_embeddings.weight"][0]
    )
    x = _norm(x, text_state, f"{emb}.LayerNorm", EPS)
    text_mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
    for i in range(LAYERS):
        prefix = f"roberta.encoder.layer.{i}"
        x = _attention_block(x, x, text_state, f"{prefix}.attention", text_mask, EPS)
        x = _feed_forward(x, text_state, prefix, EPS)
    text = x
    mlm_logits = _head(text, text_state, "lm_head", EPS)

    # Audio stream: RobertaForMaskedAM with is_decoder=True (causal self-attention) and cross-attention to the text.
    frames = features.shape[1]
    emb = "acoustic.embeddings"
    a = (
        _dense(features, audio_state, f"{emb}.dense")
        + audio_state[f"{emb}.token_type_embeddings.weight"][0]
        + audio_state[f"{emb}.position_embeddings.weight"][:frames]
    )
    a = _norm(a, audio_state, f"{emb}.LayerNorm", EPS)
    causal = torch.tril(torch.ones(frames, frames))
    self_mask = (1.0 - causal[None, None] * audio_mask[:, None, None, :].float()) * -10000.0
    for i in range(LAYERS):
        prefix = f"acoustic.encoder.layer.{i}"
        a = _attention_block(a, a, audio_state, f"{prefix}.attention", self_mask, EPS)
        a = _attention_block(a, text, audio_state, f"{prefix}.crossattention", text_mask, EPS)
        a = _feed_forward(a, audio_state, prefix, EPS)
    return text, mlm_logits, a, _head(a, audio_state, "am_head", EPS)


def padded_batch(vocab_size: int):
    generator = torch.Generator().manual_seed(1)
    lengths, frames = [7, 4], [12, 7]
    input_ids = torch.full((2, max(lengths)), PAD)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.cat(
            [torch.tensor([0]), torch.randint(5, vocab_size, (length - 2,), generator=generator), torch.tensor([2])]
        )
    attention_mask = (input_ids != PAD).long()
    audio_mask = (torch.arange(max(frames))[None] < torch.tensor(frames)[:, None]).long()
    features = torch.randn(2, max(frames), FEATURES, generator=generator) * audio_mask[..., None]
    return input_ids, attention_mask, features, audio_mask


# ------------------------------------------------------------------------------------------------ tests


def test_converted_model_matches_original_equations(original, converted):
    input_ids, attention_mask, features, audio_mask = padded_batch(original.vocab_size)
    with torch.no_grad():
        outputs = converted.model(
            input_ids=input_ids, attention_mask=attention_mask, audio_features=features, audio_attention_mask=audio_mask
        )
        text, mlm_logits, audio, mcam = reference_forward(
            original.text, original.audio, input_ids, attention_mask, features, audio_mask
        )
    valid_tokens, valid_frames = attention_mask.bool(), audio_mask.bool()
    # Padded positions differ by design (RoBERTa gives pads position 1, we give them their index); they are masked.
    torch.testing.assert_close(outputs.text_last_hidden_state[valid_tokens], text[valid_tokens], atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs.mlm_logits[valid_tokens], mlm_logits[valid_tokens], atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs.audio_last_hidden_state[valid_frames], audio[valid_frames], atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs.mcam_predictions[valid_frames], mcam[valid_frames], atol=1e-5, rtol=0)


def test_reference_text_stream_agrees_with_transformers_roberta(original):
    """Cross-check of the reference's RoBERTa conventions (positions, token type, head) against transformers' own
    RobertaForMaskedLM, which still reads the original text keys."""
    input_ids, attention_mask, features, audio_mask = padded_batch(original.vocab_size)
    config = RobertaConfig(
        vocab_size=original.vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=TEXT_POSITIONS, layer_norm_eps=EPS,
    )
    roberta = RobertaForMaskedLM(config).eval()
    state = {k: v for k, v in original.text.items() if k != "roberta.embeddings.position_ids"}
    missing, unexpected = roberta.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"roberta.embeddings.token_type_ids"}
    with torch.no_grad():
        hf = roberta(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        text, mlm_logits, _, _ = reference_forward(
            original.text, original.audio, input_ids, attention_mask, features, audio_mask
        )
    valid = attention_mask.bool()
    torch.testing.assert_close(hf.hidden_states[-1][valid], text[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(hf.logits[valid], mlm_logits[valid], atol=1e-5, rtol=0)


def test_every_original_tensor_lands_on_its_counterpart(original, converted):
    flat = original_state_dict({"semantic_model": original.text, "acoustic_model": original.audio})
    state = converted.model.state_dict()
    mappings = weight_mapping(converted.model.config)
    assert {m.target for m in mappings} == set(state)
    for mapping in mappings:
        torch.testing.assert_close(state[mapping.target], mapping.apply(flat), atol=0, rtol=0, msg=mapping.target)
    # The two folded tables, spelled out: our position j is RoBERTa's row j + 2 plus the token-type row 0.
    text_emb, audio_emb = "semantic_model.roberta.embeddings", "acoustic_model.acoustic.embeddings"
    torch.testing.assert_close(
        state["ctal.text_embeddings.position_embeddings.weight"],
        flat[f"{text_emb}.position_embeddings.weight"][2:] + flat[f"{text_emb}.token_type_embeddings.weight"][0],
    )
    torch.testing.assert_close(
        state["ctal.audio_embeddings.position_embeddings.weight"],
        flat[f"{audio_emb}.position_embeddings.weight"] + flat[f"{audio_emb}.token_type_embeddings.weight"][0],
    )
    word_embeddings = state["ctal.text_embeddings.word_embeddings.weight"]
    assert state["mlm_head.decoder.weight"].data_ptr() == word_embeddings.data_ptr()


def test_config_comes_from_the_checkpoint_settings(converted, original):
    config = converted.model.config
    assert config.vocab_size == original.vocab_size
    assert config.max_position_embeddings == TEXT_POSITIONS - 2 and config.max_audio_frames == AUDIO_POSITIONS
    assert config.layer_norm_eps == EPS
    assert (config.num_hidden_layers, config.num_attention_heads, config.hidden_size) == (LAYERS, HEADS, HIDDEN)
    assert config.audio_causal_self_attention is True and config.tie_word_embeddings is True


def test_released_large_yaml_maps_to_a_config():
    """The released `m2pretrain_large.yaml` sections (no text max_position_embeddings / layer_norm_eps): RoBERTa
    defaults fill them, giving 510 text positions."""
    settings = {
        "acoustic": {"audio_size": 160, "max_position_embeddings": 3000, "downsample_rate": 1, "hidden_size": 768,
                     "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "is_decoder": True},
        "semantic": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                     "vocab_size": 30000},
    }
    config = config_from_original(settings)
    assert (config.vocab_size, config.max_position_embeddings, config.max_audio_frames) == (30000, 510, 3000)
    assert config.layer_norm_eps == 1e-12 and config.num_hidden_layers == 12
    assert config_from_original(settings, audio_causal_self_attention=False).audio_causal_self_attention is False
    with pytest.raises(OriginalCheckpointError, match="downsample_rate"):
        config_from_original({**settings, "acoustic": {**settings["acoustic"], "downsample_rate": 3}})


def test_stacks_with_different_sizes_are_refused(tmp_path, original):
    """CTAL has one set of sizes for both stacks; the released yamls agree, a checkpoint whose do not is refused."""
    settings = original_settings_dict(original.vocab_size)
    settings["acoustic"] = {**settings["acoustic"], "num_hidden_layers": LAYERS + 1}
    uneven = r"semantic\.num_hidden_layers=2 but acoustic\.num_hidden_layers=3"
    with pytest.raises(OriginalCheckpointError, match=uneven):
        config_from_original(settings)
    # A key the yaml leaves out is RoBERTa's default for that stack.
    settings = original_settings_dict(original.vocab_size)
    del settings["semantic"]["layer_norm_eps"]
    uneven = r"semantic\.layer_norm_eps=1e-12 but acoustic\.layer_norm_eps=1e-05"
    with pytest.raises(OriginalCheckpointError, match=uneven):
        config_from_original(settings)
    yaml_path = tmp_path / "m2pretrain_uneven.yaml"
    yaml_path.write_text(yaml.safe_dump(settings))
    with pytest.raises(SystemExit, match="one set of sizes for the text and audio stacks"):
        main([str(original.checkpoint), str(tmp_path / "out"), "--tokenizer_dir", str(original.tokenizer),
              "--original_config", str(yaml_path)])
    assert not (tmp_path / "out").exists()


def test_saved_folder_loads_with_auto_classes_from_its_name(converted, monkeypatch):
    monkeypatch.chdir(converted.output_dir.parent)
    name = converted.output_dir.name
    model, info = AutoModel.from_pretrained(name, output_loading_info=True)
    assert isinstance(model, CTALModel) and not info["missing_keys"]
    assert isinstance(AutoProcessor.from_pretrained(name), CTALProcessor)
    pretraining = AutoModelForPreTraining.from_pretrained(name)
    for key, value in converted.model.state_dict().items():
        torch.testing.assert_close(pretraining.state_dict()[key], value, atol=0, rtol=0, msg=key)
    processor = AutoProcessor.from_pretrained(name)
    assert processor.tokenizer.model_max_length == TEXT_POSITIONS - 2
    assert processor.feature_extractor.max_frames == AUDIO_POSITIONS
    card = (converted.output_dir / "README.md").read_text()
    assert "states-1234.ckpt" in card and "global step 1234" in card and "model-index" not in card


def test_the_tokenizer_is_the_original_vocabulary(converted, original):
    vocab = json.loads((original.tokenizer / "vocab.json").read_text())
    tokenizer = AutoProcessor.from_pretrained(converted.output_dir).tokenizer
    ids = tokenizer("The quick, brown fox!")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert ids[0] == 0 and ids[-1] == 2 and [vocab[t] for t in tokens[1:-1]] == ids[1:-1]


def test_full_checkpoint_loads_without_running_pickled_code(tmp_path, original):
    """Unknown classes become placeholders; a pickle that calls os.system is neutralised (marker never written)."""
    marker = tmp_path / "pwned"

    class Trap:
        def __reduce__(self):
            return os.system, (f"touch {shlex.quote(str(marker))}",)

    torch.save({"Trap": Trap()}, tmp_path / "trap.pt")
    torch.load(tmp_path / "trap.pt", weights_only=False)  # the trap is armed: plain unpickling runs the command
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "evil.ckpt"
    save_original_checkpoint(path, original.vocab_size, extra={"Trap": Trap()})

    checkpoint = load_original_checkpoint(path)
    assert not marker.exists()
    assert isinstance(checkpoint["Trap"], OriginalObjectPlaceholder)
    assert checkpoint["Trap"].pickled_global.endswith(".system")
    schedule = checkpoint["Optimizer"]["param_groups"][0]["schedule"]
    assert schedule.pickled_global == "m2p_optimization.WarmupLinearSchedule"
    assert schedule.state == {"warmup": 0.07, "t_total": 1000000}
    assert checkpoint["Settings"]["Paras"].pickled_global == "argparse.Namespace"
    assert checkpoint["Global_step"] == 1234 and isinstance(checkpoint["semantic_model"]["lm_head.bias"], torch.Tensor)

    convert_original_checkpoint(path, tmp_path / "out", original.tokenizer)
    assert not marker.exists() and (tmp_path / "out" / "model.safetensors").is_file()


def test_stripped_and_legacy_checkpoints(tmp_path, original, caplog):
    """A file with only tensors and plain settings loads with weights_only=True; a full checkpoint in the pre-zip
    (legacy) format goes through the restricted unpickler too."""
    caplog.set_level(logging.INFO, logger="ctal_hf.models.ctal.convert_ctal_original_checkpoint")
    settings = {"Config": original_settings_dict(original.vocab_size)}
    stripped = {"semantic_model": original.text, "acoustic_model": original.audio, "Settings": settings}
    torch.save(stripped, tmp_path / "stripped.ckpt")
    checkpoint = load_original_checkpoint(tmp_path / "stripped.ckpt")
    assert "restricted unpickler" not in caplog.text
    torch.testing.assert_close(checkpoint["acoustic_model"]["am_head.bias"], original.audio["am_head.bias"])

    save_original_checkpoint(tmp_path / "legacy.ckpt", original.vocab_size, _use_new_zipfile_serialization=False)
    checkpoint = load_original_checkpoint(tmp_path / "legacy.ckpt")
    assert "restricted unpickler" in caplog.text and "m2p_optimization.WarmupLinearSchedule" in caplog.text
    assert checkpoint["Settings"]["Paras"].state["name"] == "tiny"
    torch.testing.assert_close(checkpoint["semantic_model"]["lm_head.bias"], original.text["lm_head.bias"])

    # Without Settings the yaml must be given.
    del stripped["Settings"]
    torch.save(stripped, tmp_path / "bare.ckpt")
    with pytest.raises(OriginalCheckpointError, match="original_config"):
        original_settings(load_original_checkpoint(tmp_path / "bare.ckpt"))
    yaml_path = tmp_path / "m2pretrain_tiny.yaml"
    yaml_path.write_text(yaml.safe_dump(original_settings_dict(original.vocab_size)))
    model = convert_original_checkpoint(
        tmp_path / "bare.ckpt", tmp_path / "bare", original.tokenizer, original_config=yaml_path
    )
    assert model.config.layer_norm_eps == EPS


def _convert(flat, vocab_size):
    config = config_from_original(original_settings_dict(vocab_size))
    shapes = {key: value.shape for key, value in ctal_hf.CTALForPreTraining(config).state_dict().items()}
    return convert_state_dict(flat, config, shapes)


@pytest.mark.parametrize(
    "edit, key",
    [
        ("missing", "semantic_model.roberta.encoder.layer.1.attention.self.key.bias"),
        ("missing", "acoustic_model.acoustic.embeddings.token_type_embeddings.weight"),
        ("unexpected", "acoustic_model.acoustic.pooler.dense.weight"),
        ("shape", "acoustic_model.acoustic.encoder.layer.0.crossattention.self.value.weight"),
        ("shape", "semantic_model.roberta.embeddings.position_embeddings.weight"),
        ("alias", "acoustic_model.am_head.decoder.bias"),
        ("not_a_tensor", "semantic_model.lm_head.dense.bias"),
    ],
)
def test_bad_keys_are_errors_naming_the_key(original, edit, key):
    text, audio = dict(original.text), dict(original.audio)
    stream, name = key.split(".", 1)
    part = text if stream == "semantic_model" else audio
    if edit == "missing":
        del part[name]
    elif edit == "unexpected":
        part[name] = torch.zeros(HIDDEN, HIDDEN)
    elif edit == "shape":
        part[name] = torch.zeros(part[name].shape[0] + 1, part[name].shape[1])
    elif edit == "alias":
        part[name] = part[name] + 1
    else:
        part[name] = [0.0] * HIDDEN
    with pytest.raises(OriginalCheckpointError, match=key.replace(".", r"\.")):
        _convert(original_state_dict({"semantic_model": text, "acoustic_model": audio}), original.vocab_size)


def test_cli_reports_a_bad_checkpoint_by_key(tmp_path, original):
    text, audio = original_state_dicts(original.vocab_size)
    del audio["am_head.layer_norm.weight"]
    save_original_checkpoint(tmp_path / "bad.ckpt", original.vocab_size, text=text, audio=audio)
    with pytest.raises(SystemExit, match=r"acoustic_model\.am_head\.layer_norm\.weight"):
        main([str(tmp_path / "bad.ckpt"), str(tmp_path / "out"), "--tokenizer_dir", str(original.tokenizer)])
    assert not (tmp_path / "out").exists()


def unreadable_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a file torch cannot read as a checkpoint, the expected reason)."""
    torch.save({"semantic_model": {"w": torch.zeros(64)}}, folder / "whole.ckpt")
    whole = (folder / "whole.ckpt").read_bytes()
    (folder / "truncated.ckpt").write_bytes(whole[: len(whole) // 2])
    torch.save({"w": torch.zeros(64)}, folder / "legacy.ckpt", _use_new_zipfile_serialization=False)
    legacy = (folder / "legacy.ckpt").read_bytes()
    (folder / "truncated_legacy.ckpt").write_bytes(legacy[:40])
    (folder / "empty.ckpt").write_bytes(b"")
    (folder / "random.ckpt").write_bytes(bytes(range(256)) * 8)
    (folder / "plain.pkl").write_bytes(pickle.dumps({"semantic_model": {"w": [0.0]}}))
    return {
        "truncated": (folder / "truncated.ckpt", r"a truncated or damaged zip archive \(\d+ bytes\)"),
        "truncated_legacy": (folder / "truncated_legacy.ckpt", "a truncated or damaged checkpoint .* legacy format"),
        "empty": (folder / "empty.ckpt", r"the file is empty \(0 bytes\)"),
        "random": (folder / "random.ckpt", "not a torch.save checkpoint"),
        "plain_pickle": (folder / "plain.pkl", "a plain pickle, not a torch.save checkpoint"),
    }


@pytest.mark.parametrize("kind", ["truncated", "truncated_legacy", "empty", "random", "plain_pickle"])
def test_unreadable_checkpoints_are_one_line_naming_the_file(tmp_path, kind):
    path, reason = unreadable_files(tmp_path)[kind]
    with pytest.raises(OriginalCheckpointError, match=f"^Cannot read {re.escape(str(path))}: {reason}") as error:
        load_original_checkpoint(path)
    assert error.value.__suppress_context__ and "weights_only" not in str(error.value)
    with pytest.raises(SystemExit, match=f"^ctal-convert-original: Cannot read .*{path.name}: {reason}"):
        main([str(path), str(tmp_path / "out"), "--tokenizer_dir", str(tmp_path)])
    assert not (tmp_path / "out").exists()


def test_cli_on_a_plain_pickle_prints_one_line(tmp_path):
    path, _ = unreadable_files(tmp_path)["plain_pickle"]
    command = [sys.executable, "-m", "ctal_hf.models.ctal.convert_ctal_original_checkpoint", str(path),
               str(tmp_path / "out"), "--tokenizer_dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "default"})
    errors = [line for line in result.stderr.splitlines() if not line.startswith("INFO ")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert errors[0].startswith(f"ctal-convert-original: Cannot read {path}: a plain pickle")
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr


def test_a_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a folder; pass the original checkpoint file in it"):
        load_original_checkpoint(tmp_path)


def test_untied_mlm_decoder_converts_exactly_with_a_warning(tmp_path, original, caplog):
    text, audio = original_state_dicts(original.vocab_size)
    text["lm_head.decoder.weight"] = text["lm_head.decoder.weight"] + 0.5
    save_original_checkpoint(tmp_path / "untied.ckpt", original.vocab_size, text=text, audio=audio)
    model = convert_original_checkpoint(tmp_path / "untied.ckpt", tmp_path / "untied", original.tokenizer)
    assert model.config.tie_word_embeddings is False
    assert "lm_head.decoder.weight differs" in caplog.text and "tie_word_embeddings=False" in caplog.text
    input_ids, attention_mask, features, audio_mask = padded_batch(original.vocab_size)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path / "untied").eval()
    with torch.no_grad():
        logits = reloaded(input_ids=input_ids, attention_mask=attention_mask).mlm_logits
        _, expected, _, _ = reference_forward(text, audio, input_ids, attention_mask, features, audio_mask)
    valid = attention_mask.bool()
    torch.testing.assert_close(logits[valid], expected[valid], atol=1e-5, rtol=0)


def test_cli_converts_verifies_and_can_be_bidirectional(tmp_path, original, capsys):
    main([str(original.checkpoint), str(tmp_path / "ctal-large"), "--tokenizer_dir", str(original.tokenizer),
          "--verify", "--no-audio_causal_self_attention"])
    summary = capsys.readouterr().out
    assert "parameters:" in summary and "audio_causal_self_attention=False" in summary
    assert json.loads((tmp_path / "ctal-large" / "config.json").read_text())["audio_causal_self_attention"] is False


def test_help_describes_the_cli(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    for option in ("--tokenizer_dir", "--verify", "--no-audio_causal_self_attention", "--original_config"):
        assert option in help_text


def test_cli_push_offline_fails_before_converting(tmp_path, original, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    output_dir = tmp_path / "ctal-tiny"
    with pytest.raises(SystemExit, match="Cannot push to the Hub: offline mode is enabled"):
        main([str(original.checkpoint), str(output_dir), "--tokenizer_dir", str(original.tokenizer)]
             + ["--push_to_hub", "my-org/x"])
    assert not output_dir.exists()


def test_cli_checks_the_hub_before_converting_and_pushes_the_complete_folder(tmp_path, original, monkeypatch):
    output_dir = tmp_path / "ctal-tiny"
    calls = []

    def check_hub_reachable():
        calls.append(("check", output_dir.exists()))

    def push_checkpoint_to_hub(folder, repo_id, private):
        calls.append(("push", (Path(folder) / "README.md").is_file(), repo_id, private))

    monkeypatch.setattr("ctal_hf.models.ctal.convert_ctal_original_checkpoint.check_hub_reachable", check_hub_reachable)
    monkeypatch.setattr("ctal_hf.models.ctal.convert_ctal_original_checkpoint.push_checkpoint_to_hub", push_checkpoint_to_hub)
    main([str(original.checkpoint), str(output_dir), "--tokenizer_dir", str(original.tokenizer)]
         + ["--push_to_hub", "my-org/x", "--private"])
    assert calls == [("check", False), ("push", True, "my-org/x", True)]


def test_cli_refuses_a_non_empty_output_dir_before_converting(tmp_path, original, capsys, folder_digest):
    output_dir = tmp_path / "ctal-tiny"
    main([str(original.checkpoint), str(output_dir), "--tokenizer_dir", str(original.tokenizer)])
    before = folder_digest(output_dir)
    with pytest.raises(SystemExit) as exit_info:
        main([str(original.checkpoint), str(output_dir), "--tokenizer_dir", str(original.tokenizer)])
    message = str(exit_info.value)
    assert message.startswith(f"ctal-convert-original: output_dir {output_dir} is not empty: it holds saved model files")
    assert "config.json" in message and "model.safetensors" in message and "pass --overwrite" in message
    assert folder_digest(output_dir) == before
    # --overwrite replaces the folder as a whole.
    (output_dir / "notes.txt").write_text("stale")
    main([str(original.checkpoint), str(output_dir), "--tokenizer_dir", str(original.tokenizer), "--overwrite",
          "--no-audio_causal_self_attention"])
    assert json.loads((output_dir / "config.json").read_text())["audio_causal_self_attention"] is False
    assert not (output_dir / "notes.txt").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ctal-tiny"]  # no temporary folder left


def test_overwrite_may_not_delete_the_inputs(tmp_path, original, folder_digest):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    checkpoint = output_dir / "states-1234.ckpt"
    checkpoint.write_bytes(original.checkpoint.read_bytes())
    before = folder_digest(output_dir)
    with pytest.raises(SystemExit, match=r"--overwrite would delete or replace .*states-1234.ckpt \(the checkpoint\)"):
        main([str(checkpoint), str(output_dir), "--tokenizer_dir", str(original.tokenizer), "--overwrite"])
    assert folder_digest(output_dir) == before


def test_an_interrupted_conversion_leaves_the_output_dir_as_it_was(tmp_path, original, monkeypatch, folder_digest):
    output_dir = tmp_path / "ctal-tiny"
    convert_original_checkpoint(original.checkpoint, output_dir, original.tokenizer)
    before = folder_digest(output_dir)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C after the weights were written

    monkeypatch.setattr("ctal_hf.models.ctal.convert_ctal_original_checkpoint.write_model_card", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_original_checkpoint(original.checkpoint, output_dir, original.tokenizer, overwrite=True)
    assert folder_digest(output_dir) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ctal-tiny"]
