"""A test-side hook on the pre-training Trainer: each process appends one line per training example it sees (a hash of
its unmasked token ids) to `<folder>/rank-<process index>.txt`, to check how data is sharded and what is dropped.

In a test: `log_training_data(monkeypatch, folder)`. Under `accelerate launch`, run this file instead of
examples/run_pretraining.py: `python tests/examples/data_logging.py FOLDER <run_pretraining arguments>`.
"""

import hashlib
import sys
from pathlib import Path

import torch

from ctal_hf.training.trainer import CTALPreTrainingTrainer


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _logging_compute_loss(folder: Path, compute_loss):
    def wrapped(trainer, model, inputs, *args, **kwargs):
        if model.training:
            folder.mkdir(parents=True, exist_ok=True)
            ids = inputs["input_ids"]
            if "labels" in inputs:  # hash the unmasked text, so one utterance always gives one line
                ids = torch.where(inputs["labels"] != -100, inputs["labels"], ids)
            with open(folder / f"rank-{trainer.args.process_index}.txt", "a") as handle:
                for row, mask in zip(ids.tolist(), inputs["attention_mask"].tolist()):
                    valid = [token for token, keep in zip(row, mask) if keep]
                    handle.write(hashlib.sha1(str(valid).encode()).hexdigest() + "\n")
        return compute_loss(trainer, model, inputs, *args, **kwargs)

    return wrapped


def log_training_data(monkeypatch, folder: Path) -> None:
    monkeypatch.setattr(
        CTALPreTrainingTrainer, "compute_loss", _logging_compute_loss(folder, CTALPreTrainingTrainer.compute_loss)
    )


if __name__ == "__main__":
    CTALPreTrainingTrainer.compute_loss = _logging_compute_loss(Path(sys.argv[1]), CTALPreTrainingTrainer.compute_loss)
    sys.path.insert(0, str(EXAMPLES))
    import run_pretraining

    run_pretraining.main(sys.argv[2:])
