"""Trial lists (generation, VoxCeleb reader/writer, speaker disjointness), scoring with score normalisation, and the
authors' random GE2E protocol."""

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctal_hf.metrics import compute_eer
from ctal_hf.speaker_verification import (
    Trial,
    _ge2e_draw_eer,
    check_disjoint_speakers,
    cosine_scores,
    draw_per_speaker,
    generate_trials,
    ge2e_random_eer,
    read_trials,
    score_trials,
    write_scores,
    write_trials,
)


def corpus(num_speakers=6, per_speaker=(3, 5, 8)):
    utterances, speakers = [], []
    for index in range(num_speakers):
        speaker = f"spk{index}"
        for number in range(per_speaker[index % len(per_speaker)]):
            utterances.append(f"test-clean/{speaker}/{speaker}-{number:04d}.flac")
            speakers.append(speaker)
    return utterances, speakers


def test_trials_are_deterministic_balanced_and_cover_every_speaker():
    utterances, speakers = corpus()
    trials = generate_trials(utterances, speakers, num_trials=60, seed=3)
    assert len(trials) == 60
    assert trials == generate_trials(utterances, speakers, num_trials=60, seed=3)
    order = np.random.default_rng(0).permutation(len(utterances))
    shuffled = generate_trials([utterances[i] for i in order], [speakers[i] for i in order], num_trials=60, seed=3)
    assert shuffled == trials, "the list must not depend on the order the files were listed in"
    assert generate_trials(utterances, speakers, num_trials=60, seed=4) != trials

    speaker_of = dict(zip(utterances, speakers))
    assert Counter(trial.label for trial in trials) == {1: 30, 0: 30}
    for trial in trials:
        assert trial.enroll != trial.test
        assert (speaker_of[trial.enroll] == speaker_of[trial.test]) == (trial.label == 1)
    assert len({frozenset((trial.enroll, trial.test)) for trial in trials}) == 60, "no pair twice"
    for label in (0, 1):
        covered = {speaker_of[trial.enroll] for trial in trials if trial.label == label}
        assert covered == set(speakers), f"every speaker in the label-{label} trials"
    # The speaker with 3 utterances has only 3 target pairs; the others share the remaining target trials evenly.
    target_counts = Counter(speaker_of[trial.enroll] for trial in trials if trial.label == 1)
    assert target_counts["spk0"] == target_counts["spk3"] == 3
    assert (
        max(target_counts.values())
        - min(count for name, count in target_counts.items() if name not in ("spk0", "spk3"))
        <= 1
    )


def test_trials_refuse_training_speakers_and_impossible_requests():
    utterances, speakers = corpus()
    with pytest.raises(ValueError, match=r"2 test speakers also occur in the training data \(spk1, spk4\)"):
        generate_trials(utterances, speakers, num_trials=20, train_speakers=["spk1", "spk4", "train7"])
    check_disjoint_speakers(["train1", "train2"], speakers)
    with pytest.raises(ValueError, match="must be even and at least 12"):
        generate_trials(utterances, speakers, num_trials=10)
    with pytest.raises(ValueError, match="must be even"):
        generate_trials(utterances, speakers, num_trials=21)
    with pytest.raises(ValueError, match="give only 2 and 4"):
        generate_trials(["a1", "a2", "b1", "b2"], ["a", "a", "b", "b"], num_trials=6)
    with pytest.raises(ValueError, match="a single utterance"):
        generate_trials(["a1", "a2", "b1"], ["a", "a", "b"], num_trials=4)
    with pytest.raises(ValueError, match="whitespace"):
        generate_trials(["a 1", "a2", "b1", "b2"], ["a", "a", "b", "b"], num_trials=4)


def test_trials_exhaust_every_pair_when_asked_for_all_of_them():
    utterances, speakers = ["a1", "a2", "a3", "b1", "b2", "b3"], ["a"] * 3 + ["b"] * 3
    trials = generate_trials(utterances, speakers, num_trials=12, seed=0)  # 6 target pairs; 6 of 9 cross pairs
    assert Counter(trial.label for trial in trials) == {1: 6, 0: 6}
    assert len({frozenset((trial.enroll, trial.test)) for trial in trials}) == 12


def test_voxceleb_reader_round_trips_the_generator(tmp_path):
    utterances, speakers = corpus()
    trials = generate_trials(utterances, speakers, num_trials=40, seed=0)
    path = write_trials(trials, tmp_path / "lists" / "trials.txt")
    lines = path.read_text().splitlines()
    assert len(lines) == 40 and lines[0].split()[0] in ("0", "1") and len(lines[0].split()) == 3
    assert read_trials(path) == trials
    with pytest.raises(FileExistsError, match="not overwritten"):
        write_trials(trials, path)
    (tmp_path / "bad.txt").write_text("1 a b\n2 a c\n")
    with pytest.raises(ValueError, match="line 2: expected `label enroll test`"):
        read_trials(tmp_path / "bad.txt")


def test_cosine_scores_and_score_file(tmp_path):
    enroll = np.array([[3.0, 0.0], [1.0, 1.0]])
    test = np.array([[0.5, 0.0], [-2.0, 0.0]])
    np.testing.assert_allclose(cosine_scores(enroll, test), [1.0, -np.sqrt(0.5)])
    trials = [Trial(1, "u1", "u2"), Trial(0, "u1", "u3")]
    embeddings = {"u1": np.array([1.0, 0.0]), "u2": np.array([2.0, 0.1]), "u3": np.array([0.0, -1.0])}
    scores = score_trials(trials, embeddings)
    np.testing.assert_allclose(scores, [2.0 / np.hypot(2.0, 0.1), 0.0], atol=1e-12)
    path = write_scores(trials, scores, tmp_path / "scores.txt")
    assert path.read_text().splitlines() == [f"u1 u2 {scores[0]:.6f} target", "u1 u3 0.000000 nontarget"]
    with pytest.raises(KeyError, match="No embedding for 1 utterances"):
        score_trials([Trial(1, "u1", "u9")], embeddings)


def hub_corpus(rng, num_speakers, per_speaker, prefix, dim=64, noise=0.15, hub_scale=2.0):
    """Utterance embeddings `speaker direction + hub * h + noise`, where half the speakers carry a shared "hub"
    direction h: their utterances score high against everyone (a per-speaker score offset)."""
    hub = np.zeros(dim)
    hub[-1] = 1.0
    embeddings, speakers = {}, []
    for index in range(num_speakers):
        direction = rng.normal(size=dim)
        direction[-1] = 0.0
        direction /= np.linalg.norm(direction)
        offset = hub_scale * hub if index % 2 else 0.0
        for number in range(per_speaker):
            embeddings[f"{prefix}{index}-{number}"] = direction + offset + noise * rng.normal(size=dim)
            speakers.append(f"{prefix}{index}")
    return embeddings, speakers


def test_score_normalisation_removes_per_speaker_offsets():
    rng = np.random.default_rng(0)
    embeddings, speakers = hub_corpus(rng, num_speakers=20, per_speaker=6, prefix="test")
    cohort_embeddings, _ = hub_corpus(rng, num_speakers=40, per_speaker=3, prefix="cohort")
    cohort = np.stack(list(cohort_embeddings.values()))
    trials = generate_trials(list(embeddings), speakers, num_trials=400, seed=0)
    labels = [trial.label for trial in trials]

    raw_eer = compute_eer(score_trials(trials, embeddings), labels)[0]
    snorm_eer = compute_eer(score_trials(trials, embeddings, cohort=cohort), labels)[0]
    asnorm_eer = compute_eer(score_trials(trials, embeddings, cohort=cohort, top_n=30), labels)[0]
    # Raw cosine: hub speakers' non-target pairs outscore the other speakers' target pairs.
    assert raw_eer > 0.15
    assert snorm_eer < raw_eer / 3 and asnorm_eer < raw_eer / 3
    with pytest.raises(ValueError, match="top_n must lie between 1 and the cohort size 120"):
        score_trials(trials, embeddings, cohort=cohort, top_n=500)
    with pytest.raises(ValueError, match="give a cohort too"):
        score_trials(trials, embeddings, top_n=5)


def original_draw_eer(batch):
    """One draw of the authors' `calculate_eer.py` (GE2E's `get_centroids`/`get_cossim` and threshold loop), transcribed
    with torch as written there."""
    all_utterances = torch.from_numpy(batch)
    N, M = batch.shape[0], batch.shape[1]
    enrollment, verification = torch.split(all_utterances, M // 2, dim=1)
    centroids = enrollment.mean(dim=1)
    num_utterances = verification.shape[1]
    utterance_centroids = (verification.sum(dim=1, keepdim=True) - verification) / (num_utterances - 1)
    cos_same = F.cosine_similarity(
        verification.reshape(N * num_utterances, -1), utterance_centroids.reshape(N * num_utterances, -1)
    )
    expanded = (
        verification.reshape(N * num_utterances, -1).unsqueeze(1).repeat(1, N, 1).reshape(N * num_utterances * N, -1)
    )
    cos_diff = F.cosine_similarity(expanded, centroids.repeat((num_utterances * N, 1))).view(N, num_utterances, N)
    cos_diff[list(range(N)), :, list(range(N))] = cos_same.view(N, num_utterances)
    sim_matrix = cos_diff + 1e-6
    diff, eer = 1, 0
    for thres in [0.01 * i for i in range(101)]:
        accepted = sim_matrix > thres
        far = (
            sum(accepted[i].float().sum() - accepted[i, :, i].float().sum() for i in range(N)) / (N - 1.0) / (M / 2) / N
        )
        frr = sum(M / 2 - accepted[i, :, i].float().sum() for i in range(N)) / (M / 2) / N
        if diff > abs(far - frr):
            diff, eer = abs(far - frr), (far + frr) / 2
    return float(eer)


def test_ge2e_draw_matches_the_authors_code():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    for spread in (0.5, 1.5, 4.0):
        batch = centres[:, None, :] + spread * rng.normal(size=(4, 50, 16))
        assert _ge2e_draw_eer(batch) == pytest.approx(original_draw_eer(batch), abs=1e-6)  # theirs sums in float32


def test_ge2e_random_eer_is_seeded():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    speakers = np.repeat([f"s{k}" for k in range(6)], 10)
    embeddings = centres[np.repeat(np.arange(6), 10)] + 1.5 * rng.normal(size=(60, 16))
    value = ge2e_random_eer(embeddings, speakers, seed=1, num_repeats=2)
    assert 0 < value < 0.5
    assert ge2e_random_eer(embeddings, speakers, seed=1, num_repeats=2) == value
    assert ge2e_random_eer(embeddings, speakers, seed=2, num_repeats=2) != value
    separated = np.eye(6)[np.repeat(np.arange(6), 10)] + 0.01 * rng.normal(size=(60, 6))
    assert ge2e_random_eer(separated, speakers, seed=0, num_repeats=1) == 0.0
    with pytest.raises(ValueError, match="draws 4 speakers but the test set has 3"):
        ge2e_random_eer(embeddings[:30], speakers[:30])


def test_draw_per_speaker_is_seeded_and_bounded():
    speakers = ["b", "a", "b", "c", "b", "a", "b"]
    drawn = draw_per_speaker(speakers, 2, seed=1)
    assert [sorted({speakers[index] for index in rows}) for rows in drawn] == [["a"], ["b"], ["c"]]
    assert [len(rows) for rows in drawn] == [2, 2, 1]
    assert all((a == b).all() for a, b in zip(drawn, draw_per_speaker(speakers, 2, seed=1)))
    assert sorted(np.concatenate(draw_per_speaker(speakers, 9, seed=0)).tolist()) == list(range(7))
    with pytest.raises(ValueError, match="At least one"):
        draw_per_speaker(speakers, 0)
