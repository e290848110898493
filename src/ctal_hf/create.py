"""Materialise a CTAL preset as a loadable folder: config, randomly initialised weights, processor and model card.

    python -m ctal_hf.create ctal-large --tokenizer_dir tokenizer/libri-roberta_train-960

writes `./ctal-large/`, so that (with `import ctal_hf`) `AutoModel.from_pretrained("ctal-large")` and
`AutoProcessor.from_pretrained("ctal-large")` work from that working directory. **The weights are random**: the folder
is the architecture, config and processor in `from_pretrained` form (for tests, pipelines, or as the starting point of
`examples/run_pretraining.py`), not a pre-trained model; in memory, `AutoModel.from_config(CTALConfig.from_preset(...))`
gives the same model. Pre-trained weights come from the converter (`ctal-convert-original`), from pre-training, or from
the Hub (`<org>/ctal-large`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers.utils import logging as hf_logging

from .models.ctal.configuration_ctal import CTAL_PRESETS, CTALConfig, check_config_keys
from .models.ctal.modeling_ctal import CTALForPreTraining
from .models.ctal.processing_ctal import processor_for_config
from .models.ctal.tokenization_ctal import load_tokenizer
from .output_dir import OutputDirNotEmptyError, check_output_dir, staged_output_dir
from .training.model_card import write_model_card


logger = hf_logging.get_logger(__name__)


def parse_overrides(items: Iterable[str], config: CTALConfig | None = None) -> dict[str, Any]:
    """Apply `key=value` config overrides to `config` (default: a fresh `CTALConfig`, only to type the values) with
    `PreTrainedConfig.update_from_string`, which reads each value as the type of the field's current value (`3`,
    `0.1`, `true`, `gelu`), and return them as a dict. Raises a `ValueError` for an item without `=`, one naming each
    key that is not a `CTALConfig` key with the closest valid key (`check_config_keys`), and one naming a value that
    does not fit its field."""
    pairs = []
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise ValueError(f"Overrides are key=value, got {item!r}.")
        pairs.append((key, value))
    check_config_keys(key for key, _ in pairs)
    config = CTALConfig() if config is None else config
    for key, value in pairs:
        try:
            config.update_from_string(f"{key}={value}")
        except (TypeError, ValueError) as error:
            raise ValueError(f"Config override {key}={value}: {error}") from None
    return {key: getattr(config, key) for key, _ in pairs}


def create_checkpoint(
    preset: str,
    tokenizer_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    seed: int = 0,
    overwrite: bool = False,
    **overrides,
) -> Path:
    """Write `preset` (`"ctal-base"` / `"ctal-large"`, config fields overridable) with random weights
    (`CTALForPreTraining`, seeded), the processor built from `tokenizer_dir` and a model card into `output_dir`
    (default: `./<preset>`). Returns the folder.

    A non-empty `output_dir` is refused (`OutputDirNotEmptyError`) before any work unless `overwrite`, which replaces
    it as a whole; the folder is written next to it first and renamed into place, so a failure leaves it as it was."""
    config = CTALConfig.from_preset(preset, **overrides)
    output_dir = Path(output_dir or preset)
    check_output_dir(
        output_dir, overwrite=overwrite, overwrite_option="--overwrite",
        inputs=[("--tokenizer_dir", tokenizer_dir), ("the working directory", Path.cwd())],
    )
    processor = processor_for_config(load_tokenizer(tokenizer_dir), config)
    torch.manual_seed(seed)
    model = CTALForPreTraining(config)
    with staged_output_dir(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        # The snippets load the final folder.
        write_model_card(staging, config, model_name=preset, repo_id=str(output_dir), weights="random")
    logger.warning(
        "Wrote %s: %s with RANDOMLY INITIALISED weights (%s parameters), not a pre-trained model.",
        output_dir,
        preset,
        f"{model.num_parameters():,}",
    )
    return output_dir


def _argument_parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the output folder (and everything in it) if it is not empty"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _argument_parser()
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.override)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        create_checkpoint(
            args.preset, args.tokenizer_dir, args.output_dir, seed=args.seed, overwrite=args.overwrite, **overrides
        )
    except (OutputDirNotEmptyError, NotADirectoryError, FileNotFoundError, ValueError, StrictDataclassError) as error:
        sys.exit(f"{parser.prog}: {error}")


if __name__ == "__main__":
    main()
