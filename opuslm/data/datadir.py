"""Kaldi-style data directories: read and write table files, validate them, fix them.

A data directory (DESIGN.md section 3) is a set of table files, one `<id> <value>` entry per line:
`wav.scp`, `text`, `utt2spk`, `spk2utt`, optional `segments` (then `wav.scp` is keyed by recording
id) and `utt2dur`, plus any other `utt2*`, `reco2*` or `spk2gender` table. Every file is sorted by
id in C locale (`LC_ALL=C sort`, which is Python's code-point order for UTF-8), ids are unique,
valid UTF-8 and free of whitespace, control and invisible characters.

This module is the single implementation of the rules: `utils/validate_data_dir.sh` and
`utils/fix_data_dir.sh` call `opuslm.bin.validate_data_dir` / `fix_data_dir`, which call it.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from opuslm.fileio import write_text_atomic

# Reporting order; tables not listed here (other `utt2*` files) come after these.
KNOWN_TABLES = (
    "wav.scp",
    "segments",
    "text",
    "utt2spk",
    "spk2utt",
    "utt2dur",
    "feats.scp",
    "reco2dur",
    "reco2file_and_channel",
    "spk2gender",
)
RECORDING_TABLES = ("reco2dur", "reco2file_and_channel")
SPEAKER_TABLES = ("spk2gender",)
DEFAULT_REQUIRED = ("wav.scp", "text", "utt2spk")
BACKUP_DIR = ".backup"

# A line without trailing whitespace that starts with its id: `id`, or `id value`.
_KEY_VALUE = re.compile(r"([^ \t]+)[ \t]*(.*)")
# Kaldi splits fields at spaces and tabs only; any other whitespace (NBSP, CR, ...) in an id is an
# error. For str patterns `\s` is exactly the characters for which str.isspace() is true.
_WHITESPACE = re.compile(r"\s")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ARK_OFFSET = re.compile(r"(.+):[0-9]+")
_BOM = "\ufeff"


def _hidden_character(text: str) -> bool:
    """True when `text` holds a control character (NUL, ESC, ...), which breaks shell tools, or
    an invisible format character (zero-width space, BOM, ...), which makes two ids look alike."""
    if text.isascii():
        return _ASCII_CONTROL.search(text) is not None
    return any(unicodedata.category(c) in ("Cc", "Cf") for c in text)


class DataDirError(ValueError):
    """A data directory or table file that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Problem:
    """One rule violation: `file` is the table's name inside the data directory (e.g. `text`),
    `line` its 1-based line number, or None when the problem concerns the file as a whole."""

    file: str
    line: int | None
    message: str

    def format(self, directory: str | os.PathLike | None = None) -> str:
        """`file:line: message` (`file: message` without a line), file prefixed by `directory`."""
        where = self.file if directory is None else os.path.join(directory, self.file)
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"

    def __str__(self) -> str:
        return self.format()


class _Entry(NamedTuple):
    line: int
    key: str
    value: str


@dataclass
class _Table:
    """A table file read leniently: the well-formed entries (duplicates included, in file order),
    the problems of the lines that are not, and the number of lines in the file."""

    entries: list[_Entry]
    problems: list[Problem]
    num_lines: int


def _scan_table(path: Path, name: str) -> _Table:
    """Parse `path` line by line, collecting problems instead of stopping at the first one."""
    entries: list[_Entry] = []
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    line_number = 0
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\n")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad = f"byte {raw[e.start]:#04x} at column {e.start + 1}"
                problems.append(Problem(name, line_number, f"not valid UTF-8 ({bad})"))
                continue
            if line_number == 1 and line.startswith(_BOM):
                # Editors on Windows add it; Kaldi tools would read it as part of the first id.
                message = "starts with a UTF-8 byte order mark (BOM); save the file without it"
                problems.append(Problem(name, line_number, message))
                line = line[len(_BOM) :]
            if line.endswith("\r"):
                # Kept as an entry (fixing rewrites it without the CR), but every Kaldi tool would
                # read the CR as part of the last field.
                problems.append(
                    Problem(name, line_number, "Windows line ending (CR LF); convert with dos2unix")
                )
            line = line.rstrip()
            if not line:
                problems.append(Problem(name, line_number, "empty line"))
                continue
            if line[0] in " \t":
                problems.append(Problem(name, line_number, "line starts with whitespace (no id)"))
                continue
            key, value = _KEY_VALUE.fullmatch(line).groups()
            if _WHITESPACE.search(key):
                problems.append(Problem(name, line_number, f"id {key!r} contains whitespace"))
                continue
            if _hidden_character(key):
                message = f"id {key!r} contains a control or invisible character"
                problems.append(Problem(name, line_number, message))
                continue
            if key in first_line:
                message = f"duplicate id {key!r} (first on line {first_line[key]})"
                problems.append(Problem(name, line_number, message))
            else:
                first_line[key] = line_number
            entries.append(_Entry(line_number, key, value))
    return _Table(entries, problems, num_lines=line_number)


def read_table(path: str | os.PathLike) -> dict[str, str]:
    """Read a Kaldi table file into {id: rest of the line}, in file order.

    Raises DataDirError naming `file:line` for lines that are not valid UTF-8, empty, without an
    id, with whitespace in the id, or with a duplicate id. The value may be empty.
    """
    table = _scan_table(Path(path), str(path))
    if table.problems:
        more = len(table.problems) - 1
        raise DataDirError(str(table.problems[0]) + (f" (and {more} more)" if more else ""))
    return {entry.key: entry.value for entry in table.entries}


def _table_text(table: Mapping[str, str] | Iterable[tuple[str, str]], path: Path) -> str:
    items = table.items() if isinstance(table, Mapping) else table
    lines = []
    for key, value in items:
        if not key or _WHITESPACE.search(key) or _hidden_character(key):
            raise DataDirError(
                f"{path}: id {key!r} is empty or contains whitespace or a control or invisible "
                "character"
            )
        if "\n" in value:
            raise DataDirError(f"{path}: value of {key!r} contains a newline")
        lines.append(f"{key} {value}\n" if value else f"{key}\n")
    return "".join(lines)


def write_table(
    path: str | os.PathLike, table: Mapping[str, str] | Iterable[tuple[str, str]]
) -> None:
    """Write `id value` lines atomically (temp file, then rename), in the order given.

    A sorted file needs `sorted(table.items())`; an empty value writes the id alone.
    """
    write_text_atomic(path, _table_text(table, Path(path)))


def _existing_dir(path: str | os.PathLike) -> Path:
    directory = Path(path)
    if not directory.is_dir():
        raise DataDirError(f"{directory}: not a directory")
    return directory


def _table_names(directory: Path) -> list[str]:
    """The table files present in `directory`, in reporting order."""
    known = [name for name in KNOWN_TABLES if (directory / name).is_file()]
    others = sorted(
        p.name for p in directory.glob("utt2*") if p.is_file() and p.name not in KNOWN_TABLES
    )
    return known + others


def _role(name: str, has_segments: bool) -> str:
    """What a table's ids are: "utterance", "recording", "speaker", or "spk2utt"."""
    if name == "spk2utt":
        return "spk2utt"
    if name in SPEAKER_TABLES:
        return "speaker"
    if name in RECORDING_TABLES or (name == "wav.scp" and has_segments):
        return "recording"
    return "utterance"


def parse_segment(value: str) -> tuple[str, float, float]:
    """`recording start end` -> fields; end -1 means "to the end of the recording" (Kaldi)."""
    fields = value.split()
    if len(fields) != 3:
        raise ValueError(f"expected 'recording start end', got {value!r}")
    recording, start_s, end_s = fields
    try:
        start, end = float(start_s), float(end_s)
    except ValueError:
        raise ValueError(f"start/end {start_s!r} {end_s!r} are not numbers") from None
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"start/end {start_s!r} {end_s!r} are not finite numbers")
    if start < 0:
        raise ValueError(f"negative start {start_s}")
    if end != -1 and end <= start:
        raise ValueError(f"end {end_s} <= start {start_s}")
    return recording, start, end


def _recording(segment: str) -> str:
    """The recording id of a segments value (`recording start end`); "" for an empty value."""
    return (segment.split() or [""])[0]


def _value_problem(name: str, entry: _Entry) -> str | None:
    """The rule an entry's value breaks, if any (the same rules decide validation and fixing)."""
    key, value = entry.key, entry.value
    if name == "text" and not value:
        return f"empty transcript for {key!r}"
    if name == "utt2spk":
        if not value:
            return f"no speaker for {key!r}"
        if _WHITESPACE.search(value):
            return f"speaker id {value!r} of {key!r} contains whitespace"
        if _hidden_character(value):
            return f"speaker id {value!r} of {key!r} contains a control or invisible character"
    if name == "spk2utt" and not value:
        return f"speaker {key!r} has no utterances"
    if name == "wav.scp" and not value:
        return f"no audio for {key!r}"
    if name in ("utt2dur", "reco2dur"):
        try:
            duration = float(value)
        except ValueError:
            duration = -1.0
        if not (math.isfinite(duration) and duration > 0):
            return f"duration {value!r} of {key!r} is not a positive number"
    if name == "segments":
        try:
            parse_segment(value)
        except ValueError as e:
            return f"segment {key!r}: {e}"
    return None


def _audio_is_missing(value: str) -> bool:
    """True for a plain path (or Kaldi `file.ark:offset`) that is not a file; pipes never run.

    Relative paths are relative to the working directory, as in Kaldi recipes.
    """
    if value.endswith("|") or os.path.isfile(value):
        return False
    offset = _ARK_OFFSET.fullmatch(value)
    return not (offset and os.path.isfile(offset.group(1)))


def _sort_problem(name: str, entries: Sequence[_Entry]) -> Problem | None:
    for previous, entry in zip(entries, entries[1:]):
        if entry.key < previous.key:
            message = (
                f"not sorted: {entry.key!r} comes after {previous.key!r} "
                "(sort with LC_ALL=C sort, or run utils/fix_data_dir.sh)"
            )
            return Problem(name, entry.line, message)
    return None


def _first_lines(entries: Iterable[_Entry]) -> dict[str, int]:
    first: dict[str, int] = {}
    for entry in entries:
        first.setdefault(entry.key, entry.line)
    return first


def _speaker_problems(utt2spk: list[_Entry], spk2utt: list[_Entry]) -> list[Problem]:
    """spk2utt must list exactly the utterances of each speaker that utt2spk names."""
    speaker_of = {entry.key: entry.value for entry in utt2spk}
    listed_on: dict[str, int] = {}
    problems = []
    for entry in spk2utt:
        for uttid in entry.value.split():
            if uttid in listed_on:
                message = f"utterance {uttid!r} listed twice (also on line {listed_on[uttid]})"
            elif uttid not in speaker_of:
                message = f"utterance {uttid!r} of speaker {entry.key!r} is not in utt2spk"
            elif speaker_of[uttid] != entry.key:
                message = (
                    f"utterance {uttid!r} is listed under speaker {entry.key!r} "
                    f"but utt2spk says {speaker_of[uttid]!r}"
                )
            else:
                message = ""
            listed_on.setdefault(uttid, entry.line)
            if message:
                problems.append(Problem("spk2utt", entry.line, message))
    for entry in utt2spk:
        if entry.key not in listed_on:
            message = (
                f"utterance {entry.key!r} of speaker {entry.value!r} (utt2spk line {entry.line}) "
                "is missing"
            )
            problems.append(Problem("spk2utt", None, message))
    return problems


def validate_data_dir(
    path: str | os.PathLike,
    require: Sequence[str] = DEFAULT_REQUIRED,
    check_audio_exists: bool = True,
) -> list[Problem]:
    """Check a data directory against the rules; an empty list means it is valid.

    Rules: required files exist and are not empty; every table is valid UTF-8 without a byte
    order mark, sorted (C locale), with unique ids free of whitespace; every utterance is in every
    utterance-keyed table; transcripts are not empty; plain audio paths exist (pipes are not
    executed; skipped when `check_audio_exists` is False); spk2utt agrees with utt2spk; segments
    name a recording of wav.scp and end after they start; durations are positive. Problems are
    ordered by file, then line.
    """
    directory = _existing_dir(path)
    names = _table_names(directory)
    has_segments = "segments" in names
    problems = [
        Problem(name, None, "required file is missing") for name in require if name not in names
    ]
    tables = {name: _scan_table(directory / name, name) for name in names}
    problems += [
        Problem(name, None, "required file is empty (no utterances)")
        for name in require
        if name in tables and tables[name].num_lines == 0
    ]

    for name, table in tables.items():
        problems += table.problems
        sort_problem = _sort_problem(name, table.entries)
        problems += [sort_problem] if sort_problem else []
        for entry in table.entries:
            message = _value_problem(name, entry)
            if message:
                problems.append(Problem(name, entry.line, message))
            elif name == "wav.scp" and check_audio_exists and _audio_is_missing(entry.value):
                problems.append(Problem(name, entry.line, f"audio file not found: {entry.value}"))

    utterance_tables = [n for n in names if _role(n, has_segments) == "utterance"]
    problems += _missing_utterance_problems({n: tables[n].entries for n in utterance_tables})

    if has_segments and "wav.scp" in tables:
        recordings = {entry.key for entry in tables["wav.scp"].entries}
        for entry in tables["segments"].entries:
            recording = _recording(entry.value)
            if _value_problem("segments", entry) is None and recording not in recordings:
                message = f"segment {entry.key!r} refers to unknown recording {recording!r}"
                problems.append(Problem("segments", entry.line, message))

    if "utt2spk" in tables and "spk2utt" not in tables:
        problems.append(Problem("spk2utt", None, "missing (utt2spk exists); run fix_data_dir"))
    elif "spk2utt" in tables and "utt2spk" not in tables:
        problems.append(Problem("utt2spk", None, "missing (spk2utt exists)"))
    elif "spk2utt" in tables:
        problems += _speaker_problems(tables["utt2spk"].entries, tables["spk2utt"].entries)

    files = dict.fromkeys([*KNOWN_TABLES, *names, *require])
    order = {name: rank for rank, name in enumerate(files)}
    return sorted(problems, key=lambda p: (order[p.file], p.line is None, p.line or 0))


def _missing_utterance_problems(entries_by_table: dict[str, list[_Entry]]) -> list[Problem]:
    """One problem per (utterance-keyed table, utterance another such table lists but it lacks)."""
    first_seen: dict[str, tuple[str, int]] = {}
    for name, entries in entries_by_table.items():
        for uttid, line in _first_lines(entries).items():
            first_seen.setdefault(uttid, (name, line))
    problems = []
    for name, entries in entries_by_table.items():
        present = {entry.key for entry in entries}
        if len(present) == len(first_seen):
            continue
        for uttid, (source, line) in first_seen.items():
            if uttid not in present:
                message = f"no entry for utterance {uttid!r} (listed in {source}:{line})"
                problems.append(Problem(name, None, message))
    return problems


def _usable(name: str, entries: Sequence[_Entry]) -> dict[str, str]:
    """{id: value} of the entries a fixed directory can keep: values that break no rule, and ids
    whose duplicates (if any) are identical lines. Conflicting duplicates drop the id."""
    values: dict[str, str] = {}
    conflicting: set[str] = set()
    for entry in entries:
        if entry.key in values and values[entry.key] != entry.value:
            conflicting.add(entry.key)
        values.setdefault(entry.key, entry.value)
    bad = {entry.key for entry in entries if _value_problem(name, entry)}
    return {key: value for key, value in values.items() if key not in conflicting | bad}


def _spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, str]:
    """Speakers in C-locale order, each with its utterances in utt2spk order (as the shell tool)."""
    utterances: dict[str, list[str]] = {}
    for uttid, speaker in utt2spk.items():
        utterances.setdefault(speaker, []).append(uttid)
    return {speaker: " ".join(utterances[speaker]) for speaker in sorted(utterances)}


def _backup(directory: Path, name: str) -> Path:
    """Copy `name` into `<directory>/.backup/`; never overwrite an earlier backup (`name.~N~`)."""
    backup_dir = directory / BACKUP_DIR
    backup_dir.mkdir(exist_ok=True)
    target, number = backup_dir / name, 0
    while target.exists():
        number += 1
        target = backup_dir / f"{name}.~{number}~"
    shutil.copy2(directory / name, target)
    return target


def fix_data_dir(path: str | os.PathLike, verbose: bool = True) -> dict[str, int]:
    """Keep only the utterances that are valid and present in every utterance-keyed table.

    Filters recording tables (with segments) to the kept segments' recordings and speaker tables
    to the kept speakers, sorts every table, and regenerates spk2utt from utt2spk. Each file whose
    content changes is first copied to `<dir>/.backup/` (numbered `name.~N~` when a backup already
    exists), then replaced atomically. Audio paths are not checked (validate_data_dir does).
    Returns {table name: number of its lines dropped}; prints the same when `verbose`.
    """
    directory = _existing_dir(path)
    names = _table_names(directory)
    if "utt2spk" not in names:
        raise DataDirError(f"{directory / 'utt2spk'}: missing; fix_data_dir needs it")
    has_segments = "segments" in names
    tables = {name: _scan_table(directory / name, name) for name in names}
    usable = {name: _usable(name, table.entries) for name, table in tables.items()}

    roles = {name: _role(name, has_segments) for name in names}
    utterance_tables = [name for name, role in roles.items() if role == "utterance"]
    kept = set.intersection(*(set(usable[name]) for name in utterance_tables))
    kept_recordings: set[str] = set()
    if has_segments:
        if "wav.scp" in usable:
            kept = {u for u in kept if _recording(usable["segments"][u]) in usable["wav.scp"]}
        kept_recordings = {_recording(usable["segments"][u]) for u in kept}
    kept_ids = {
        "utterance": kept,
        "recording": kept_recordings,
        "speaker": {usable["utt2spk"][u] for u in kept},
    }

    fixed = {
        name: {key: value for key, value in sorted(usable[name].items()) if key in kept_ids[role]}
        for name, role in roles.items()
        if role != "spk2utt"
    }
    fixed["spk2utt"] = _spk2utt_from_utt2spk(fixed["utt2spk"])

    dropped = {}
    for name, table in fixed.items():
        original = tables.get(name, _Table([], [], 0))
        original_keys = {entry.key for entry in original.entries}
        dropped[name] = original.num_lines - len(original_keys & set(table))
        target = directory / name
        text = _table_text(table, target)
        if target.is_file() and target.read_bytes() == text.encode("utf-8"):
            continue
        if target.is_file():
            _backup(directory, name)
        write_text_atomic(target, text)
        if verbose and dropped[name]:
            print(f"fix_data_dir: {target}: dropped {dropped[name]} of {original.num_lines} lines")
    if verbose:
        print(f"fix_data_dir: {directory}: kept {len(kept)} utterances")
    return dropped
