"""Task manifests (`data.json`): which utterances of which token dumps make one (task, dataset).

A manifest is a plain JSON record, written once by `opuslm.bin.make_manifest` and read by the
data loader:

    {"format_version": 1, "task": "asr", "dataset": "train",
     "entries": {"speech": "../../../dump/train/speech.scp", "text": "..."},
     "utt2spk": null,
     "token_list": "../../../data/token_list.json", "token_list_sha256": "...",
     "num_streams": 9, "prompt_frames": 0,
     "utterances": {"utt1": {"speech": 312, "text": 20, "length": 345}, ...}}

Every path (entry files, `utt2spk`, token list) is stored RELATIVE TO THE MANIFEST'S DIRECTORY,
so an experiment tree can be moved as a whole; `Manifest.path_of` resolves them. The scp files
themselves point at their arks as kaldiio wrote them (usually relative to the recipe directory);
they are read by `opuslm.data.ark`, which never runs a pipe or unpickles a record.

Per utterance the manifest holds the length of each entry (frames for speech, tokens for text)
and `length`: the number of rows of the task sequence that `opuslm.tasks.build_sequence` makes
from it, computed arithmetically by `sequence_length` so batching never reads an ark.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opuslm.data.ark import ScpTable
from opuslm.fileio import write_text_atomic
from opuslm.vocab import TokenList

FORMAT_VERSION = 1

logger = logging.getLogger(__name__)

# The entry files each task reads; a TTS manifest with speaker prompts also needs utt2spk.
TASK_ENTRIES: dict[str, tuple[str, ...]] = {
    "asr": ("speech", "text"),
    "tts": ("text", "speech"),
    "audiolm": ("speech",),
    "textlm": ("text",),
}
# Entry files a task may also read: a TTS manifest with `align` (`opuslm.bin.align_text`)
# interleaves each transcript with its target speech (`opuslm.tasks.interleave_rows`).
OPTIONAL_ENTRIES: dict[str, tuple[str, ...]] = {"tts": ("align",)}
# The JSON type of each manifest key (checked on load: the file may come from elsewhere).
MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "task": (str,),
    "dataset": (str,),
    "entries": (dict,),
    "utt2spk": (str, type(None)),
    "token_list": (str,),
    "token_list_sha256": (str,),
    "num_streams": (int,),
    "prompt_frames": (int,),
    "utterances": (dict,),
}
# Per-utterance length files that ESPnet-style dumpers leave next to the scp.
LENGTH_FILES = {"speech": "utt2num_frames", "text": "utt2num_tokens", "align": "utt2num_tokens"}


class ManifestError(ValueError):
    """A manifest or one of its input files is malformed or inconsistent."""


def sequence_length(
    task: str, num_streams: int, speech: int = 0, text: int = 0, prompt: int = 0, align: int = 0
) -> int:
    """Rows of the task sequence (DESIGN.md section 4, `opuslm.tasks.TEMPLATES`), arithmetically.

    Each segment is its start token plus its rows; a speech segment followed by another segment is
    followed by `S-1` all-pad rows; the sequence is `sos <task>` + segments + `eos`. An aligned
    TTS example (`align` tokens) also holds its transcript inside the target speech.
    """
    gap = num_streams - 1
    if task == "asr":
        return 2 + (1 + speech + gap) + (1 + text) + 1
    if task == "tts":
        return 2 + (1 + text) + (1 + prompt + gap) + (1 + speech + align) + 1
    if task == "audiolm":
        return 2 + (1 + speech) + 1
    if task == "textlm":
        return text
    raise ManifestError(f"unknown task {task!r}; known tasks: {sorted(TASK_ENTRIES)}")


def sha256_of(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_key_value_file(path: str | os.PathLike) -> dict[str, str]:
    """A Kaldi `uttid value` file -> dict, with errors naming the file and line."""
    out: dict[str, str] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: not valid UTF-8 ({e.reason})") from None
            parts = line.split(maxsplit=1)
            if not parts:
                continue
            if len(parts) != 2:
                raise ManifestError(f"{path}:{lineno}: expected 'uttid value', got {line!r}")
            if parts[0] in out:
                raise ManifestError(f"{path}:{lineno}: duplicate utterance id {parts[0]!r}")
            out[parts[0]] = parts[1].strip()
    return out


def read_lengths(path: str | os.PathLike) -> dict[str, int]:
    """`utt2num_frames` / `utt2num_tokens` -> {uttid: length}."""
    lengths = {}
    for uttid, value in read_key_value_file(path).items():
        try:
            lengths[uttid] = int(value)
        except ValueError:
            raise ManifestError(
                f"{path}: length of {uttid!r} is not an integer: {value!r}"
            ) from None
    return lengths


def entry_lengths(name: str, scp: Path, num_streams: int) -> dict[str, int]:
    """Per-utterance lengths of one entry file, from its length file or else from the arks.

    Speech matrices must have `num_streams` columns; with a length file only the first one is
    read to check that (reading every ark is what the length file is there to avoid).
    """
    table = ScpTable(scp)
    length_file = scp.parent / LENGTH_FILES[name]
    if length_file.exists():
        lengths = read_lengths(length_file)
        missing = [u for u in table if u not in lengths]
        if missing:
            raise ManifestError(
                f"{length_file}: no length for {len(missing)} utterances of {scp}, "
                f"first {missing[0]!r}"
            )
        sample = list(table)[:1]
    else:
        logger.info("%s not found: reading lengths from the arks of %s", length_file, scp)
        lengths = {}
        sample = list(table)
    for uttid in sample:
        try:
            value = np.asarray(table[uttid])
        except Exception as e:
            raise ManifestError(f"{scp}: cannot read {uttid!r}: {e}") from None
        check_entry_shape(name, value, num_streams, f"{scp}: {uttid!r}")
        lengths.setdefault(uttid, int(value.shape[0]))
    return {u: lengths[u] for u in table}


def check_entry_shape(name: str, value: np.ndarray, num_streams: int, where: str) -> None:
    if name == "speech" and (value.ndim != 2 or value.shape[1] != num_streams):
        raise ManifestError(f"{where}: speech must be [T, {num_streams}], got {value.shape}")
    if name in ("text", "align") and value.ndim != 1:
        raise ManifestError(f"{where}: {name} must be a vector, got {value.shape}")


def relative_to(path: str | os.PathLike, directory: Path) -> str:
    return os.path.relpath(Path(path).resolve(), directory.resolve())


@dataclass
class Manifest:
    """One (task, dataset): entry files, token list identity, utterances and their lengths."""

    path: Path
    task: str
    dataset: str
    entries: dict[str, str]
    utt2spk: str | None
    token_list: str
    token_list_sha256: str
    num_streams: int
    prompt_frames: int
    utterances: dict[str, dict[str, int]]

    @property
    def uttids(self) -> list[str]:
        return list(self.utterances)

    def path_of(self, relative: str) -> Path:
        """An entry path as stored (relative to the manifest's directory) -> a usable path."""
        return self.path.parent / relative

    def lengths(self, prompt_frames: int | None = None) -> np.ndarray:
        """int64 [N]: sequence rows per utterance (`prompt_frames` overrides the manifest's)."""
        if prompt_frames is None or prompt_frames == self.prompt_frames:
            return np.array([u["length"] for u in self.utterances.values()], dtype=np.int64)
        return np.array(
            [
                sequence_length(
                    self.task,
                    self.num_streams,
                    u.get("speech", 0),
                    u.get("text", 0),
                    prompt_frames,
                    u.get("align", 0),
                )
                for u in self.utterances.values()
            ],
            dtype=np.int64,
        )

    def at_most(self, max_length: int, prompt_frames: int | None = None) -> Manifest:
        """A copy with only the utterances of at most `max_length` sequence rows (`lengths`).

        Raises ManifestError if none is that short.
        """
        lengths = self.lengths(prompt_frames)
        if not (lengths <= max_length).any():
            raise ManifestError(
                f"{self.path}: no utterance has at most {max_length} rows (shortest: "
                f"{int(lengths.min())}); raise max_length"
            )
        utterances = {
            u: v for (u, v), n in zip(self.utterances.items(), lengths) if n <= max_length
        }
        return dataclasses.replace(self, utterances=utterances)

    def load_token_list(self) -> TokenList:
        """The token list the manifest was built with, checked against its recorded hash."""
        path = self.path_of(self.token_list)
        if sha256_of(path) != self.token_list_sha256:
            raise ManifestError(
                f"{self.path}: token list {path} changed since the manifest was built "
                "(SHA-256 differs); rebuild the manifest"
            )
        return TokenList.load(path)

    def require_token_list(self, expected: TokenList) -> None:
        """Raise naming the manifest and the first difference if its token list differs."""
        expected.require_same(
            self.load_token_list(), what=f"token list of manifest {self.path} (model vs manifest)"
        )

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "dataset": self.dataset,
            "entries": self.entries,
            "utt2spk": self.utt2spk,
            "token_list": self.token_list,
            "token_list_sha256": self.token_list_sha256,
            "num_streams": self.num_streams,
            "prompt_frames": self.prompt_frames,
            "utterances": self.utterances,
        }

    def save(self) -> None:
        """Write atomically (temp file in the same directory, then rename)."""
        write_text_atomic(self.path, json.dumps(self.to_json(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"{path}: manifest not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"{path}: not a valid manifest JSON ({e})") from None
        keys = [
            "task",
            "dataset",
            "entries",
            "utt2spk",
            "token_list",
            "token_list_sha256",
            "num_streams",
            "prompt_frames",
            "utterances",
        ]
        if not isinstance(payload, dict) or any(k not in payload for k in keys):
            missing = [k for k in keys if not isinstance(payload, dict) or k not in payload]
            raise ManifestError(f"{path}: missing keys {missing}")
        for key, kind in MANIFEST_TYPES.items():
            value = payload[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                names = " or ".join(t.__name__ for t in kind)
                raise ManifestError(f"{path}: {key} must be {names}, got {value!r:.80}")
        for key in ("entries", "utterances"):
            if not all(isinstance(k, str) for k in payload[key]):
                raise ManifestError(f"{path}: {key} must be keyed by strings")
        if not all(isinstance(v, str) for v in payload["entries"].values()):
            raise ManifestError(f"{path}: entries must map names to scp paths")
        manifest = cls(path=path, **{k: payload[k] for k in keys})
        manifest.validate()
        return manifest

    def validate(self) -> None:
        if self.task not in TASK_ENTRIES:
            raise ManifestError(f"{self.path}: unknown task {self.task!r}")
        missing = [e for e in TASK_ENTRIES[self.task] if e not in self.entries]
        if missing:
            raise ManifestError(f"{self.path}: task {self.task} needs entries {missing}")
        if self.num_streams < 1 or self.prompt_frames < 0:
            raise ManifestError(
                f"{self.path}: num_streams {self.num_streams} must be >= 1 and prompt_frames "
                f"{self.prompt_frames} >= 0"
            )
        if not self.utterances:
            raise ManifestError(f"{self.path}: the manifest has no utterances")
        for uttid, info in self.utterances.items():
            length = info.get("length") if isinstance(info, Mapping) else None
            if not isinstance(length, int) or isinstance(length, bool) or length < 1:
                raise ManifestError(
                    f"{self.path}: utterance {uttid!r} has no positive integer 'length'"
                )


def build_manifest(
    task: str,
    dataset: str,
    token_list_path: str | os.PathLike,
    entries: Mapping[str, str | os.PathLike],
    output: str | os.PathLike,
    utt2spk: str | os.PathLike | None = None,
    prompt_frames: int = 0,
) -> Manifest:
    """Intersect the entry files' utterances, measure them and return the manifest (not saved).

    entries: entry name ("speech" / "text") -> scp path. Utterances missing from any entry file
    (or from utt2spk, when given) are dropped and counted in the log.
    """
    if task not in TASK_ENTRIES:
        raise ManifestError(f"unknown task {task!r}; known tasks: {sorted(TASK_ENTRIES)}")
    needed = TASK_ENTRIES[task]
    missing = [e for e in needed if e not in entries]
    if missing:
        raise ManifestError(f"task {task} needs entry files {missing} (got {sorted(entries)})")
    needed = needed + tuple(e for e in OPTIONAL_ENTRIES.get(task, ()) if e in entries)
    unused = sorted(set(entries) - set(needed))
    if unused:
        raise ManifestError(f"task {task} does not use entry files {unused}")
    if task == "tts" and prompt_frames <= 0:
        raise ManifestError("a tts manifest needs prompt_frames > 0 (speaker prompt length)")
    output = Path(output)
    token_list = TokenList.load(token_list_path)
    num_streams = token_list.num_streams

    per_entry = {}
    for name in needed:
        scp = Path(entries[name])
        if not scp.exists():
            raise ManifestError(f"{scp}: {name} entry file not found")
        per_entry[name] = entry_lengths(name, scp, num_streams)
        if not per_entry[name]:
            raise ManifestError(f"{scp}: {name} entry file lists no utterances")
    speakers = read_key_value_file(utt2spk) if utt2spk is not None else None

    candidates = sorted(set().union(*(set(v) for v in per_entry.values())))
    keep = [
        u
        for u in candidates
        if all(u in v for v in per_entry.values()) and (speakers is None or u in speakers)
    ]
    if "align" in per_entry:  # an alignment made from other text dumps cannot be used
        stale = [u for u in keep if per_entry["align"][u] != per_entry["text"][u]]
        if stale:
            raise ManifestError(
                f"{entries['align']}: {len(stale)} alignments have another number of tokens than "
                f"their text (first {stale[0]!r}); align the current text dumps again"
            )
    dropped = len(candidates) - len(keep)
    if dropped:
        logger.warning(
            "%s/%s: dropped %d of %d utterances not present in every entry file",
            task,
            dataset,
            dropped,
            len(candidates),
        )
    if not keep:
        raise ManifestError(f"{output}: no utterance is present in every entry file")
    utterances = {}
    for uttid in keep:
        info = {name: per_entry[name][uttid] for name in needed}
        info["length"] = sequence_length(task, num_streams, prompt=prompt_frames, **info)
        utterances[uttid] = info
    directory = output.parent
    return Manifest(
        path=output,
        task=task,
        dataset=dataset,
        entries={name: relative_to(entries[name], directory) for name in needed},
        utt2spk=relative_to(utt2spk, directory) if utt2spk is not None else None,
        token_list=relative_to(token_list_path, directory),
        token_list_sha256=sha256_of(token_list_path),
        num_streams=num_streams,
        prompt_frames=prompt_frames if task == "tts" else 0,
        utterances=utterances,
    )
