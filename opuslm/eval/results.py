"""Gather every `score.json` below an experiment directory into markdown tables (RESULTS.md).

One table per (task, test set), one row per decode directory. The test set is the score's
`test_set` field if it has one, else its directory name without the recipe's `decode_<task>_`
prefix. Decoding settings come from a `decode_config.yaml` (or else `config.yaml`) next to the
score; when that file has a section named after the task, only that section is shown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from opuslm.eval.asr_scoring import ScoringError

SETTINGS_FILES = ("decode_config.yaml", "config.yaml")
# Column headers for the fields the scorers write; other fields keep their own name.
HEADERS = {
    "wer": "WER",
    "cer": "CER",
    "sub": "Sub",
    "del": "Del",
    "ins": "Ins",
    "ref_wer": "ref WER",
    "ref_cer": "ref CER",
    "wer_ratio": "WER ratio",
    "duration_ratio": "dur ratio",
    "speaker_similarity": "spk sim",
    "mos": "MOS",
    "ref_mos": "ref MOS",
    "num_utts": "#utts",
    "num_ref_words": "#words",
    "num_missing_hyps": "#missing",
    "num_missing_syn": "#missing",
}
# Identify the table, not a column.
TABLE_KEYS = ("task", "test_set")


@dataclass(frozen=True)
class ScoreEntry:
    """One score.json: where it is, what it says, and the decoding settings next to it."""

    decode_dir: str
    task: str
    test_set: str
    fields: dict[str, object]
    settings: str


def _flatten(config: object, prefix: str = "") -> list[str]:
    """Nested YAML mapping -> ["a.b=1", ...] in file order."""
    if not isinstance(config, dict):
        return [f"{prefix}={config}"] if prefix else [str(config)]
    items = []
    for key, value in config.items():
        items += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return items


def read_settings(directory: Path, task: str) -> str:
    """The decoding settings next to a score as one `key=value, ...` line ("" if none)."""
    for name in SETTINGS_FILES:
        path = directory / name
        if path.is_file():
            try:
                config = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as e:
                raise ScoringError(f"{path}: not valid YAML: {e}") from None
            if isinstance(config, dict) and isinstance(config.get(task), dict):
                config = config[task]
            return ", ".join(_flatten(config)) if config else ""
    return ""


def load_entry(path: Path, exp_dir: Path) -> ScoreEntry:
    """Read one score.json below `exp_dir`."""
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ScoringError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("task"), str):
        raise ScoringError(f"{path}: expected a JSON object with a 'task' field")
    task = fields["task"]
    directory = path.parent
    test_set = fields.get("test_set") or directory.name.removeprefix(f"decode_{task}_")
    return ScoreEntry(
        decode_dir=directory.relative_to(exp_dir).as_posix() if directory != exp_dir else ".",
        task=task,
        test_set=str(test_set),
        fields={k: v for k, v in fields.items() if k not in TABLE_KEYS},
        settings=read_settings(directory, task),
    )


def find_scores(exp_dir: str | os.PathLike) -> list[ScoreEntry]:
    """Every score.json below `exp_dir`, sorted by task, test set and decode directory."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise ScoringError(f"{exp_dir}: not a directory")
    entries = [load_entry(path, exp_dir) for path in exp_dir.rglob("score.json")]
    return sorted(entries, key=lambda e: (e.task, e.test_set, e.decode_dir))


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    # A pipe would end the markdown cell.
    return str(value).replace("|", "\\|")


def _table(entries: list[ScoreEntry]) -> list[str]:
    # Columns in the order the scorers write their fields, optional ones where first seen.
    columns: list[str] = []
    for entry in entries:
        columns += [key for key in entry.fields if key not in columns]
    show_settings = any(entry.settings for entry in entries)
    headers = ["decode dir", *(HEADERS.get(c, c) for c in columns)]
    headers += ["settings"] if show_settings else []
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for entry in entries:
        cells = [entry.decode_dir, *(_cell(entry.fields.get(c)) for c in columns)]
        cells += [_cell(entry.settings)] if show_settings else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_results(title: str, entries: Iterable[ScoreEntry]) -> str:
    """RESULTS.md: a heading per (task, test set) and its table; rates in percent."""
    groups: dict[tuple[str, str], list[ScoreEntry]] = {}
    for entry in entries:
        groups.setdefault((entry.task, entry.test_set), []).append(entry)
    lines = [f"# RESULTS: {title}", ""]
    lines += ["Error rates in percent. Written by `python -m opuslm.bin.results`.", ""]
    for (task, test_set), group in groups.items():
        lines += [f"## {task}: {test_set}", "", *_table(group), ""]
    return "\n".join(lines)
