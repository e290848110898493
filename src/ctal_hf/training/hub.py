"""Upload a CTAL checkpoint (model, processor and model card) to the Hugging Face Hub in one commit.

transformers' own `model.push_to_hub` / `processor.push_to_hub` work for CTAL too, but each of them uploads as
`README.md` the card already on the Hub or, for a new repo, transformers' generic template, never a local card, and
waits on an unresponsive Hub without a timeout. `push_checkpoint_to_hub` uploads the folder as it is, with the card
from `ctal_hf.training.model_card`, with `HfApi.create_repo` and `HfApi.upload_folder` (which leaves out intermediate
checkpoints and hidden files, as `Trainer.push_to_hub` does).

Without network it fails fast: offline mode (`HF_HUB_OFFLINE=1`) is refused before any request, and the endpoint is
probed with a bounded timeout before anything is created, so an unreachable or silent Hub gives a clear error within
`timeout` seconds instead of a hang. Local files are only read.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.hf_api import CommitInfo
# huggingface_hub's stable alias of the HTTP library it is built on (httpx2 today), rather than that library itself.
from huggingface_hub.utils import get_session, httpx
from transformers import PreTrainedModel, ProcessorMixin
from transformers.utils import logging

from .model_card import write_model_card


logger = logging.get_logger(__name__)

# Not uploaded from a folder, as transformers' Trainer.push_to_hub: intermediate checkpoints and private/hidden files,
# at any depth (the patterns are fnmatch patterns on paths relative to the folder).
IGNORE_PATTERNS = [pattern for prefix in ("checkpoint-", "_", ".") for pattern in (f"{prefix}*", f"*/{prefix}*")]


class HubUnreachableError(ConnectionError):
    """The Hub cannot be reached (offline mode, no network, endpoint silent); nothing was uploaded."""


def check_hub_reachable(endpoint: str | None = None, timeout: float = 10.0) -> None:
    """Raise `HubUnreachableError` if offline mode is on or `endpoint` (default: the configured Hub) does not answer
    within `timeout` seconds. Any HTTP answer, even an error status, counts as reachable."""
    endpoint = endpoint or constants.ENDPOINT
    if constants.is_offline_mode():
        raise HubUnreachableError(
            "Cannot push to the Hub: offline mode is enabled (HF_HUB_OFFLINE=1). Unset it, or upload the folder later."
        )
    try:
        get_session().head(endpoint, timeout=timeout)
    except httpx.TransportError as error:
        raise HubUnreachableError(
            f"Cannot push to the Hub: {endpoint} did not answer within {timeout:g} s ({type(error).__name__}: {error})."
        ) from error


def _check_checkpoint_folder(folder: Path) -> None:
    for required, hint in (
        ("config.json", "save the model with `save_pretrained`"),
        ("README.md", "write a card with `ctal_hf.training.model_card.write_model_card`"),
    ):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder} has no {required}; {hint} first.")
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type != "ctal":
        raise ValueError(f"{folder}/config.json is a {model_type!r} config, not a CTAL checkpoint.")


def push_checkpoint_to_hub(
    folder_or_model: str | Path | PreTrainedModel,
    repo_id: str,
    *,
    processor: ProcessorMixin | None = None,
    model_card: str | None = None,
    commit_message: str = "Upload CTAL checkpoint",
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    endpoint: str | None = None,
    timeout: float = 10.0,
) -> CommitInfo:
    """Upload a CTAL checkpoint to `repo_id` (created if needed) with `HfApi.upload_folder` and return the commit info.

    Args:
        folder_or_model: a folder written by `save_pretrained` (converter, `ctal_hf.create`, pre-training) holding
            `config.json`, the weights, the processor files and `README.md`; or an in-memory CTAL model, saved to a
            temporary folder with `processor` and a card (`model_card`, else one rendered from its config).
        repo_id: `<org or user>/<name>`, e.g. `my-org/ctal-large`.
        processor: the `CTALProcessor` to upload with an in-memory model (a folder already holds its processor).
        model_card: `README.md` text for an in-memory model.
        commit_message, private, token, revision, create_pr: as in `HfApi.upload_folder` / `HfApi.create_repo`.
        endpoint: Hub endpoint (default: `HF_ENDPOINT` or huggingface.co).
        timeout: seconds to wait for the endpoint before giving up (`HubUnreachableError`).
    """
    check_hub_reachable(endpoint, timeout)
    if isinstance(folder_or_model, PreTrainedModel):
        with tempfile.TemporaryDirectory() as tmp_dir:
            folder_or_model.save_pretrained(tmp_dir)
            if processor is not None:
                processor.save_pretrained(tmp_dir)
            if model_card is not None:
                ModelCard(model_card).save(Path(tmp_dir, "README.md"))
            else:
                write_model_card(tmp_dir, folder_or_model.config, model_name=repo_id.split("/")[-1], repo_id=repo_id)
            return _upload(Path(tmp_dir), repo_id, commit_message, private, token, revision, create_pr, endpoint)
    if processor is not None or model_card is not None:
        raise ValueError("`processor` and `model_card` are for an in-memory model; a folder is uploaded as it is.")
    return _upload(Path(folder_or_model), repo_id, commit_message, private, token, revision, create_pr, endpoint)


def _upload(folder, repo_id, commit_message, private, token, revision, create_pr, endpoint) -> CommitInfo:
    _check_checkpoint_folder(folder)
    api = HfApi(endpoint=endpoint, token=token, library_name="ctal_hf")
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    logger.info("Uploading %s to %s", folder, repo_id)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message=commit_message,
        revision=revision,
        create_pr=create_pr,
        ignore_patterns=IGNORE_PATTERNS,
    )
