"""IEMOCAP in its release layout (the emotion corpus of paper section 4.2, Table 1).

The release holds five sessions, each with two actors (one female, one male):

    Session1/sentences/wav/<dialog>/<utterance>.wav
    Session1/dialog/EmoEvaluation/<dialog>.txt      one block per utterance, starting with the line
                                                    "[start - end]<TAB>UTTERANCE_ID<TAB>emo<TAB>[V, A, D]"
                                                    and followed by the annotators' lines ("C-E2: ...", "A-E3: ..."),
                                                    after a "% ..." header
    Session1/dialog/transcriptions/<dialog>.txt     "UTTERANCE_ID [start-end]: text" lines, among lines that are
                                                    not utterances
    ...
    Session5/...

Utterance ids read `Ses01F_impro01_F000` or `Ses01F_script01_1_M012`: session 1, dialog `Ses01F_impro01`, spoken by
the session's female (`_F...`) or male (`_M...`) actor. The speaker is the session plus that letter (`Ses01F`,
`Ses01M`); the `F`/`M` after the session number only says who wore the motion-capture markers.

The standard 4-class setting keeps neutral, happy (with excited merged into it), angry and sad: 5,531 utterances
(1,708 / 1,636 / 1,103 / 1,084) of the 10,039; every other label (frustrated, surprised, fear, disgust, other, and
`xxx` for no majority) is dropped and counted.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import datasets
from transformers.utils import logging


logger = logging.get_logger(__name__)

# The standard 4-class set; every other code is dropped.
IEMOCAP_FOUR_CLASSES: dict[str, str] = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}

_EVALUATION_LINE = re.compile(
    r"^\[(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\]\s+(?P<id>Ses\S+)\s+(?P<emotion>\S+)\s+"
    r"\[(?P<valence>[-\d.]+),\s*(?P<arousal>[-\d.]+),\s*(?P<dominance>[-\d.]+)\]\s*$"
)
_TRANSCRIPTION_LINE = re.compile(r"^(?P<id>Ses\S+)\s+\[[\d.]+-[\d.]+\]:\s?(?P<text>.*)$")
_UTTERANCE_ID = re.compile(r"^Ses(?P<session>\d\d)[FM]_(?P<rest>.+)_(?P<gender>[FM])\d+$")


def is_iemocap_folder(path: str | os.PathLike) -> bool:
    """Whether `path` holds IEMOCAP in its release layout (`Session*/dialog/EmoEvaluation/`)."""
    path = Path(path)
    return path.is_dir() and any(path.glob("Session*/dialog/EmoEvaluation"))


def _evaluation_files(root: Path, sessions: list[str] | None) -> list[Path]:
    folders = sorted(folder for folder in root.glob("Session*") if folder.is_dir())
    if sessions is not None:
        unknown = sorted(set(sessions) - {folder.name for folder in folders})
        if unknown:
            raise ValueError(
                f"IEMOCAP folder '{root}' has no session {unknown}; its sessions are {[f.name for f in folders]}."
            )
        folders = [folder for folder in folders if folder.name in sessions]
    # Only the files directly in EmoEvaluation/: its subfolders (Categorical/, Attribute/, Self-evaluation/) hold the
    # individual annotators' files. "._*" files are macOS metadata left in some copies.
    return [
        path
        for folder in folders
        for path in sorted((folder / "dialog" / "EmoEvaluation").glob("*.txt"))
        if not path.name.startswith("._")
    ]


def read_iemocap_evaluation(path: str | os.PathLike) -> list[dict]:
    """The utterance lines of one `EmoEvaluation/<dialog>.txt` file: `id`, `emotion` (the majority code, e.g.
    `"exc"`), `start`, `end` (seconds), `valence`, `arousal`, `dominance`. Header, annotator and blank lines are
    skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        match = _EVALUATION_LINE.match(line.strip())
        if match:
            rows.append({
                "id": match["id"],
                "emotion": match["emotion"],
                "start": float(match["start"]),
                "end": float(match["end"]),
                "valence": float(match["valence"]),
                "arousal": float(match["arousal"]),
                "dominance": float(match["dominance"]),
            })
    return rows


def read_iemocap_transcriptions(path: str | os.PathLike) -> dict[str, str]:
    """`{utterance id: text}` from one `transcriptions/<dialog>.txt` file; lines that are not `ID [start-end]: text`
    are skipped."""
    texts = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        match = _TRANSCRIPTION_LINE.match(line.strip())
        if match:
            texts[match["id"]] = match["text"].strip()
    return texts


def map_iemocap_labels(
    rows: list[dict], label_map: Mapping[str, str] | None = IEMOCAP_FOUR_CLASSES
) -> tuple[list[dict], dict[str, int]]:
    """Sets each row's `label` to `label_map[emotion]` and drops the rows whose emotion is not in the map.

    Returns:
        The kept rows, and the number of dropped rows per emotion code. `label_map=None` keeps every row with its
        code as the label.
    """
    if label_map is None:
        return [{**row, "label": row["emotion"]} for row in rows], {}
    kept = [{**row, "label": label_map[row["emotion"]]} for row in rows if row["emotion"] in label_map]
    dropped = Counter(row["emotion"] for row in rows if row["emotion"] not in label_map)
    return kept, dict(sorted(dropped.items()))


def load_iemocap_folder(
    root: str | os.PathLike,
    split: str | None = None,
    *,
    label_map: Mapping[str, str] | None = IEMOCAP_FOUR_CLASSES,
    skip_unreadable: bool = False,
) -> datasets.Dataset:
    """Loads IEMOCAP from its release layout into a Dataset.

    Args:
        root: the folder holding `Session1` ... `Session5`.
        split: a session (`"Session1"`) or several separated by commas; default all.
        label_map: emotion code -> label; rows with other codes are dropped and their count per code is logged.
            Default: the standard 4 classes (`IEMOCAP_FOUR_CLASSES`, excited merged into happy); `None` keeps every
            utterance with its code.
        skip_unreadable: drop (and count) utterances whose audio file or transcript is missing instead of raising.

    Returns:
        A Dataset with columns `id`, `audio` (absolute path), `text`, `label`, `emotion` (the original code),
        `session` (`"Session1"`), `speaker_id` (`"Ses01F"`), `gender` (`"F"`/`"M"`), `dialog`, `start`, `end`,
        `valence`, `arousal`, `dominance`, in the order of the sessions, dialog files and their lines.
    """
    root = Path(root).expanduser().resolve()
    sessions = [part.strip() for part in split.split(",") if part.strip()] if split else None
    files = _evaluation_files(root, sessions)
    if not files:
        raise ValueError(
            f"No 'Session*/dialog/EmoEvaluation/*.txt' file under '{root}': not IEMOCAP in its release layout "
            "(Session1..5 with sentences/wav/, dialog/EmoEvaluation/ and dialog/transcriptions/)."
        )
    rows = []
    for evaluation_file in files:
        session_folder = evaluation_file.parents[2]
        dialog = evaluation_file.stem
        transcription_file = session_folder / "dialog" / "transcriptions" / evaluation_file.name
        texts = read_iemocap_transcriptions(transcription_file) if transcription_file.is_file() else {}
        for row in read_iemocap_evaluation(evaluation_file):
            parts = _UTTERANCE_ID.match(row["id"])
            if parts is None:
                raise ValueError(
                    f"{evaluation_file}: utterance id {row['id']!r} is not of the form 'Ses01F_<dialog>_F000'."
                )
            rows.append({
                **row,
                "audio": str(session_folder / "sentences" / "wav" / dialog / f"{row['id']}.wav"),
                "text": texts.get(row["id"]),
                "session": session_folder.name,
                "speaker_id": f"Ses{parts['session']}{parts['gender']}",
                "gender": parts["gender"],
                "dialog": dialog,
            })
    total = len(rows)
    rows, dropped = map_iemocap_labels(rows, label_map)
    if dropped:
        logger.warning(
            f"IEMOCAP: kept {len(rows)} of {total} utterances; dropped {sum(dropped.values())} with other labels "
            f"({', '.join(f'{code}: {count}' for code, count in dropped.items())})."
        )
    problems = {
        "without a transcript line": [row for row in rows if row["text"] is None],
        "without an audio file": [row for row in rows if not os.path.isfile(row["audio"])],
    }
    for problem, bad in problems.items():
        if not bad:
            continue
        examples = ", ".join(row["id"] for row in bad[:3])
        if not skip_unreadable:
            raise FileNotFoundError(
                f"IEMOCAP folder '{root}': {len(bad)} utterances {problem} (e.g. {examples}); check the copy of the "
                "corpus or pass skip_unreadable=True to skip them."
            )
        logger.warning(f"IEMOCAP: skipped {len(bad)} utterances {problem} (e.g. {examples}).")
        bad_ids = {row["id"] for row in bad}
        rows = [row for row in rows if row["id"] not in bad_ids]
    if not rows:
        raise ValueError(f"IEMOCAP folder '{root}' has no utterance with a label in {sorted(label_map or {})}.")
    columns = ["id", "audio", "text", "label", "emotion", "session", "speaker_id", "gender", "dialog", "start", "end",
               "valence", "arousal", "dominance"]
    return datasets.Dataset.from_dict({column: [row[column] for row in rows] for column in columns})


__all__ = [
    "IEMOCAP_FOUR_CLASSES",
    "is_iemocap_folder",
    "load_iemocap_folder",
    "map_iemocap_labels",
    "read_iemocap_evaluation",
    "read_iemocap_transcriptions",
]
