"""Pushing a CTAL checkpoint (model + processor + card) to the Hub, with ours and with transformers' own `push_to_hub`,
against a fake Hub behind huggingface_hub's HTTP client; and failing fast without network."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import httpx, set_client_factory
from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook

from ctal_hf import train_ctal_tokenizer
from ctal_hf.create import create_checkpoint
from ctal_hf.training.hub import HubUnreachableError, push_checkpoint_to_hub
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
def hub(monkeypatch, tmp_path):
    """A fake Hub behind huggingface_hub's HTTP client, whose request hook (offline mode) is kept: it records every
    request, creates repos, accepts README metadata, and serves the files committed so far, answering 404
    `EntryNotFound` for the others as the Hub does. Only `HfApi.create_commit` (pre-upload, LFS, commit) is replaced, by a recorder of
    the files; `upload_folder` reaches it with the Xet transfer switched off (`HF_HUB_DISABLE_XET`)."""
    record = SimpleNamespace(repos={}, commits=[], requests=[])

    def answer(request):
        record.requests.append(request)
        if request.url.path == "/api/repos/create":
            body = json.loads(request.content)
            repo_id = f"{body['organization']}/{body['name']}"
            record.repos.setdefault(repo_id, {})
            return httpx.Response(200, json={"url": f"{constants.ENDPOINT}/{repo_id}"})
        if request.url.path == "/api/validate-yaml":
            return httpx.Response(200, json={})
        parts = request.url.path.strip("/").split("/", 4)  # <org>/<name>/resolve/<revision>/<file>
        content = record.repos.get("/".join(parts[:2]), {}).get(parts[-1]) if parts[2:3] == ["resolve"] else None
        if content is None:
            return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound"})
        headers = {"ETag": f'"{hashlib.sha256(content).hexdigest()}"', "X-Repo-Commit": "0" * 40}
        return httpx.Response(200, headers=headers, content=content)

    def create_commit(self, repo_id, operations, **kwargs):
        files = {operation.path_in_repo: Path(operation.path_or_fileobj).read_bytes() for operation in operations}
        record.repos[repo_id].update(files)
        record.commits.append(SimpleNamespace(repo_id=repo_id, files=files, kwargs=kwargs))
        return SimpleNamespace(commit_url=f"https://hub.test/{repo_id}/commit/0")

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    transport = httpx.MockTransport(answer)
    set_client_factory(lambda: httpx.Client(transport=transport, event_hooks={"request": [hf_request_event_hook]}))
    yield record
    set_client_factory(default_client_factory)


def test_push_folder_uploads_model_processor_and_card_in_one_commit(hub, checkpoint):
    before = folder_digest(checkpoint)
    push_checkpoint_to_hub(checkpoint, "my-org/ctal-base", private=True)
    probe = hub.requests[0]  # the reachability probe comes first, with its timeout
    assert (probe.method, probe.url.path, probe.extensions["timeout"]["connect"]) == ("HEAD", "/", 10.0)
    assert list(hub.repos) == ["my-org/ctal-base"]
    (commit,) = hub.commits
    assert set(commit.files) == CHECKPOINT_FILES
    assert commit.files["README.md"] == (checkpoint / "README.md").read_bytes()
    assert commit.files["model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()
    assert folder_digest(checkpoint) == before


def test_push_folder_leaves_out_intermediate_checkpoints_and_hidden_files(hub, checkpoint, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(checkpoint, folder)
    for name in ("checkpoint-3/model.safetensors", ".cache/x", "_tmp/x", "runs/.hidden", "runs/_x", "runs/events.log"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    push_checkpoint_to_hub(folder, "my-org/run")
    (commit,) = hub.commits
    assert set(commit.files) == CHECKPOINT_FILES | {"runs/events.log"}


def test_push_in_memory_model_with_processor(hub, checkpoint):
    model = AutoModelForPreTraining.from_pretrained(checkpoint)
    processor = AutoProcessor.from_pretrained(checkpoint)
    push_checkpoint_to_hub(model, "my-org/ctal-base-ft", processor=processor)
    (commit,) = hub.commits
    assert set(commit.files) == CHECKPOINT_FILES
    card = commit.files["README.md"].decode()
    assert card.startswith("---\n") and 'AutoModel.from_pretrained("my-org/ctal-base-ft")' in card


def test_standard_push_to_hub_uploads_the_generic_transformers_card_to_a_new_repo(hub, checkpoint):
    """transformers' `push_to_hub` (PushToHubMixin) creates the repo, fetches its README.md from the Hub
    (`ModelCard.load`), falls back to transformers' generic template when there is none, and commits a fresh
    `save_pretrained` plus that card; the processor push re-uploads the card it now finds. The folder's card is never
    read."""
    before = folder_digest(checkpoint)
    AutoModelForPreTraining.from_pretrained(checkpoint).push_to_hub("my-org/ctal-base")
    AutoProcessor.from_pretrained(checkpoint).push_to_hub("my-org/ctal-base")
    model_commit, processor_commit = hub.commits
    assert set(model_commit.files) == {"config.json", "model.safetensors", "README.md"}
    assert set(processor_commit.files) == PROCESSOR_FILES | {"README.md"}
    card = model_commit.files["README.md"].decode()
    assert "library_name: transformers" in card and "This model card has been automatically generated." in card
    assert "CTAL" not in card and processor_commit.files["README.md"] == model_commit.files["README.md"]
    card_fetches = [r for r in hub.requests if r.url.path == "/my-org/ctal-base/resolve/main/README.md"]
    assert card_fetches and hub.repos["my-org/ctal-base"]["README.md"] == model_commit.files["README.md"]
    assert folder_digest(checkpoint) == before


def test_standard_push_to_hub_keeps_the_card_already_on_the_hub(hub, checkpoint):
    push_checkpoint_to_hub(checkpoint, "my-org/ctal-base")
    AutoModelForPreTraining.from_pretrained(checkpoint).push_to_hub("my-org/ctal-base")
    AutoProcessor.from_pretrained(checkpoint).push_to_hub("my-org/ctal-base")
    assert [commit.files["README.md"] for commit in hub.commits] == [(checkpoint / "README.md").read_bytes()] * 3


def test_standard_push_to_hub_offline_fails_before_any_request(hub, monkeypatch, checkpoint):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    before = folder_digest(checkpoint)
    for pushed in (AutoModelForPreTraining.from_pretrained(checkpoint), AutoProcessor.from_pretrained(checkpoint)):
        start = time.monotonic()
        with pytest.raises(OfflineModeIsEnabled, match="offline mode is enabled"):
            pushed.push_to_hub("my-org/ctal-base")
        assert time.monotonic() - start < 10
    assert not hub.requests and not hub.repos and not hub.commits
    assert folder_digest(checkpoint) == before


def test_offline_mode_fails_fast_and_keeps_files(hub, monkeypatch, checkpoint):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    before = folder_digest(checkpoint)
    with pytest.raises(HubUnreachableError, match="offline mode"):
        push_checkpoint_to_hub(checkpoint, "my-org/ctal-base")
    assert not hub.requests and not hub.repos and not hub.commits
    assert folder_digest(checkpoint) == before


def test_hf_hub_offline_environment_variable(checkpoint):
    """The real variable, in a fresh process: a clear error, no hang."""
    code = f"from ctal_hf.training.hub import push_checkpoint_to_hub; push_checkpoint_to_hub({str(checkpoint)!r}, 'my-org/x')"
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
