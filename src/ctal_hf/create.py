"""Materialise a CTAL preset as a loadable folder: config, randomly initialised weights, processor and model card.

    python -m ctal_hf.create ctal-large --tokenizer_dir tokenizer/libri-roberta_train-960

writes `./ctal-large/`, so that (with `import ctal_hf`) `AutoModel.from_pretrained("ctal-large")` and
`AutoProcessor.from_pretrained("ctal-large")` work from that working directory. **The weights are random**: the folder
is the architecture, config and processor in `from_pretrained` form (for tests, pipelines, or as the starting point of
`examples/run_pretraining.py`), not a pre-trained model. Pre-trained weights come from the converter
(`ctal-convert-original`), from pre-training, or from the Hub (`<org>/ctal-large`).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from .models.ctal.configuration_ctal import CTAL_PRESETS, SPECIAL_TOKEN_NAMES, CTALConfig, check_config_keys
from .models.ctal.feature_extraction_ctal import CTALFeatureExtractor
from .models.ctal.modeling_ctal import CTALForPreTraining
from .models.ctal.processing_ctal import CTALProcessor
from .models.ctal.tokenization_ctal import CTALTokenizer
from .training.model_card import write_model_card


logger = hf_logging.get_logger(__name__)

def load_tokenizer(tokenizer_dir: str | Path) -> CTALTokenizer:
    """A `CTALTokenizer` from a folder holding the original `vocab.json` + `merges.txt`, or a saved CTAL tokenizer
    (or processor) folder."""
    folder = Path(tokenizer_dir)
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        return CTALTokenizer.from_pretrained(folder)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return CTALTokenizer.from_original_files(folder)
    raise FileNotFoundError(
        f"{folder} holds neither a saved tokenizer (tokenizer.json) nor the original vocab.json + merges.txt "
        "(folder tokenizer/libri-roberta_train-960 of the original code)."
    )


def build_processor(tokenizer_dir: str | Path, config: CTALConfig) -> CTALProcessor:
    """The processor of a model with `config`, with the tokenizer of `tokenizer_dir` (see `processor_for_config`)."""
    return processor_for_config(load_tokenizer(tokenizer_dir), config)


def processor_for_config(tokenizer: CTALTokenizer, config: CTALConfig) -> CTALProcessor:
    """The processor of a model with `config`: `tokenizer` (checked against the config's vocabulary and special ids)
    and the feature extractor with the original recipe, both truncating to the model's positions."""
    # The processor truncates to this; a converted checkpoint has 510 text positions, not the tokenizer's 512.
    tokenizer.model_max_length = config.max_position_embeddings
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model only {config.vocab_size} "
            "word embeddings (`vocab_size`)."
        )
    # The config's special ids must agree with the tokenizer's.
    for name in SPECIAL_TOKEN_NAMES:
        if getattr(tokenizer, name) != getattr(config, name):
            raise ValueError(
                f"The tokenizer's {name} is {getattr(tokenizer, name)} but the model's is {getattr(config, name)}."
            )
    feature_extractor = CTALFeatureExtractor(max_frames=config.max_audio_frames)
    if feature_extractor.feature_size != config.audio_feature_size:
        raise ValueError(
            f"The feature extractor produces {feature_extractor.feature_size}-dimensional frames but the model expects "
            f"{config.audio_feature_size} (`audio_feature_size`)."
        )
    return CTALProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Config overrides from `key=value` items, each value read as JSON when possible (`3`, `0.1`, `true`), else as a
    string. Raises a `ValueError` for an item without `=` and one naming each key that is not a `CTALConfig` key,
    with the closest valid key (`check_config_keys`)."""
    overrides = {}
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise ValueError(f"Overrides are key=value, got {item!r}.")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    check_config_keys(overrides)
    return overrides


def create_checkpoint(
    preset: str,
    tokenizer_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    seed: int = 0,
    **overrides,
) -> Path:
    """Write `preset` (`"ctal-base"` / `"ctal-large"`, config fields overridable) with random weights
    (`CTALForPreTraining`, seeded), the processor built from `tokenizer_dir` and a model card into `output_dir`
    (default: `./<preset>`). Returns the folder."""
    config = CTALConfig.from_preset(preset, **overrides)
    processor = build_processor(tokenizer_dir, config)
    output_dir = Path(output_dir or preset)
    torch.manual_seed(seed)
    model = CTALForPreTraining(config)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    write_model_card(output_dir, config, model_name=preset, weights="random")
    logger.warning(
        "Wrote %s: %s with RANDOMLY INITIALISED weights (%s parameters), not a pre-trained model.",
        output_dir,
        preset,
        f"{model.num_parameters():,}",
    )
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ctal_hf.create",
        description="Write a CTAL preset with RANDOMLY INITIALISED weights, its processor and card, so that "
        "from_pretrained('<preset>') loads it from the working directory. Not a pre-trained model.",
    )
    parser.add_argument("preset", choices=sorted(CTAL_PRESETS))
    # Underscored and dashed spellings both work, whichever style a user types from the other commands.
    parser.add_argument("--output_dir", "--output-dir", help="folder to write (default: ./<preset>)")
    parser.add_argument(
        "--tokenizer_dir",
        "--tokenizer-dir",
        required=True,
        help="folder with the original vocab.json + merges.txt, or a saved CTAL tokenizer/processor",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config field to change, repeatable (e.g. --override audio_causal_self_attention=true)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.override)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    create_checkpoint(args.preset, args.tokenizer_dir, args.output_dir, seed=args.seed, **overrides)


if __name__ == "__main__":
    main()
