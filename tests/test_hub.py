"""Pushing a CTAL checkpoint (model + processor + card) to the Hub, with the Hub API replaced by a recorder, and failing
fast without network."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import HfApi, ModelCard

from ctal_hf import train_ctal_tokenizer
from ctal_hf.create import create_checkpoint
from ctal_hf.hub import HubUnreachableError, push_checkpoint_to_hub
from transformers import AutoModelForPreTraining, AutoProcessor


PROCESSOR_FILES = {"processor_config.json", "tokenizer.json", "tokenizer_config.json"}
CHECKPOINT_FILES = {"config.json", "model.safetensors", "README.md"} | PROCESSOR_FILES


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    train_ctal_tokenizer(["hello world", "a test"] * 3, vocab_size=270, min_frequency=1).save_pretrained(root / "tok")
    small = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    return create_checkpoint("ctal-base", root / "tok", root / "ctal-base", **small)


def folder_digest(folder: Path) -> dict[str, tuple[str, float]]:
    return {
        path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime) for path in folder.iterdir()
    }


@pytest.fixture
def hub(monkeypatch):
    """Replace the Hub calls transformers and huggingface_hub make (`HfApi.create_repo`, `HfApi.create_commit`, the
    reachability probe) by a recorder."""
    record = SimpleNamespace(repos=[], commits=[], probes=[])

    def create_repo(self, repo_id, **kwargs):
        record.repos.append(repo_id)
        return SimpleNamespace(repo_id=repo_id)

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for operation in operations:
            source = operation.path_or_fileobj
            files[operation.path_in_repo] = source.read() if hasattr(source, "read") else Path(source).read_bytes()
        record.commits.append(SimpleNamespace(repo_id=repo_id, files=files, kwargs=kwargs))
        return SimpleNamespace(commit_url=f"https://hub.test/{repo_id}/commit/0")

    class Session:
        def head(self, url, timeout):
            record.probes.append((url, timeout))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr("ctal_hf.hub.get_session", Session)
    return record


def test_push_folder_uploads_model_processor_and_card_in_one_commit(hub, checkpoint):
    before = folder_digest(checkpoint)
    push_checkpoint_to_hub(checkpoint, "my-org/ctal-base", private=True)
    assert hub.repos == ["my-org/ctal-base"] and hub.probes and hub.probes[0][1] == 10.0
    (commit,) = hub.commits
    assert set(commit.files) == CHECKPOINT_FILES
    assert commit.files["README.md"] == (checkpoint / "README.md").read_bytes()
    assert commit.files["model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()
    assert folder_digest(checkpoint) == before


def test_push_in_memory_model_with_processor(hub, checkpoint):
    model = AutoModelForPreTraining.from_pretrained(checkpoint)
    processor = AutoProcessor.from_pretrained(checkpoint)
    push_checkpoint_to_hub(model, "my-org/ctal-base-ft", processor=processor)
    (commit,) = hub.commits
    assert set(commit.files) == CHECKPOINT_FILES
    card = commit.files["README.md"].decode()
    assert card.startswith("---\n") and 'AutoModel.from_pretrained("my-org/ctal-base-ft")' in card


def test_standard_transformers_push_to_hub(hub, monkeypatch, checkpoint):
    """`model.push_to_hub` / `processor.push_to_hub` (transformers' PushToHubMixin) go through the same two calls; the
    card they upload is the one already on the Hub (here: ours, as `push_checkpoint_to_hub` leaves it)."""
    card = (checkpoint / "README.md").read_text(encoding="utf-8")
    monkeypatch.setattr(ModelCard, "load", classmethod(lambda cls, repo_id, **kwargs: ModelCard(card)))
    AutoModelForPreTraining.from_pretrained(checkpoint).push_to_hub("my-org/ctal-base")
    AutoProcessor.from_pretrained(checkpoint).push_to_hub("my-org/ctal-base")
    model_commit, processor_commit = hub.commits
    assert {"config.json", "model.safetensors", "README.md"} <= set(model_commit.files)
    assert PROCESSOR_FILES <= set(processor_commit.files)
    assert model_commit.files["README.md"].decode().strip() == card.strip()


def test_offline_mode_fails_fast_and_keeps_files(hub, monkeypatch, checkpoint):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    before = folder_digest(checkpoint)
    with pytest.raises(HubUnreachableError, match="offline mode"):
        push_checkpoint_to_hub(checkpoint, "my-org/ctal-base")
    assert not hub.repos and not hub.commits and not hub.probes
    assert folder_digest(checkpoint) == before


def test_hf_hub_offline_environment_variable(checkpoint):
    """The real variable, in a fresh process: a clear error, no hang."""
    code = f"from ctal_hf.hub import push_checkpoint_to_hub; push_checkpoint_to_hub({str(checkpoint)!r}, 'my-org/x')"
    start = time.monotonic()
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "HubUnreachableError" in result.stderr and "HF_HUB_OFFLINE=1" in result.stderr
    assert time.monotonic() - start < 60


def test_unreachable_endpoint_fails_fast(checkpoint):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(HubUnreachableError, match="did not answer"):
        push_checkpoint_to_hub(checkpoint, "my-org/ctal-base", endpoint=f"http://127.0.0.1:{port}", timeout=2)


def test_silent_endpoint_times_out(checkpoint):
    """An endpoint that accepts connections but never answers must not hang the push."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        start = time.monotonic()
        with pytest.raises(HubUnreachableError, match="0.5 s"):
            endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
            push_checkpoint_to_hub(checkpoint, "my-org/x", endpoint=endpoint, timeout=0.5)
        assert time.monotonic() - start < 10


def test_folder_must_be_a_ctal_checkpoint_with_a_card(hub, tmp_path, checkpoint):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "README.md").write_text("card")
    with pytest.raises(ValueError, match="not a CTAL checkpoint"):
        push_checkpoint_to_hub(tmp_path, "my-org/x")
    (tmp_path / "README.md").unlink()
    with pytest.raises(FileNotFoundError, match="README.md"):
        push_checkpoint_to_hub(tmp_path, "my-org/x")
    assert not hub.commits
