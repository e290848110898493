"""Speaker verification over fixed trial lists (paper section 4.2.3, Table 3): trial lists, cosine scoring, score
normalisation, and the authors' random GE2E-style protocol kept for comparison.

- Trials: `generate_trials` draws a balanced list deterministically from a seed over the test speakers;
  `write_trials` / `read_trials` use the VoxCeleb format (`label enroll test`, label 1 target / 0 non-target);
  `check_disjoint_speakers` refuses test speakers that were seen in training.
- Scores: `cosine_scores` between L2-normalised embeddings; `score_trials` scores a trial list, optionally with
  s-norm or adaptive s-norm against a cohort (`cohort_statistics`, `s_norm`); `write_scores` writes
  `enroll test score target|nontarget`. The metrics (EER, minDCF) are `ctal_hf.metrics.verification`.
- `ge2e_random_eer`: the authors' evaluation (their `calculate_eer.py`, from the GE2E implementation), random and not
  comparable with trial-list results; only to set numbers beside the paper's Table 3.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from math import comb
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Trial:
    """One verification trial: `label` 1 when `enroll` and `test` (utterance ids or paths) share a speaker, else 0."""

    label: int
    enroll: str
    test: str


def check_disjoint_speakers(train_speakers: Iterable[str], test_speakers: Iterable[str]) -> None:
    """Raise a `ValueError` naming the test speakers that also occur in training: verification is measured on
    speakers the model has never seen (paper section 4.2.3: LibriSpeech test-clean's 40 unseen speakers)."""
    shared = sorted({str(speaker) for speaker in train_speakers} & {str(speaker) for speaker in test_speakers})
    if shared:
        listed = ", ".join(shared[:10]) + (f" and {len(shared) - 10} more" if len(shared) > 10 else "")
        raise ValueError(
            f"{len(shared)} test speakers also occur in the training data ({listed}); verification must be scored on "
            "unseen speakers. Remove them from training or from the test set."
        )


def _spread(total: int, capacities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`total` split over slots as evenly as their `capacities` allow; the remainder of each round goes to randomly
    chosen slots, so no slot is favoured by its position."""
    counts = np.zeros(len(capacities), dtype=np.int64)
    while (left := total - counts.sum()) > 0:
        open_slots = np.flatnonzero(counts < capacities)
        share = left // len(open_slots)
        if share == 0:
            counts[rng.choice(open_slots, size=left, replace=False)] += 1
        else:
            counts[open_slots] = np.minimum(counts[open_slots] + share, capacities[open_slots])
    return counts


def _unrank_pair(rank: int, n: int) -> tuple[int, int]:
    """The `rank`-th pair `(i, j)`, `i < j < n`, in lexicographic order."""
    i = 0
    while rank >= n - 1 - i:
        rank -= n - 1 - i
        i += 1
    return i, i + 1 + rank


def _draw_nontarget_pairs(
    by_speaker: dict[str, list[str]],
    name: str,
    others: list[str],
    count: int,
    seen: set[frozenset[str]],
    rng: np.random.Generator,
) -> list[tuple[str, str]]:
    """`count` distinct (enroll, test) pairs, enroll an utterance of `name`, test one of a speaker drawn from `others`,
    none already in `seen` (in either order)."""
    pairs: list[tuple[str, str]] = []
    taken = set(seen)
    attempts = 0
    while len(pairs) < count and attempts < 20 * count + 100:
        attempts += 1
        enroll = by_speaker[name][rng.integers(len(by_speaker[name]))]
        other = by_speaker[others[rng.integers(len(others))]]
        test = other[rng.integers(len(other))]
        if frozenset((enroll, test)) not in taken:
            taken.add(frozenset((enroll, test)))
            pairs.append((enroll, test))
    if len(pairs) < count:
        # Random draws keep failing when few pairs are left: choose among the remaining ones exactly.
        remaining = [
            (enroll, test)
            for enroll in by_speaker[name]
            for other in others
            for test in by_speaker[other]
            if frozenset((enroll, test)) not in taken
        ]
        if len(remaining) < count - len(pairs):
            raise ValueError(
                f"Speaker {name} has too few distinct non-target pairs left for its share of the trials; ask for fewer "
                "trials."
            )
        pairs.extend(remaining[k] for k in rng.choice(len(remaining), size=count - len(pairs), replace=False))
    return pairs


def draw_per_speaker(speakers: Sequence[str], max_per_speaker: int, seed: int = 0) -> list[np.ndarray]:
    """Per speaker (in sorted order), up to `max_per_speaker` of its row indices `(k,)`, drawn with `seed`: the
    cohort's utterances for s-norm, the points of a t-SNE plot."""
    if max_per_speaker < 1:
        raise ValueError(f"At least one utterance per speaker must be drawn, got {max_per_speaker}.")
    speakers = np.asarray([str(speaker) for speaker in speakers])
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(speakers == name))[:max_per_speaker] for name in sorted(set(speakers))]


def generate_trials(
    utterances: Sequence[str],
    speakers: Sequence[str],
    num_trials: int,
    seed: int = 0,
    train_speakers: Iterable[str] | None = None,
) -> list[Trial]:
    """A balanced verification trial list drawn deterministically from `seed`.

    Half the trials are target trials (two different utterances of one speaker), half non-target (utterances of two
    different speakers). Target trials are spread over the speakers as evenly as their utterance pairs allow and
    non-target trials take every speaker in turn as the enrolment side (the test speaker drawn among the others), so
    every speaker occurs in the list. No unordered utterance pair occurs twice. The list depends only on the set of
    (utterance, speaker) pairs and the seed, not on the order they are given in (file listings differ between
    file systems).

    Args:
        utterances: `(num_utterances,)` utterance ids or paths, all distinct, without whitespace (the list format is
            whitespace-separated).
        speakers: `(num_utterances,)` the speaker of each utterance.
        num_trials: an even number, at least twice the number of speakers (every speaker gets a target trial and is
            the enrolment side of a non-target trial).
        seed: seed of the draw.
        train_speakers: the training speakers, if known: a `ValueError` is raised when a test speaker is among them.

    Returns:
        `num_trials` [`Trial`]s in random order.
    """
    if len(utterances) != len(speakers):
        raise ValueError(f"Got {len(utterances)} utterances but {len(speakers)} speakers; give one speaker each.")
    utterances = [str(utterance) for utterance in utterances]
    if len(set(utterances)) != len(utterances):
        raise ValueError("The utterance list contains duplicates; each utterance may be listed once.")
    spaced = [utterance for utterance in utterances if any(character.isspace() for character in utterance)]
    if spaced:
        raise ValueError(
            f"Utterance ids may not contain whitespace (the trial format is `label enroll test`): {spaced[:3]}."
        )
    by_speaker: dict[str, list[str]] = {}
    for utterance, speaker in sorted(zip(utterances, (str(speaker) for speaker in speakers))):
        by_speaker.setdefault(speaker, []).append(utterance)
    if train_speakers is not None:
        check_disjoint_speakers(train_speakers, by_speaker)
    names = sorted(by_speaker)
    if len(names) < 2:
        raise ValueError(f"Non-target trials need at least two speakers, got {len(names)}.")
    single = [name for name in names if len(by_speaker[name]) < 2]
    if single:
        raise ValueError(f"Speakers {single[:10]} have a single utterance; a target trial needs two per speaker.")
    if num_trials % 2 or num_trials < 2 * len(names):
        raise ValueError(
            f"num_trials must be even and at least {2 * len(names)} (twice the {len(names)} speakers) for a balanced "
            f"list that covers every speaker, got {num_trials}."
        )
    sizes = np.array([len(by_speaker[name]) for name in names])
    target_capacity = np.array([comb(int(size), 2) for size in sizes])
    half = num_trials // 2
    nontarget_capacity = (int(sizes.sum()) ** 2 - int((sizes**2).sum())) // 2
    if half > target_capacity.sum() or half > nontarget_capacity:
        raise ValueError(
            f"{num_trials} trials need {half} distinct target and {half} non-target pairs, but these utterances give "
            f"only {target_capacity.sum()} and {nontarget_capacity}; ask for fewer trials."
        )

    rng = np.random.default_rng(seed)
    trials = []
    for name, count, capacity in zip(names, _spread(half, target_capacity, rng), target_capacity):
        for rank in rng.choice(int(capacity), size=int(count), replace=False):
            first, second = _unrank_pair(int(rank), len(by_speaker[name]))
            trials.append(Trial(1, by_speaker[name][first], by_speaker[name][second]))

    seen: set[frozenset[str]] = set()
    for name, count in zip(names, _spread(half, np.full(len(names), half), rng)):
        others = [other for other in names if other != name]
        new_pairs = _draw_nontarget_pairs(by_speaker, name, others, int(count), seen, rng)
        seen.update(frozenset(pair) for pair in new_pairs)
        trials.extend(Trial(0, enroll, test) for enroll, test in new_pairs)
    return [trials[index] for index in rng.permutation(len(trials))]


def write_trials(trials: Iterable[Trial], path: str | os.PathLike) -> Path:
    """Write trials in the VoxCeleb format, one `label enroll test` line each; refuses to overwrite a file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; trial lists are not overwritten. Remove it or choose another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{trial.label} {trial.enroll} {trial.test}\n" for trial in trials))
    return path


def read_trials(path: str | os.PathLike) -> list[Trial]:
    """Read a VoxCeleb-format trial list (`label enroll test` per line, label 1 target / 0 non-target; blank lines
    skipped), e.g. `veri_test2.txt` or one written by [`write_trials`]."""
    trials = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise ValueError(
                f"{path}, line {number}: expected `label enroll test` with label 1 (target) or 0 (non-target), got "
                f"{line!r}."
            )
        trials.append(Trial(int(fields[0]), fields[1], fields[2]))
    if not trials:
        raise ValueError(f"{path} holds no trials.")
    return trials


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    """`(..., D)` embeddings scaled to unit Euclidean norm along the last axis."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("An embedding is all zeros; its cosine similarity is undefined.")
    return embeddings / norms


def cosine_scores(enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `enroll` `(N, D)` with the same row of `test` `(N, D)`: `(N,)` scores."""
    return np.einsum("nd,nd->n", l2_normalize(enroll), l2_normalize(test))


def cohort_statistics(
    embeddings: np.ndarray, cohort: np.ndarray, top_n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each embedding's cosine scores against a cohort (for [`s_norm`]).

    Args:
        embeddings: `(U, D)` utterance embeddings.
        cohort: `(C, D)` cohort embeddings (e.g. the mean embedding of each training speaker).
        top_n: adaptive s-norm: use only the `top_n` highest cohort scores of each utterance (its closest impostors);
            `None` uses the whole cohort (plain s-norm).

    Returns:
        `(mean, std)`, each `(U,)`.
    """
    scores = l2_normalize(embeddings) @ l2_normalize(cohort).T  # (U, C)
    if top_n is not None:
        if not 1 <= top_n <= scores.shape[1]:
            raise ValueError(f"top_n must lie between 1 and the cohort size {scores.shape[1]}, got {top_n}.")
        scores = -np.sort(-scores, axis=1)[:, :top_n]
    return scores.mean(axis=1), scores.std(axis=1)


def s_norm(
    scores: np.ndarray, enroll_stats: tuple[np.ndarray, np.ndarray], test_stats: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Symmetric score normalisation: `0.5 * ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t)` per trial, with the cohort
    statistics `(mean, std)` `(N,)` of each trial's enrolment and test utterance (see [`cohort_statistics`])."""
    (enroll_mean, enroll_std), (test_mean, test_std) = enroll_stats, test_stats
    if (np.asarray(enroll_std) == 0).any() or (np.asarray(test_std) == 0).any():
        raise ValueError("A cohort score spread is zero; use a larger cohort or a larger top_n.")
    return 0.5 * ((scores - enroll_mean) / enroll_std + (scores - test_mean) / test_std)


def score_trials(
    trials: Sequence[Trial],
    embeddings: Mapping[str, np.ndarray],
    cohort: np.ndarray | None = None,
    top_n: int | None = None,
) -> np.ndarray:
    """Cosine scores `(num_trials,)` of a trial list, s-normalised against `cohort` `(C, D)` when given (adaptive
    s-norm with `top_n`).

    Args:
        trials: the trials to score.
        embeddings: utterance id -> `(D,)` embedding, for every utterance the trials name.
        cohort: `(C, D)` cohort embeddings, from speakers outside the test set (e.g. training speakers).
        top_n: closest cohort members used per utterance (adaptive s-norm); `None` uses all of them.
    """
    names = sorted({name for trial in trials for name in (trial.enroll, trial.test)})
    missing = [name for name in names if name not in embeddings]
    if missing:
        raise KeyError(f"No embedding for {len(missing)} utterances named in the trials, e.g. {missing[:3]}.")
    row = {name: index for index, name in enumerate(names)}
    matrix = np.stack([np.asarray(embeddings[name], dtype=np.float64) for name in names])
    enroll = np.array([row[trial.enroll] for trial in trials])
    test = np.array([row[trial.test] for trial in trials])
    scores = cosine_scores(matrix[enroll], matrix[test])
    if cohort is None:
        if top_n is not None:
            raise ValueError("top_n selects cohort members; give a cohort too.")
        return scores
    mean, std = cohort_statistics(matrix, cohort, top_n)
    return s_norm(scores, (mean[enroll], std[enroll]), (mean[test], std[test]))


def write_scores(trials: Sequence[Trial], scores: Sequence[float], path: str | os.PathLike) -> Path:
    """Write one `enroll test score target|nontarget` line per trial; refuses to overwrite a file."""
    if len(trials) != len(scores):
        raise ValueError(f"Got {len(trials)} trials but {len(scores)} scores.")
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; score files are not overwritten. Remove it or choose another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            f"{trial.enroll} {trial.test} {score:.6f} {'target' if trial.label else 'nontarget'}\n"
            for trial, score in zip(trials, scores)
        )
    )
    return path


def _ge2e_draw_eer(batch: np.ndarray) -> float:
    """EER of one GE2E draw `(N speakers, M utterances, D)`, computed as in the authors' code (see
    [`ge2e_random_eer`])."""
    num_speakers, half = batch.shape[0], batch.shape[1] // 2
    enroll, verify = batch[:, :half], batch[:, half:]  # (N, M/2, D) each
    centroids = l2_normalize(enroll.mean(axis=1))  # (N, D)
    leave_one_out = l2_normalize((verify.sum(axis=1, keepdims=True) - verify) / (half - 1))  # (N, M/2, D)
    verify = l2_normalize(verify)
    same = np.eye(num_speakers, dtype=bool)[:, None, :]  # (N, 1, N): each utterance's own speaker
    similarity = np.einsum("imd,jd->imj", verify, centroids)  # (N, M/2, N)
    own = np.einsum("imd,imd->im", verify, leave_one_out)
    similarity = np.where(same, own[:, :, None], similarity) + 1e-6
    accepted = similarity[None] > 0.01 * np.arange(101)[:, None, None, None]  # (101 thresholds, N, M/2, N)
    false_accepts = (accepted & ~same).sum(axis=(1, 2, 3)) / ((num_speakers - 1) * half * num_speakers)
    false_rejects = (~accepted & same).sum(axis=(1, 2, 3)) / (half * num_speakers)
    gaps = np.abs(false_accepts - false_rejects)
    best = int(np.argmin(gaps))
    # As in that code, which starts from a gap of 1 and EER 0: no threshold below a gap of 1 leaves EER 0.
    return float((false_accepts[best] + false_rejects[best]) / 2) if gaps[best] < 1 else 0.0


def ge2e_random_eer(
    embeddings: np.ndarray,
    speakers: Sequence[str],
    seed: int = 0,
    num_speakers: int = 4,
    num_utterances: int = 50,
    num_repeats: int = 10,
) -> float:
    """The authors' random GE2E-style EER (their `calculate_eer.py`, forked from the PyTorch GE2E implementation),
    for comparison with the paper's Table 3 only: its trials are random and differ between runs and papers, and its
    EER is read off a 0.01 threshold grid, so it is not comparable with trial-list EERs.

    Per repeat, once per speaker of the test set: draw `num_speakers` speakers without replacement and
    `num_utterances` utterances of each with replacement; the first half enrols (speaker centroid), the second half
    verifies. Same-speaker scores are, as in that code, the cosine between a verification utterance and the centroid of
    the *other verification* utterances of its speaker (not the enrolment centroid); other-speaker scores use the
    enrolment centroids; 1e-6 is added to every score. Over thresholds 0.00, 0.01, ..., 1.00 (accept when score >
    threshold) the one with the smallest |FAR - FRR| (the first on ties) gives EER = (FAR + FRR) / 2 (0 when no gap is
    below 1, as there). The EERs are averaged over the draws of a repeat, then over `num_repeats` repeats. Draws use
    `numpy.random.default_rng(seed)`.

    Args:
        embeddings: `(U, D)` utterance embeddings.
        speakers: `(U,)` speaker of each utterance.

    Returns:
        The averaged EER as a fraction.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if len(embeddings) != len(speakers):
        raise ValueError(f"Got {len(embeddings)} embeddings but {len(speakers)} speakers.")
    if num_utterances < 4 or num_utterances % 2:
        raise ValueError(f"num_utterances must be even and at least 4, got {num_utterances}.")
    if num_speakers < 2:
        raise ValueError(f"num_speakers must be at least 2, got {num_speakers}.")
    names = sorted({str(speaker) for speaker in speakers})
    if len(names) < num_speakers:
        raise ValueError(f"The protocol draws {num_speakers} speakers but the test set has {len(names)}.")
    rows = {name: np.flatnonzero(np.asarray([str(speaker) for speaker in speakers]) == name) for name in names}
    rng = np.random.default_rng(seed)
    repeat_eers = []
    for _ in range(num_repeats):
        draw_eers = []
        for _ in names:
            chosen = rng.choice(len(names), size=num_speakers, replace=False)
            batch = np.stack([embeddings[rng.choice(rows[names[k]], size=num_utterances)] for k in chosen])
            draw_eers.append(_ge2e_draw_eer(batch))
        repeat_eers.append(np.mean(draw_eers))
    return float(np.mean(repeat_eers))


__all__ = [
    "Trial",
    "check_disjoint_speakers",
    "cohort_statistics",
    "cosine_scores",
    "draw_per_speaker",
    "generate_trials",
    "ge2e_random_eer",
    "l2_normalize",
    "read_trials",
    "s_norm",
    "score_trials",
    "write_scores",
    "write_trials",
]
