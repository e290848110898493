"""`ctal_hf.output_dir`: the guard of every folder the package's programs write."""

import json
from pathlib import Path

import pytest

from ctal_hf.output_dir import (
    IncompleteCheckpointError,
    OutputDirNotEmptyError,
    check_output_dir,
    checkpoint_problem,
    latest_checkpoint,
    remove_checkpoints,
    resolve_resume_checkpoint,
    staged_output_dir,
)


def make_checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


@pytest.fixture
def run_dir(tmp_path):
    """A finished run: checkpoints 2 and 4, a final model and card."""
    folder = tmp_path / "run"
    make_checkpoint(folder, 2)
    make_checkpoint(folder, 4)
    for name in ("config.json", "model.safetensors", "README.md", "train_results.json"):
        (folder / name).write_text(name)
    return folder


def test_new_or_empty_folders_are_fine(tmp_path):
    check_output_dir(tmp_path / "new", overwrite=False)
    check_output_dir(tmp_path, overwrite=False)
    assert not (tmp_path / "new").exists()


def test_a_folder_with_a_run_is_refused_naming_what_it_holds(run_dir, folder_digest):
    before = folder_digest(run_dir)
    with pytest.raises(OutputDirNotEmptyError) as error:
        check_output_dir(run_dir, overwrite=False, overwrite_option="--overwrite_output_dir",
                         resume_option="--resume_from_checkpoint")
    assert str(error.value) == (
        f"--output_dir {run_dir} is not empty: it holds checkpoint-2, checkpoint-4; saved model files (README.md, "
        "config.json, model.safetensors); 1 other entry (train_results.json). Writing there would replace or mix "
        f"with them: pass --resume_from_checkpoint {run_dir / 'checkpoint-4'} to continue that run, or pass "
        "--overwrite_output_dir to replace them, or choose another --output_dir."
    )
    # Without resume and overwrite options, only another folder is suggested.
    with pytest.raises(OutputDirNotEmptyError, match="holds .*: choose another --output_dir") as error:
        check_output_dir(run_dir, overwrite=False, overwrite_option=None)
    assert "--overwrite" not in str(error.value)
    check_output_dir(run_dir, overwrite=True)
    assert folder_digest(run_dir) == before


def test_a_file_is_not_an_output_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_output_dir(tmp_path / "file", overwrite=True)


def test_overwriting_a_folder_that_holds_an_input_is_refused(run_dir, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"would delete or replace .*checkpoint-4 \(--resume_from_checkpoint\)"):
        check_output_dir(run_dir, overwrite=True, overwrite_option="--overwrite_output_dir",
                         inputs=[("--resume_from_checkpoint", run_dir / "checkpoint-4")])
    monkeypatch.chdir(run_dir / "checkpoint-2")
    with pytest.raises(ValueError, match=r"\(the working directory\)"):
        check_output_dir(run_dir, overwrite=True, inputs=[("the working directory", Path.cwd())])
    # Inputs elsewhere, or that are not paths (Hub ids), are fine.
    check_output_dir(run_dir, overwrite=True, inputs=[("--tokenizer_dir", tmp_path), ("--model", "org/model")])


def test_resuming_in_place_may_not_overwrite_a_later_checkpoint(run_dir):
    check_output_dir(run_dir, overwrite=False, resume_from=run_dir / "checkpoint-4")
    with pytest.raises(OutputDirNotEmptyError, match="holds checkpoint-4, saved after checkpoint-2 that you resume"):
        check_output_dir(run_dir, overwrite=False, resume_from=run_dir / "checkpoint-2",
                         resume_option="--resume_from_checkpoint")
    # A later checkpoint whose save was interrupted is rewritten by the resumed run.
    make_checkpoint(run_dir, 6, complete=False)
    check_output_dir(run_dir, overwrite=False, resume_from=run_dir / "checkpoint-4")


def test_interrupted_checkpoints_are_detected(run_dir):
    empty = run_dir / "checkpoint-5"
    empty.mkdir()
    truncated = make_checkpoint(run_dir, 6)
    (truncated / "trainer_state.json").write_text('{"global_step": ')
    assert checkpoint_problem(empty) == "no trainer_state.json, which Trainer writes last"
    assert checkpoint_problem(truncated) == "trainer_state.json is truncated"
    assert checkpoint_problem(run_dir / "checkpoint-4") is None
    assert latest_checkpoint(run_dir) == run_dir / "checkpoint-4"
    for value in ("latest", "true", "True"):
        assert resolve_resume_checkpoint(value, run_dir) == run_dir / "checkpoint-4"
    with pytest.raises(IncompleteCheckpointError) as error:
        resolve_resume_checkpoint(str(empty), run_dir)
    assert str(error.value) == (
        f"--resume_from_checkpoint {empty} is an incomplete checkpoint (no trainer_state.json, which Trainer writes "
        f"last): its save was interrupted; resume from {run_dir / 'checkpoint-4'}."
    )
    assert resolve_resume_checkpoint(None, run_dir) is None and resolve_resume_checkpoint("false", run_dir) is None
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        resolve_resume_checkpoint(str(run_dir / "checkpoint-9"), run_dir)


def test_latest_with_no_complete_checkpoint(tmp_path):
    make_checkpoint(tmp_path, 3, complete=False)
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint-\\* folder"):
        resolve_resume_checkpoint("latest", tmp_path)
    with pytest.raises(IncompleteCheckpointError, match="no complete checkpoint is next to it"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-3"), tmp_path)


def test_remove_checkpoints_keeps_other_files(run_dir):
    assert remove_checkpoints(run_dir) == ["checkpoint-2", "checkpoint-4"]
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "train_results.json"
    ]


def test_staged_writes_replace_the_folder_only_when_complete(run_dir, folder_digest):
    before = folder_digest(run_dir)
    with pytest.raises(KeyboardInterrupt):
        with staged_output_dir(run_dir, overwrite=True) as staging:
            (staging / "config.json").write_text("new")
            raise KeyboardInterrupt  # Ctrl-C half-way through the save
    assert folder_digest(run_dir) == before
    assert sorted(path.name for path in run_dir.parent.iterdir()) == ["run"]  # no temporary folder left

    with staged_output_dir(run_dir, overwrite=True) as staging:
        (staging / "config.json").write_text("new")
    assert [path.name for path in run_dir.rglob("*")] == ["config.json"]  # replaced as a whole
    assert (run_dir / "config.json").read_text() == "new"
    assert sorted(path.name for path in run_dir.parent.iterdir()) == ["run"]

    empty = run_dir.parent / "empty"
    empty.mkdir()
    with staged_output_dir(empty) as staging:
        (staging / "a.txt").write_text("a")
    assert (empty / "a.txt").read_text() == "a"

    # Another program filled the folder in the meantime: its files win, the staged result is dropped.
    new = run_dir.parent / "fresh"
    with pytest.raises(OutputDirNotEmptyError, match="gained files while it was being written"):
        with staged_output_dir(new) as staging:
            (staging / "a.txt").write_text("a")
            new.mkdir()
            (new / "b.txt").write_text("b")
    assert sorted(path.name for path in new.iterdir()) == ["b.txt"]
    assert sorted(path.name for path in run_dir.parent.iterdir()) == ["empty", "fresh", "run"]
