"""Convert a checkpoint of the authors' original CTAL code (`states-*.ckpt`) into a `save_pretrained` folder.

The original pre-training script (`m2p_runner.py` of github.com/Ydkwim/CTAL) saves with `torch.save`:

    {"semantic_model": RobertaForMaskedLM.state_dict(),   # text stream + MLM head
     "acoustic_model": RobertaForMaskedAM.state_dict(),   # text-referred audio stream + MCAM head
     "Optimizer": optimizer.state_dict(), "Global_step": int,
     "Settings": {"Config": <the training yaml as a dict>, "Paras": argparse.Namespace}}

The result is a folder that `CTALForPreTraining.from_pretrained` / `AutoModel.from_pretrained` load: `config.json` built
from the checkpoint's own `Settings.Config`, `model.safetensors` with every weight mapped (see `weight_mapping`), the
processor (tokenizer from the original `vocab.json` + `merges.txt`, feature extractor with the original recipe) and a
model card.

Loading never executes code from the checkpoint: the optimizer state pickles classes of the original code and the
settings an `argparse.Namespace`, so a file that `torch.load(weights_only=True)` refuses is read by a restricted
unpickler that admits exactly what `weights_only=True` admits (tensors, containers, primitives) and turns every other
pickled global into an inert `OriginalObjectPlaceholder` without importing or calling it.

Usage:
    ctal-convert-original states-1000000.ckpt ctal-base --tokenizer_dir tokenizer/libri-roberta_train-960 --verify

Over 500 lines on purpose: as transformers' `convert_*_original_*` scripts, one file describes the whole original format
(safe loading, config mapping, the complete weight table, verification), which only the converter uses.
"""

from __future__ import annotations

import argparse
import functools
import logging
import pickle
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError

# torch's public weights_only machinery (`torch.serialization.safe_globals`, `get_unsafe_globals_in_checkpoint`) cannot
# keep this module's guarantee, so only the allowlist itself is taken from the private module: the weights_only
# unpickler refuses globals of `os`, `posix`, `nt` and `sys` even when allowlisted (a pickled `os.system` call must
# become an inert placeholder, not an error that stops the conversion), only fills dict/list objects by SETITEMS /
# APPENDS (not placeholders of pickled dict/list subclasses), and `get_unsafe_globals_in_checkpoint` reads zip-format
# files only (the original code's checkpoints may be in the legacy format).
from torch._weights_only_unpickler import _get_allowed_globals
from transformers import AutoModelForPreTraining, AutoProcessor
from transformers.utils import logging as hf_logging

from ...output_dir import OutputDirNotEmptyError, check_output_dir, staged_output_dir
from ...training.hub import HubUnreachableError, check_hub_reachable, push_checkpoint_to_hub
from ...training.model_card import write_model_card
from .configuration_ctal import CTAL_PRESETS, SHARED_STACK_FIELDS, CTALConfig
from .modeling_ctal import CTALForPreTraining
from .processing_ctal import processor_for_config
from .tokenization_ctal import load_tokenizer


logger = hf_logging.get_logger(__name__)

TEXT = "semantic_model."
AUDIO = "acoustic_model."

# transformers 4.5 `RobertaConfig` defaults: what the original code used for every key its yaml leaves out (the
# released yamls omit e.g. `max_position_embeddings` and `layer_norm_eps` for the text stream).
ROBERTA_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "position_embedding_type": "absolute",
}

# Sub-modules of one original RoBERTa layer -> ours. The audio layers add the cross-attention block.
LAYER_MODULES = {
    "attention.self.query": "attention.self.query",
    "attention.self.key": "attention.self.key",
    "attention.self.value": "attention.self.value",
    "attention.output.dense": "attention.output.dense",
    "attention.output.LayerNorm": "attention.output.LayerNorm",
    "intermediate.dense": "feed_forward.intermediate",
    "output.dense": "feed_forward.output.dense",
    "output.LayerNorm": "feed_forward.output.LayerNorm",
}
CROSS_ATTENTION_MODULES = {
    f"crossattention.{name}": f"crossattention.{name}"
    for name in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm")
}
HEAD_MODULES = {"dense": "transform.dense", "layer_norm": "transform.layer_norm"}

# Original keys that carry no information of their own. The position-id buffers are `arange` tables the model
# recomputes; the heads' `decoder.bias` is the same Parameter as the head's `bias` (`self.decoder.bias = self.bias`),
# so it is checked for equality instead of being mapped.
IGNORED_KEYS = (f"{TEXT}roberta.embeddings.position_ids", f"{AUDIO}acoustic.embeddings.position_ids")
ALIASED_KEYS = {
    f"{TEXT}lm_head.decoder.bias": f"{TEXT}lm_head.bias",
    f"{AUDIO}am_head.decoder.bias": f"{AUDIO}am_head.bias",
}
WORD_EMBEDDINGS = f"{TEXT}roberta.embeddings.word_embeddings.weight"
MLM_DECODER = f"{TEXT}lm_head.decoder.weight"


class OriginalCheckpointError(ValueError):
    """The file is not a convertible original CTAL checkpoint; the message names the offending key."""


# ---------------------------------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------------------------------


class OriginalObjectPlaceholder:
    """Inert stand-in for a pickled object whose class the conversion does not need (the optimizer's schedule
    objects, the `argparse.Namespace` of the settings, anything else). It records what the pickle supplied (`args`,
    `kwargs`, `state`, `items`, `list_items`) and never imports, instantiates or calls the original global."""

    pickled_global = "?"

    def __new__(cls, *args, **kwargs):
        placeholder = super().__new__(cls)
        placeholder.args, placeholder.kwargs = args, kwargs
        placeholder.state, placeholder.items, placeholder.list_items = None, {}, []
        return placeholder

    def __init__(self, *args, **kwargs):
        # The arguments were recorded by `__new__`; a REDUCE of an unknown callable lands here and must do nothing.
        pass

    def __setstate__(self, state):
        self.state = state

    # Pickles of dict / list subclasses fill the object through these (SETITEMS / APPENDS opcodes).
    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.list_items.append(value)

    def extend(self, values):
        self.list_items.extend(values)

    def __repr__(self) -> str:
        return f"<OriginalObjectPlaceholder for {self.pickled_global}>"


def _restricted_pickle_module(stubbed: set[str]) -> SimpleNamespace:
    """A `pickle_module` for `torch.load` whose unpickler resolves only the globals `weights_only=True` allows and
    replaces every other global by a fresh `OriginalObjectPlaceholder` subclass (names collected in `stubbed`).
    torch subclasses our `Unpickler` and adds its own `persistent_load` for the tensor storages, so the zip format and
    the legacy format both load their tensors normally."""
    allowed = _get_allowed_globals()
    placeholders: dict[str, type[OriginalObjectPlaceholder]] = {}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            qualified = f"{module}.{name}"
            if qualified in allowed:
                return allowed[qualified]
            stubbed.add(qualified)
            if qualified not in placeholders:
                placeholders[qualified] = type(
                    "OriginalObjectPlaceholder", (OriginalObjectPlaceholder,), {"pickled_global": qualified}
                )
            return placeholders[qualified]

    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()

    return SimpleNamespace(__name__="ctal_hf.restricted_pickle", Unpickler=RestrictedUnpickler, load=load)


# The first bytes of torch's legacy (pre-1.6, non-zip) format: its magic number pickled with protocol 2.
LEGACY_TORCH_HEADER = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]


def _why_unreadable(path: Path) -> str:
    """What a file that `torch.load` cannot read looks like, in words, from its size and first bytes."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with path.open("rb") as handle:
        head = handle.read(len(LEGACY_TORCH_HEADER))
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return f"a truncated or damaged zip archive ({size} bytes) in torch.save's format; copy it again"
        return "a zip archive that is not a complete torch.save checkpoint (damaged, or written by another tool)"
    if head == LEGACY_TORCH_HEADER:
        return f"a truncated or damaged checkpoint ({size} bytes) in torch's legacy format; copy it again"
    if head[:1] == b"\x80":  # the PROTO opcode that starts every pickle of protocol 2 or later
        return "a plain pickle, not a torch.save checkpoint; load it with pickle and save it with torch.save"
    return "not a torch.save checkpoint (neither torch's zip format nor its legacy format)"


def load_original_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an original checkpoint without executing code from it. Tries `torch.load(weights_only=True)` first; a file
    with other pickled objects (a full training checkpoint) is read with the restricted unpickler, and each unknown
    global becomes an `OriginalObjectPlaceholder`. Returns the unpickled dict.

    Raises:
        FileNotFoundError: no file at `path`.
        OriginalCheckpointError: the file cannot be read as a torch.save checkpoint (empty, truncated, a plain
            pickle, other bytes; the message says which), or it does not hold a dict.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a folder; pass the original checkpoint file in it (e.g. states-*.ckpt).")
    if not path.is_file():
        raise FileNotFoundError(f"No original CTAL checkpoint at {path}.")
    try:
        try:
            with warnings.catch_warnings():
                # A plain pickle (rejected below with its own message) makes torch warn about its protocol first.
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            stubbed: set[str] = set()
            checkpoint = torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module(stubbed)
            )
            logger.info(
                "%s holds pickled objects besides tensors; read with a restricted unpickler that left these as inert "
                "placeholders (never imported or called): %s",
                path,
                ", ".join(sorted(stubbed)),
            )
    # Unpickling arbitrary bytes can fail with almost any exception type (EOFError, KeyError, UnicodeDecodeError,
    # RuntimeError from the zip reader, ...); torch's own messages suggest `weights_only=False`, which is unsafe here.
    except Exception:
        raise OriginalCheckpointError(f"Cannot read {path}: {_why_unreadable(path)}.") from None
    if not isinstance(checkpoint, Mapping):
        raise OriginalCheckpointError(f"{path} holds a {type(checkpoint).__name__}, not the original checkpoint dict.")
    return dict(checkpoint)


def original_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The two state dicts of an original checkpoint in one namespace: `semantic_model.<key>` and
    `acoustic_model.<key>`, so that every error can name the exact original key."""
    flat: dict[str, torch.Tensor] = {}
    for prefix in (TEXT, AUDIO):
        part = checkpoint.get(prefix[:-1])
        if not isinstance(part, Mapping):
            raise OriginalCheckpointError(
                f"The checkpoint has no {prefix[:-1]!r} state dict (top-level keys: {sorted(map(str, checkpoint))})."
            )
        for key, value in part.items():
            if not isinstance(value, torch.Tensor):
                raise OriginalCheckpointError(f"{prefix}{key} is a {type(value).__name__}, not a tensor.")
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------------


def original_settings(checkpoint: Mapping[str, Any], original_config: str | Path | Mapping | None = None) -> dict:
    """The original training config (`Settings.Config` of the checkpoint), or `original_config` (the training yaml's
    path, or its content as a dict) when given, e.g. for a checkpoint stripped of its settings."""
    if original_config is not None:
        if isinstance(original_config, Mapping):
            return dict(original_config)
        import yaml

        with open(original_config, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    settings = checkpoint.get("Settings")
    config = settings.get("Config") if isinstance(settings, Mapping) else None
    if not isinstance(config, Mapping):
        raise OriginalCheckpointError(
            "The checkpoint has no 'Settings' -> 'Config' dict; pass the yaml it was trained with "
            "(`--original_config config/m2pretrain_*.yaml`)."
        )
    return dict(config)


def _stack_settings(settings: Mapping, stack: str) -> dict[str, Any]:
    section = settings.get(stack)
    if not isinstance(section, Mapping):
        raise OriginalCheckpointError(f"The original config has no {stack!r} section (keys: {sorted(settings)}).")
    return {**ROBERTA_DEFAULTS, **section}


def config_from_original(
    settings: Mapping, *, audio_causal_self_attention: bool = True, tie_word_embeddings: bool = True
) -> CTALConfig:
    """`CTALConfig` equivalent to the original training config's `semantic` (text) and `acoustic` (audio) sections.
    The two sections must agree on every size field (`SHARED_STACK_FIELDS`), as in the authors' released configs:
    CTAL has one set of sizes for both stacks.

    Text positions lose RoBERTa's padding offset (`max_position_embeddings - pad_token_id - 1` positions remain,
    510 for the released 512-row table); audio positions are kept. `audio_causal_self_attention=True` reproduces the
    released code, whose audio stack was a RoBERTa decoder and therefore causal."""
    text, audio = _stack_settings(settings, "semantic"), _stack_settings(settings, "acoustic")
    for stack, section in (("semantic", text), ("acoustic", audio)):
        if section["position_embedding_type"] != "absolute":
            raise OriginalCheckpointError(
                f"{stack}.position_embedding_type={section['position_embedding_type']!r}: CTAL has only 'absolute' "
                "position embeddings."
            )
    for key in ("audio_size", "downsample_rate"):
        if key not in audio:
            raise OriginalCheckpointError(f"The original config has no acoustic.{key}.")
    if audio["downsample_rate"] != 1:
        raise OriginalCheckpointError(
            f"acoustic.downsample_rate={audio['downsample_rate']}: frame stacking is not part of CTAL (the released "
            "configs use 1)."
        )
    if text["hidden_act"] != "gelu":
        # RobertaLMHead applies erf-GELU whatever hidden_act says; our MLM head uses the text activation.
        raise OriginalCheckpointError(
            f"semantic.hidden_act={text['hidden_act']!r}: the original MLM head always uses GELU, so only 'gelu' "
            "converts exactly."
        )
    differing = [field for field in SHARED_STACK_FIELDS if text[field] != audio[field]]
    if differing:
        settings_text = ", ".join(
            f"semantic.{field}={text[field]!r} but acoustic.{field}={audio[field]!r}" for field in differing
        )
        raise OriginalCheckpointError(
            f"The original config gives the two stacks different sizes ({settings_text}; a key the yaml leaves out "
            "is RoBERTa's default). CTAL has one set of sizes for the text and audio stacks, as the authors' released "
            "configs do, so this checkpoint cannot be converted."
        )
    position_offset = text["pad_token_id"] + 1
    return CTALConfig(
        vocab_size=text["vocab_size"],
        **{field: text[field] for field in SHARED_STACK_FIELDS},
        max_position_embeddings=text["max_position_embeddings"] - position_offset,
        audio_feature_size=audio["audio_size"],
        max_audio_frames=audio["max_position_embeddings"],
        audio_causal_self_attention=audio_causal_self_attention,
        initializer_range=text["initializer_range"],
        pad_token_id=text["pad_token_id"],
        bos_token_id=text["bos_token_id"],
        eos_token_id=text["eos_token_id"],
        tie_word_embeddings=tie_word_embeddings,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------------


def fold_text_positions(position_table: torch.Tensor, token_type_table: torch.Tensor, *, offset: int) -> torch.Tensor:
    """RoBERTa gives the first real token position `padding_idx + 1`, so row `offset + j` is our position `j`; the
    token-type row 0 (always used) is added here because `word + pos + tt0 = word + (pos + tt0)`."""
    return position_table[offset:] + token_type_table[0]


def fold_audio_positions(position_table: torch.Tensor, token_type_table: torch.Tensor) -> torch.Tensor:
    """Audio positions start at 0 in the original too; only the token-type row 0 is folded in."""
    return position_table + token_type_table[0]


@dataclass(frozen=True)
class WeightMapping:
    """One tensor of `CTALForPreTraining` and how it is computed from original tensors (a copy when `transform` is
    None)."""

    target: str
    sources: tuple[str, ...]
    transform: Callable[..., torch.Tensor] | None = None

    def apply(self, original: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tensors = [original[source] for source in self.sources]
        if self.transform is None:
            return tensors[0]
        try:
            return self.transform(*tensors)
        except (RuntimeError, IndexError) as error:
            shapes = ", ".join(f"{source} {tuple(original[source].shape)}" for source in self.sources)
            raise OriginalCheckpointError(f"Cannot build {self.target} from {shapes}: {error}") from None


def _linear(target: str, source: str) -> list[WeightMapping]:
    return [WeightMapping(f"{target}.{p}", (f"{source}.{p}",)) for p in ("weight", "bias")]


def _layers(target: str, source: str, count: int, modules: Mapping[str, str]) -> list[WeightMapping]:
    """`count` layers whose sub-modules are `modules` (original name -> ours)."""
    return [
        mapping
        for i in range(count)
        for theirs, ours in modules.items()
        for mapping in _linear(f"{target}.{i}.{ours}", f"{source}.{i}.{theirs}")
    ]


def weight_mapping(config: CTALConfig) -> list[WeightMapping]:
    """The complete table from original keys (`semantic_model.*`, `acoustic_model.*`) to the parameters of
    `CTALForPreTraining` for `config`. Conversion and the tests both use it."""
    text_emb, audio_emb = f"{TEXT}roberta.embeddings", f"{AUDIO}acoustic.embeddings"
    mappings = [
        WeightMapping("ctal.text_embeddings.word_embeddings.weight", (WORD_EMBEDDINGS,)),
        WeightMapping(
            "ctal.text_embeddings.position_embeddings.weight",
            (f"{text_emb}.position_embeddings.weight", f"{text_emb}.token_type_embeddings.weight"),
            functools.partial(fold_text_positions, offset=config.pad_token_id + 1),
        ),
        *_linear("ctal.text_embeddings.LayerNorm", f"{text_emb}.LayerNorm"),
        *_layers("ctal.text_encoder.layer", f"{TEXT}roberta.encoder.layer", config.num_hidden_layers, LAYER_MODULES),
        *_linear("ctal.audio_embeddings.projection", f"{audio_emb}.dense"),
        WeightMapping(
            "ctal.audio_embeddings.position_embeddings.weight",
            (f"{audio_emb}.position_embeddings.weight", f"{audio_emb}.token_type_embeddings.weight"),
            fold_audio_positions,
        ),
        *_linear("ctal.audio_embeddings.LayerNorm", f"{audio_emb}.LayerNorm"),
        *_layers(
            "ctal.audio_encoder.layer",
            f"{AUDIO}acoustic.encoder.layer",
            config.num_hidden_layers,
            {**LAYER_MODULES, **CROSS_ATTENTION_MODULES},
        ),
    ]
    for head, source in (("mlm_head", f"{TEXT}lm_head"), ("mcam_head", f"{AUDIO}am_head")):
        for theirs, ours in HEAD_MODULES.items():
            mappings += _linear(f"{head}.{ours}", f"{source}.{theirs}")
        mappings += [
            WeightMapping(f"{head}.decoder.weight", (f"{source}.decoder.weight",)),
            WeightMapping(f"{head}.bias", (f"{source}.bias",)),
        ]
    return mappings


def mlm_decoder_is_tied(original: Mapping[str, torch.Tensor]) -> bool:
    """RoBERTa ties `lm_head.decoder.weight` to the word embeddings; a checkpoint where they differ needs an untied
    `CTALConfig(tie_word_embeddings=False)` to convert exactly."""
    for key in (WORD_EMBEDDINGS, MLM_DECODER):
        if key not in original:
            raise OriginalCheckpointError(f"Missing original key {key}.")
    decoder, embeddings = original[MLM_DECODER], original[WORD_EMBEDDINGS]
    return decoder.shape == embeddings.shape and torch.equal(decoder, embeddings)


def convert_state_dict(
    original: Mapping[str, torch.Tensor], config: CTALConfig, expected_shapes: Mapping[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Map an original (flattened) state dict to our parameter names. Every original key must be used, ignored or an
    exact alias, and every target must get a tensor of the expected shape; otherwise `OriginalCheckpointError` names
    the keys."""
    mappings = weight_mapping(config)
    used = {source for mapping in mappings for source in mapping.sources}
    missing = sorted(used - original.keys())
    if missing:
        raise OriginalCheckpointError(f"Missing original key(s): {', '.join(missing)}.")
    unexpected = sorted(original.keys() - used - set(IGNORED_KEYS) - set(ALIASED_KEYS))
    if unexpected:
        raise OriginalCheckpointError(
            f"Unexpected original key(s) (not part of the CTAL architecture of this config): {', '.join(unexpected)}."
        )
    for alias, key in ALIASED_KEYS.items():
        if alias in original and not torch.equal(original[alias], original[key]):
            raise OriginalCheckpointError(f"{alias} differs from {key}; in the original code they are one Parameter.")
    targets = {mapping.target for mapping in mappings}
    if targets != set(expected_shapes):
        # A mismatch here means this table and the model disagree: a bug of this module, not of the checkpoint.
        raise RuntimeError(f"Mapping/model mismatch: {sorted(targets ^ set(expected_shapes))}.")

    converted = {}
    for mapping in mappings:
        tensor = mapping.apply(original)
        expected = expected_shapes[mapping.target]
        if tensor.shape != expected:
            raise OriginalCheckpointError(
                f"{' + '.join(mapping.sources)} gives shape {tuple(tensor.shape)} for {mapping.target}, which needs "
                f"{tuple(expected)} under the checkpoint's settings."
            )
        converted[mapping.target] = tensor.contiguous()
    return converted


# ---------------------------------------------------------------------------------------------------------------------
# Whole conversion
# ---------------------------------------------------------------------------------------------------------------------


def matching_preset(config: CTALConfig) -> str | None:
    """The paper size (`"ctal-base"` / `"ctal-large"`) with this architecture, if any."""
    for name, preset in CTAL_PRESETS.items():
        if all(getattr(config, key) == value for key, value in preset.items()):
            return name
    return None


def convert_original_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    tokenizer_dir: str | Path,
    *,
    original_config: str | Path | Mapping | None = None,
    audio_causal_self_attention: bool = True,
    model_name: str | None = None,
    verify: bool = False,
    push_to_hub: str | None = None,
    private: bool | None = None,
    overwrite: bool = False,
) -> CTALForPreTraining:
    """Convert `checkpoint_path` (original format) into `output_dir`: `config.json`, `model.safetensors`, the processor
    (tokenizer from `tokenizer_dir`: the original `vocab.json` + `merges.txt`, or a saved CTAL tokenizer) and
    `README.md`. With `verify`, the saved folder is reloaded and run on a dummy batch (`verify_converted_model`).
    With `push_to_hub` (a repository id), the Hub is checked before any work and the complete folder is uploaded
    (`private` as in `HfApi.create_repo`). Returns the converted model.

    A non-empty `output_dir` is refused (`OutputDirNotEmptyError`) before any work unless `overwrite`, which replaces
    it as a whole. The folder is written (and verified) next to `output_dir` first and renamed into place at the end,
    so a failure or Ctrl-C leaves `output_dir` as it was."""
    check_output_dir(
        output_dir, overwrite=overwrite, option="output_dir", overwrite_option="--overwrite",
        inputs=[("the checkpoint", checkpoint_path), ("--tokenizer_dir", tokenizer_dir),
                ("--original_config", original_config if isinstance(original_config, (str, Path)) else None),
                ("the working directory", Path.cwd())],
    )
    if push_to_hub:
        check_hub_reachable()  # now, not after a conversion that can take minutes
    logger.info("Reading %s", checkpoint_path)
    checkpoint = load_original_checkpoint(checkpoint_path)
    original = original_state_dict(checkpoint)
    tied = mlm_decoder_is_tied(original)
    if not tied:
        logger.warning(
            "%s differs from %s (RoBERTa ties them): converting with tie_word_embeddings=False so that the MLM head "
            "keeps its own decoder; MLM logits then match the original exactly.",
            MLM_DECODER,
            WORD_EMBEDDINGS,
        )
    config = config_from_original(
        original_settings(checkpoint, original_config),
        audio_causal_self_attention=audio_causal_self_attention,
        tie_word_embeddings=tied,
    )
    processor = processor_for_config(load_tokenizer(tokenizer_dir), config)

    model = CTALForPreTraining(config)
    state = convert_state_dict(original, config, {key: value.shape for key, value in model.state_dict().items()})
    model.load_state_dict(state, strict=True)
    model.eval()
    logger.info("Mapped %d original tensors onto %d parameters; writing %s", len(original), len(state), output_dir)

    output_dir = Path(output_dir)
    preset = matching_preset(config)
    model_name = model_name or preset or output_dir.name
    step = checkpoint.get("Global_step", "?")
    with staged_output_dir(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        write_model_card(
            staging,
            config,
            model_name=model_name,
            repo_id=str(output_dir),  # the snippets load the final folder
            weights="converted",
            source=f"`{Path(checkpoint_path).name}` (original CTAL format, global step {step})",
            # The paper's numbers belong on the card only when these are weights of one of its two sizes.
            paper_results=preset if model_name == preset else None,
        )
        shapes = verify_converted_model(staging, reference=model) if verify else None
    print_summary(model, checkpoint, output_dir)
    if shapes is not None:
        print(f"Verified {output_dir}: " + ", ".join(f"{name} {shape}" for name, shape in shapes.items()))
    if push_to_hub:
        try:
            push_checkpoint_to_hub(output_dir, push_to_hub, private=private)
        except HubUnreachableError as error:
            raise HubUnreachableError(f"{error} The converted folder {output_dir} is complete.") from error
    return model


def print_summary(model: CTALForPreTraining, checkpoint: Mapping[str, Any], output_dir: Path) -> None:
    """Print the parameter counts and the architecture of the converted model."""
    config = model.config
    counts = {
        "text stack": sum(p.numel() for n, p in model.named_parameters() if n.startswith("ctal.text_")),
        "audio stack": sum(p.numel() for n, p in model.named_parameters() if n.startswith("ctal.audio_")),
        "MLM + MCAM heads (untied part)": sum(
            p.numel() for n, p in model.named_parameters() if n.startswith(("mlm_head.", "mcam_head."))
        ),
    }
    lines = [
        f"Converted original CTAL checkpoint (global step {checkpoint.get('Global_step', '?')}) -> {output_dir}",
        f"  parameters: {sum(p.numel() for p in model.parameters()):,} "
        + "(" + ", ".join(f"{name} {count:,}" for name, count in counts.items()) + ")",
        f"  each stack: N={config.num_hidden_layers} A={config.num_attention_heads} H={config.hidden_size} "
        f"FFN={config.intermediate_size}",
        f"  text: vocab={config.vocab_size} positions={config.max_position_embeddings}; "
        f"audio: features={config.audio_feature_size} frames={config.max_audio_frames}",
        f"  audio_causal_self_attention={config.audio_causal_self_attention} "
        f"tie_word_embeddings={config.tie_word_embeddings} preset={matching_preset(config)}",
    ]
    print("\n".join(lines))


class VerificationError(RuntimeError):
    """The converted folder does not reload or run as it should."""


def verify_converted_model(output_dir: str | Path, reference: CTALForPreTraining | None = None) -> dict[str, tuple]:
    """Reload `output_dir` with the Auto classes, run a padded dummy batch (two sine tones of different lengths with
    two transcripts) through the processor and `CTALForPreTraining`, and check that no weight was left out on loading,
    that the outputs have the right shapes and are finite, and (given `reference`, the in-memory converted model) that
    the saved model computes the same. Returns the output shapes; raises `VerificationError` on failure."""
    model, info = AutoModelForPreTraining.from_pretrained(output_dir, output_loading_info=True)
    problems = {kind: keys for kind, keys in info.items() if keys and kind != "error_msgs"}
    if problems:
        raise VerificationError(f"Reloading the saved folder left weights out: {problems}")
    processor = AutoProcessor.from_pretrained(output_dir)
    model.eval()

    rate = processor.feature_extractor.sampling_rate
    seconds = torch.arange(rate // 2, dtype=torch.float64) / rate
    tones = ((220.0, rate // 2), (330.0, rate // 4))  # (Hz, samples): 0.5 s and 0.25 s, so both streams are padded
    waveforms = [torch.sin(2 * torch.pi * hz * seconds[:length]).numpy() for hz, length in tones]
    batch = processor(audio=waveforms, text=["hello world", "a"], sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**batch)
        expected = reference.eval()(**batch) if reference is not None else None

    config = model.config
    batch_size, length = batch["input_ids"].shape
    frames = batch["audio_features"].shape[1]
    shapes = {
        "text_last_hidden_state": (batch_size, length, config.hidden_size),
        "audio_last_hidden_state": (batch_size, frames, config.hidden_size),
        "mlm_logits": (batch_size, length, config.vocab_size),
        "mcam_predictions": (batch_size, frames, config.audio_feature_size),
    }
    for name, shape in shapes.items():
        value = outputs[name]
        if tuple(value.shape) != shape:
            raise VerificationError(f"{name} has shape {tuple(value.shape)}, expected {shape}.")
        if not torch.isfinite(value).all():
            raise VerificationError(f"{name} has non-finite values.")
        if expected is not None and not torch.allclose(value, expected[name], atol=1e-5, rtol=1e-5):
            raise VerificationError(f"{name} of the saved model differs from the converted model's.")
    return shapes


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ctal-convert-original",
        description="Convert an original CTAL checkpoint (states-*.ckpt of github.com/Ydkwim/CTAL) into a folder that "
        "CTALForPreTraining / AutoModel.from_pretrained load. No code from the checkpoint is executed.",
    )
    parser.add_argument(
        "checkpoint_path", metavar="checkpoint", help="the original checkpoint file (torch.save dict with "
        "semantic_model, ...)"
    )  # fmt: skip
    parser.add_argument(
        "output_dir", help="folder to write (e.g. ctal-base, so that from_pretrained('ctal-base') finds it)"
    )
    parser.add_argument(
        "--tokenizer_dir",
        required=True,
        help="folder with the original vocab.json + merges.txt (tokenizer/libri-roberta_train-960), or a saved "
        "CTAL tokenizer",
    )
    parser.add_argument(
        "--original_config",
        help="the training yaml (config/m2pretrain_*.yaml), for checkpoints without Settings or to override them",
    )
    parser.add_argument(
        "--audio_causal_self_attention",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="causal audio self-attention as in the released code (default); --no-audio_causal_self_attention gives "
        "the paper's bidirectional attention, which the released weights were not trained with",
    )
    parser.add_argument("--model_name", help="name used in the model card (default: the matching paper preset)")
    parser.add_argument("--verify", action="store_true", help="reload the folder and run it on a dummy batch")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace output_dir (and everything in it) if it is not empty"
    )
    parser.add_argument(
        "--push_to_hub",
        metavar="REPO_ID",
        help="upload the folder to this Hub repository; the Hub is checked first, so nothing is converted without it",
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    args = parser.parse_args(argv)
    args.private = args.private or None  # unset: the Hub's default visibility
    return args


def main(argv: list[str] | None = None) -> None:
    """`ctal-convert-original`: `convert_original_checkpoint` from the command line, ending on errors with their text."""
    args = _parse_arguments(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        convert_original_checkpoint(**vars(args))
    except (OriginalCheckpointError, VerificationError, FileNotFoundError, ValueError, StrictDataclassError,
            HubUnreachableError, OutputDirNotEmptyError, NotADirectoryError) as error:
        sys.exit(f"ctal-convert-original: {error}")


if __name__ == "__main__":
    main()
