"""ctal_hf.embeddings: the classification models' `embeddings` in batches, equal to one-by-one, and the per-utterance
cache (reused for the same model and file, recomputed when either changes)."""

import numpy as np
import pytest
import soundfile
import torch

from ctal_hf import CTALConfig, CTALForSequenceClassification, train_ctal_tokenizer
from ctal_hf.embeddings import model_fingerprint, utterance_embeddings
from ctal_hf.models.ctal.processing_ctal import processor_for_config


TEXTS = ["the old farmer walked", "a quiet child smiled near the river", "one baker sang", "her brother returned late"]


@pytest.fixture(scope="module")
def model_and_processor():
    tokenizer = train_ctal_tokenizer(TEXTS * 20, vocab_size=280)
    config = CTALConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, max_audio_frames=400, num_labels=3)
    torch.manual_seed(0)
    return CTALForSequenceClassification(config).eval(), processor_for_config(tokenizer, config)


@pytest.fixture
def rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for index, text in enumerate(TEXTS):
        path = tmp_path / f"utt{index}.wav"
        soundfile.write(path, 0.1 * rng.standard_normal(int(16000 * (0.4 + 0.3 * index))), 16000)
        rows.append({"audio": str(path), "text": text})
    return rows


def test_batches_equal_one_by_one_in_the_given_order(model_and_processor, rows):
    model, processor = model_and_processor
    batched = utterance_embeddings(model, processor, rows, batch_size=3)
    assert batched.shape == (4, 2 * model.config.hidden_size) and batched.dtype == np.float32
    single = np.concatenate([utterance_embeddings(model, processor, [row]) for row in rows])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_cache_is_reused_and_keyed_by_model_and_file(model_and_processor, rows, tmp_path):
    model, processor = model_and_processor
    cache = tmp_path / "cache"
    first = utterance_embeddings(model, processor, rows, cache_dir=cache)
    files = sorted(cache.rglob("*.npy"))
    assert len(files) == 4
    for path in files:  # a cached value is returned as stored, not recomputed
        np.save(path, np.full_like(np.load(path), 7.0))
    assert (utterance_embeddings(model, processor, rows, cache_dir=cache) == 7.0).all()

    soundfile.write(rows[0]["audio"], np.zeros(8000), 16000)  # a changed file is embedded again
    again = utterance_embeddings(model, processor, rows, cache_dir=cache)
    assert not np.allclose(again[0], 7.0) and (again[1:] == 7.0).all()

    changed = CTALForSequenceClassification(model.config).eval()  # other weights: a separate cache
    assert model_fingerprint(changed, processor) != model_fingerprint(model, processor)
    fresh = utterance_embeddings(changed, processor, rows[1:], cache_dir=cache)
    assert not np.allclose(fresh, 7.0) and not np.allclose(fresh, first[1:])


def test_a_model_without_embeddings_is_named(rows):
    class Plain(torch.nn.Module):
        config = CTALConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, **inputs):
            return {"logits": self.weight}

    tokenizer = train_ctal_tokenizer(TEXTS * 20, vocab_size=280)
    processor = processor_for_config(tokenizer, Plain.config)
    with pytest.raises(ValueError, match="returns no `embeddings`"):
        utterance_embeddings(Plain(), processor, rows)
    with pytest.raises(ValueError, match="No utterances"):
        utterance_embeddings(Plain(), processor, [])


def test_fingerprint_covers_the_tokenizer(model_and_processor):
    model, processor = model_and_processor
    other = processor_for_config(train_ctal_tokenizer(TEXTS * 20, vocab_size=270), model.config)
    assert model_fingerprint(model, other) != model_fingerprint(model, processor)
