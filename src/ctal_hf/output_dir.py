"""The one guard of every folder a `ctal_hf` program writes (pre-training, fine-tuning, the converter,
`python -m ctal_hf.create`, the tokenizer trainer): nothing already there is replaced unless the user asks for it,
and a result is either complete or absent.

- `check_output_dir`: before any work, refuse a folder that is not empty, naming what it holds (checkpoints, a saved
  model, other files) and the options that fix it.
- `staged_output_dir`: write into a temporary sibling folder that replaces the output folder in one rename once
  everything is written; an error or Ctrl-C leaves the output folder as it was.
- `checkpoint_problem`, `list_checkpoints`, `latest_checkpoint`, `resolve_resume_checkpoint`, `remove_checkpoints`:
  `Trainer` checkpoints (`checkpoint-<step>` folders). `Trainer` writes a checkpoint in place and writes its
  `trainer_state.json` last, so a save that was interrupted leaves a folder without (or with a truncated)
  `trainer_state.json`: such a checkpoint is reported, never resumed from.

A script calls, in this order: `resolve_resume_checkpoint` (if it resumes), `check_output_dir`, then writes (through
`staged_output_dir` when the result is one folder written at the end; `Trainer` writes its checkpoints itself).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging


logger = logging.get_logger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# Files that make a folder a saved model or processor (`save_pretrained`), named in the refusal message.
SAVED_MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
)
_LISTED = 5  # names shown per kind of entry


class OutputDirNotEmptyError(FileExistsError):
    """The output folder holds files and the user did not ask to overwrite them."""


class IncompleteCheckpointError(ValueError):
    """A checkpoint folder whose save was interrupted (no complete `trainer_state.json`)."""


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a `checkpoint-<step>` folder name, else None."""
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The `checkpoint-<step>` folders of `folder`, complete or not, by increasing step."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.is_dir() and checkpoint_step(path) is not None]
    return sorted(found, key=checkpoint_step)


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from (its save was interrupted), or None if it is complete."""
    state = Path(path) / TRAINER_STATE_NAME
    if not state.is_file():
        return f"no {TRAINER_STATE_NAME}, which Trainer writes last"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{TRAINER_STATE_NAME} is truncated"
    return None


def latest_checkpoint(folder: str | os.PathLike, *, warn: bool = True) -> Path | None:
    """The complete checkpoint of `folder` with the highest step (None if there is none). With `warn`, logs a warning
    naming each later checkpoint it passes over because its save was interrupted."""
    for path in reversed(list_checkpoints(folder)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if warn:
            logger.warning("Skipping the incomplete checkpoint %s (%s): its save was interrupted.", path, problem)
    return None


def resolve_resume_checkpoint(
    value: str | os.PathLike | None, output_dir: str | os.PathLike, *, option: str = "--resume_from_checkpoint"
) -> Path | None:
    """The checkpoint folder to resume from, checked before any work.

    Args:
        value: the option's value: None or `"false"` (do not resume), `"true"` or `"latest"` (the newest complete
            checkpoint of `output_dir`), or a `checkpoint-<step>` folder.
        output_dir: the run's output folder, searched for `"true"` / `"latest"`.
        option: the option's name, for messages.

    Raises:
        FileNotFoundError: `value` is not a folder, or there is no complete checkpoint to resume from.
        IncompleteCheckpointError: `value` is a checkpoint whose save was interrupted; the message names the
            latest complete checkpoint next to it.
    """
    if value is None or str(value).lower() in ("", "false"):
        return None
    if str(value).lower() in ("true", "latest") and not Path(value).exists():
        latest = latest_checkpoint(output_dir)
        if latest is None:
            raise FileNotFoundError(
                f"{option} {value}: {output_dir} holds no complete {PREFIX_CHECKPOINT_DIR}-* folder to resume from."
            )
        return latest
    path = Path(value)
    if not path.is_dir():
        raise FileNotFoundError(f"{option} {value} is not a folder; pass a {PREFIX_CHECKPOINT_DIR}-* folder.")
    problem = checkpoint_problem(path)
    if problem is not None:
        earlier = latest_checkpoint(path.parent, warn=False)
        fix = (
            f"resume from {earlier}" if earlier is not None
            else f"no complete checkpoint is next to it, so start the run again without {option}"
        )
        raise IncompleteCheckpointError(
            f"{option} {path} is an incomplete checkpoint ({problem}): its save was interrupted; {fix}."
        )
    return path


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output_dir(
    path: str | os.PathLike,
    *,
    overwrite: bool,
    option: str = "--output_dir",
    overwrite_option: str | None = "--overwrite",
    resume_from: str | os.PathLike | None = None,
    resume_option: str | None = None,
    inputs: Iterable[tuple[str, str | os.PathLike | None]] = (),
) -> None:
    """Refuse to write into `path` when that could lose or mix up what it holds. Call it before any work.

    Args:
        path: the output folder. A folder that does not exist yet or is empty is always fine.
        overwrite: the user asked to replace what `path` holds. Then only `inputs` are checked.
        option: the name of the output option (or argument), for messages.
        overwrite_option: the option that sets `overwrite` (None: the program has none).
        resume_from: the checkpoint the program resumes from (see `resolve_resume_checkpoint`). If it is in `path`,
            the folder is that run's and may hold its files, but no complete checkpoint saved after `resume_from`
            (the resumed run would overwrite it).
        resume_option: the option that resumes, suggested when `path` holds complete checkpoints (None: the program
            cannot resume).
        inputs: `(name, path)` pairs of what the program reads (`("--tokenizer_dir", ...)`) or runs in
            (`("the working directory", Path.cwd())`); with `overwrite`, none may be inside `path`, since
            overwriting deletes or replaces what is there. Paths that do not exist (e.g. Hub ids) are skipped.

    Raises:
        NotADirectoryError: `path` is a file.
        OutputDirNotEmptyError: `path` holds files and `overwrite` is False; the message names the checkpoints and
            model files found and the options that fix it.
        ValueError: with `overwrite`, an input is inside `path`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{option} {path} is a file; pass a folder.")
    if overwrite:
        for name, value in inputs:
            if value is not None and Path(value).exists() and _inside(Path(value), path):
                raise ValueError(
                    f"{overwrite_option} would delete or replace {value} ({name}), which is inside {option} {path}: "
                    f"choose another {option}."
                )
        return
    if not path.is_dir():
        return
    entries = sorted(path.iterdir())
    if not entries:
        return
    checkpoints = list_checkpoints(path)
    if resume_from is not None and Path(resume_from).resolve().parent == path.resolve():
        step = checkpoint_step(resume_from) or 0
        # Incomplete later checkpoints are left-overs of an interrupted save: the resumed run rewrites them.
        later = [c for c in checkpoints if checkpoint_step(c) > step and checkpoint_problem(c) is None]
        if later:
            raise OutputDirNotEmptyError(
                f"{option} {path} holds {_names([c.name for c in later])}, saved after {Path(resume_from).name} that "
                f"you resume from: the resumed run would overwrite {'it' if len(later) == 1 else 'them'}. Resume from "
                f"the latest ({resume_option} {later[-1]}), or move the later checkpoints out of {path}."
            )
        return

    parts = []
    if checkpoints:
        parts.append(_names([c.name for c in checkpoints]))
    model_files = [entry.name for entry in entries if entry.name in SAVED_MODEL_FILES]
    if model_files:
        parts.append(f"saved model files ({_names(model_files)})")
    others = [entry.name for entry in entries if entry not in checkpoints and entry.name not in model_files]
    if others:
        parts.append(f"{len(others)} other {'entry' if len(others) == 1 else 'entries'} ({_names(others)})")
    fixes = []
    latest = latest_checkpoint(path, warn=False) if resume_option else None
    if latest is not None:
        fixes.append(f"pass {resume_option} {latest} to continue that run")
    if overwrite_option:
        fixes.append(f"pass {overwrite_option} to replace {'them' if len(entries) > 1 else 'it'}")
    fixes.append(f"choose another {option}")
    raise OutputDirNotEmptyError(
        f"{option} {path} is not empty: it holds {'; '.join(parts)}. Writing there would replace or mix with "
        f"{'them' if len(entries) > 1 else 'it'}: {', or '.join(fixes)}."
    )


def remove_checkpoints(folder: str | os.PathLike) -> list[str]:
    """Delete the `checkpoint-<step>` folders of `folder` (an overwritten run's, so that a new run does not mix
    with them: resuming from the latest, or `save_total_limit`, would pick them up). Returns their names."""
    removed = []
    for path in list_checkpoints(folder):
        shutil.rmtree(path)
        removed.append(path.name)
    return removed


@contextmanager
def staged_output_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a new temporary folder next to `path` to write the whole result into; when the block ends without an
    error, the folder becomes `path` in one rename (an existing `path`, with `overwrite`, is replaced as a whole).
    On an error or Ctrl-C, the temporary folder is deleted and `path` is left as it was.

    Call `check_output_dir` first: this only refuses (`OutputDirNotEmptyError`) when `path` gained files meanwhile.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield staging
        if path.is_dir() and any(path.iterdir()):
            if not overwrite:
                raise OutputDirNotEmptyError(f"{path} gained files while it was being written; the result is lost.")
            # Renaming onto a non-empty folder fails: move the old one aside first, delete it once replaced.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)  # onto an empty folder too
    finally:
        shutil.rmtree(staging, ignore_errors=True)
