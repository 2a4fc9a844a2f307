"""Task templates: turn one utterance's token dumps into a multi-stream frame sequence + loss mask.

A sequence is a `[T, S]` matrix of joint ids (`TokenList`), one row per undelayed frame. Text and
special tokens sit in stream 0 with pad in streams 1..S-1; speech rows hold a semantic unit in
stream 0 and one codec code per codebook in streams 1..n_q. Templates (`*` marks target rows):

    asr     : sos <asr_task> <speech_start> speech [S-1 pad] <text_start> *text *eos
    tts     : sos <tts_task> <text_start> text <spk_start> prompt [S-1 pad] <speech_start>
              *speech *eos
    audiolm : sos <audiolm_task> <speech_start> *speech *eos
    tts with an alignment (`Example.align`): the target speech interleaves the transcript,
              each token just before the frame where it starts (ELLA-V; `interleave_rows`):
              ... <speech_start> *t1 *speech *t2 *speech ... *eos
    textlm  : *text   (the base tokenizer's own bos/eos included; stream 0 only)

Separators. The model delays stream s by s rows (`opuslm.model.delay`), so the last frames of a
speech segment spill S-1 rows into whatever follows. When another segment follows a speech-bearing
segment, S-1 all-pad rows are inserted so the spilled codec tokens never share a delayed row with
the next segment's tokens. A *target* speech segment is followed directly by eos, with no
separator: the delayed codec streams of its last frames then share delayed rows with eos, and
decoding stops on eos in stream 0 and flushes the S-1 delayed rows (MusicGen-style). A pad-only
row in stream 0 would never be learnt there, because pad gets no loss.

Loss mask (per undelayed row): with `loss_region="target"` the target segment's content rows plus
the eos row; the target segment's start token is a condition (it is given to the decoder, see
`generation_prompt`). With `loss_region="whole"` every row except the first (which the model
never predicts: it predicts row t+1 from rows <= t).

Adding a task is adding a row to `TEMPLATES` (and its `<{task}_task>` token to the token list).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opuslm.alignment import AlignmentError, check_alignment
from opuslm.vocab import TokenList, VocabError

CONTENT_FIELDS = ("text", "speech", "prompt")
SPEECH_FIELDS = ("speech", "prompt")
LOSS_REGIONS = ("target", "whole")


class TaskError(ValueError):
    """An example that does not fit its task's template, or an unknown task."""


@dataclass
class Example:
    """One utterance's token dumps (whichever the task needs).

    text: [L] base-tokenizer ids; speech: [T, S] raw dump rows (column 0 semantic unit in [0, K),
    columns 1..n_q codec codes in [0, C)); prompt: [P, S] raw dump rows of the TTS speaker prompt,
    already cropped/padded (`crop_prompt`); align: [L] start frame of each text token in
    `speech` (`opuslm.alignment`), TTS only: its target then interleaves the text.
    """

    uttid: str
    text: np.ndarray | None = None
    speech: np.ndarray | None = None
    prompt: np.ndarray | None = None
    align: np.ndarray | None = None


@dataclass
class TaskSequence:
    """frames: int64 [T, S] joint ids; loss_mask: bool [T], True on rows that are targets."""

    frames: np.ndarray
    loss_mask: np.ndarray
    task: str
    uttid: str


@dataclass(frozen=True)
class Segment:
    """One part of a template: an optional `<{start}_start>` token, then an Example field's rows."""

    content: str
    start: str | None
    target: bool = False

    def __post_init__(self) -> None:
        if self.content not in CONTENT_FIELDS:
            raise TaskError(
                f"segment content must be one of {CONTENT_FIELDS}, got {self.content!r}"
            )

    @property
    def holds_speech(self) -> bool:
        return self.content in SPEECH_FIELDS


@dataclass(frozen=True)
class Template:
    """Ordered segments; `wrapped` puts `sos <{task}_task>` before them and `eos` after them.

    The target segments form a non-empty suffix (conditions first, then what is predicted).
    """

    segments: tuple[Segment, ...]
    wrapped: bool = True

    def __post_init__(self) -> None:
        flags = [s.target for s in self.segments]
        if not flags or not flags[-1] or flags != sorted(flags):
            raise TaskError(f"the target segments must form a non-empty suffix, got {flags}")

    @property
    def first_target(self) -> Segment:
        return next(s for s in self.segments if s.target)

    def describe(self, task: str) -> str:
        """The template in words, e.g. 'sos <asr_task> <speech_start> speech ... eos'."""
        parts = ["sos", f"<{task}_task>"] if self.wrapped else []
        for seg in self.segments:
            parts += [f"<{seg.start}_start>"] if seg.start else []
            parts.append(seg.content)
        return " ".join(parts + (["eos"] if self.wrapped else []))


TEMPLATES: dict[str, Template] = {
    "asr": Template((Segment("speech", "speech"), Segment("text", "text", target=True))),
    "tts": Template(
        (
            Segment("text", "text"),
            Segment("prompt", "spk"),
            Segment("speech", "speech", target=True),
        )
    ),
    "audiolm": Template((Segment("speech", "speech", target=True),)),
    "textlm": Template((Segment("text", None, target=True),), wrapped=False),
}

TASK_TARGETS: dict[str, str] = {
    task: "speech" if template.first_target.holds_speech else "text"
    for task, template in TEMPLATES.items()
}


# ---------------------------------------------------------------------------------------- rows
def pad_rows(n: int, token_list: TokenList) -> np.ndarray:
    """int64 [n, S] all pad."""
    return np.full((n, token_list.num_streams), token_list.pad_id, dtype=np.int64)


def _token_row(token_id: int, token_list: TokenList) -> np.ndarray:
    """int64 [1, S]: one special token in stream 0, pad elsewhere."""
    row = pad_rows(1, token_list)
    row[0, 0] = token_id
    return row


def _require_integer(values: np.ndarray, ndim: int, what: str) -> None:
    if values.ndim != ndim:
        raise VocabError(f"{what} must have {ndim} dimension(s), got shape {values.shape}")
    if values.dtype.kind not in "iu":
        raise VocabError(f"{what} must hold integer ids, got dtype {values.dtype}")


def text_rows(ids: np.ndarray, token_list: TokenList) -> np.ndarray:
    """Base-tokenizer ids [L] -> int64 [L, S]: text ids in stream 0, pad elsewhere."""
    ids = np.asarray(ids)
    _require_integer(ids, 1, "text ids")
    rows = pad_rows(len(ids), token_list)
    rows[:, 0] = token_list.encode_text(ids)
    return rows


def speech_rows(raw: np.ndarray, token_list: TokenList) -> np.ndarray:
    """Raw dump rows [T, S] (semantic unit, codec codes) -> int64 joint ids [T, S]."""
    raw = np.asarray(raw)
    _require_integer(raw, 2, "speech rows")
    if raw.shape[1] != token_list.num_streams:
        raise VocabError(
            f"speech rows have {raw.shape[1]} streams but the token list has "
            f"{token_list.num_streams} (1 semantic + {token_list.num_codebooks} codebooks)"
        )
    return token_list.encode_frames(raw)


def interleave_rows(text: np.ndarray, speech: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Text rows [L, S] and speech rows [T, S] -> [L + T, S]: each text row just before the
    speech frame where it starts (`starts` [L], non-decreasing frames in [0, T))."""
    check_alignment(starts, len(text), len(speech), "interleave_rows")
    # Frame t moves down by the number of tokens starting at or before it; token i by i.
    frame_at = np.arange(len(speech)) + np.searchsorted(starts, np.arange(len(speech)), "right")
    token_at = np.asarray(starts) + np.arange(len(text))
    out = np.empty((len(text) + len(speech), speech.shape[1]), dtype=np.int64)
    out[frame_at] = speech
    out[token_at] = text
    return out


# ----------------------------------------------------------------------------- speaker prompts
def crop_prompt(frames: np.ndarray, num_frames: int, rng: np.random.Generator | None) -> np.ndarray:
    """Cut or extend raw prompt rows [P, S] to exactly [num_frames, S].

    Longer prompts: a random window (`rng` given, for training) or the start (`rng` None, for
    reproducible decoding). Shorter prompts are looped (tiled) up to `num_frames`: raw dump rows
    have no pad value, and pad rows inside a prompt would teach the model that prompts end in
    silence.
    """
    frames = np.asarray(frames)
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if frames.ndim != 2 or len(frames) == 0:
        raise ValueError(f"a prompt must be a non-empty [P, S] matrix, got shape {frames.shape}")
    surplus = len(frames) - num_frames
    if surplus < 0:
        return frames[np.arange(num_frames) % len(frames)]
    start = 0 if rng is None else int(rng.integers(0, surplus + 1))
    return frames[start : start + num_frames].copy()


def own_prefix_prompt(speech: np.ndarray, seconds: float, frame_rate: float) -> np.ndarray:
    """The utterance's own first `seconds` as its speaker prompt: raw rows [T, S] -> [P, S].

    The alternative to a prompt from another utterance of the same speaker, which users of the
    published recipe found hard to train. P = round(seconds * frame_rate) (at least 1), or all of
    T for shorter utterances (pass the result through `crop_prompt` to fix its length). The
    prompt repeats the start of the target speech, so the model may learn to copy it.
    """
    speech = np.asarray(speech)
    if seconds <= 0 or frame_rate <= 0:
        raise ValueError(f"seconds and frame_rate must be positive, got {seconds}, {frame_rate}")
    if speech.ndim != 2 or len(speech) == 0:
        raise ValueError(f"speech must be a non-empty [T, S] matrix, got shape {speech.shape}")
    return speech[: max(1, round(seconds * frame_rate))].copy()


def pick_prompt_uttid(uttid: str, speaker_utts: list[str], rng: np.random.Generator) -> str:
    """Pick, uniformly, another utterance of the same speaker to take the TTS prompt from.

    Never returns `uttid` itself when the speaker has another utterance; returns `uttid` when it
    does not (a single-utterance speaker: the prompt then comes from the target utterance).
    """
    others = [u for u in speaker_utts if u != uttid]
    if not others:
        return uttid
    return others[int(rng.integers(len(others)))]


# ---------------------------------------------------------------------------------- sequences
def _template(task: str, uttid: str) -> Template:
    try:
        return TEMPLATES[task]
    except KeyError:
        raise TaskError(
            f"utterance {uttid!r}: unknown task {task!r}; known tasks: {', '.join(TEMPLATES)}"
        ) from None


def _content_rows(segment: Segment, example: Example, token_list: TokenList) -> np.ndarray:
    values = getattr(example, segment.content)
    if values is None:
        raise TaskError(f"the template needs `{segment.content}` but the example has none")
    values = np.asarray(values)
    if values.size == 0:
        raise TaskError(f"`{segment.content}` is empty")
    try:
        if segment.holds_speech:
            return speech_rows(values, token_list)
        return text_rows(values, token_list)
    except VocabError as e:
        raise VocabError(f"`{segment.content}`: {e}") from None


def _blocks(
    task: str, example: Example, token_list: TokenList, until_target: bool
) -> list[tuple[np.ndarray, bool]]:
    """The sequence as (rows [n, S], is_target) blocks in order.

    until_target: stop after the first target segment's start token (the decoding prompt); a
    target without a start token (textlm) is a continuation, so its given content is kept.
    """
    template = _template(task, example.uttid)
    where = f"utterance {example.uttid!r} (task {task!r})"
    num_streams = token_list.num_streams
    blocks: list[tuple[np.ndarray, bool]] = []
    try:
        if template.wrapped:
            if not token_list.has(f"<{task}_task>"):
                raise VocabError(
                    f"the token list has no <{task}_task> token; it was built for tasks "
                    f"{token_list.tasks}"
                )
            blocks.append((_token_row(token_list.sos_id, token_list), False))
            blocks.append((_token_row(token_list.task_id(task), token_list), False))
        for i, segment in enumerate(template.segments):
            if segment.start is not None:
                blocks.append((_token_row(token_list.start_id(segment.start), token_list), False))
                if until_target and segment.target:
                    return blocks
            rows = _content_rows(segment, example, token_list)
            if example.align is not None and segment.content == "speech" and task == "tts":
                text = _content_rows(Segment("text", None), example, token_list)
                rows = interleave_rows(text, rows, example.align)
            blocks.append((rows, segment.target))
            if until_target and segment.target:
                return blocks
            if segment.holds_speech and i + 1 < len(template.segments):
                blocks.append((pad_rows(num_streams - 1, token_list), False))
        if template.wrapped:
            blocks.append((_token_row(token_list.eos_id, token_list), True))
    except VocabError as e:
        raise VocabError(f"{where}: {e}") from None
    except (TaskError, AlignmentError) as e:
        raise TaskError(f"{where}: {e}") from None
    return blocks


def build_sequence(
    task: str, example: Example, token_list: TokenList, loss_region: str = "target"
) -> TaskSequence:
    """The training sequence of `example` for `task`: frames int64 [T, S], loss_mask bool [T]."""
    if loss_region not in LOSS_REGIONS:
        raise ValueError(f"loss_region must be one of {LOSS_REGIONS}, got {loss_region!r}")
    blocks = _blocks(task, example, token_list, until_target=False)
    frames = np.concatenate([rows for rows, _ in blocks])
    if loss_region == "whole":
        loss_mask = np.arange(len(frames)) > 0
    else:
        loss_mask = np.concatenate([np.full(len(rows), target) for rows, target in blocks])
    return TaskSequence(frames=frames, loss_mask=loss_mask, task=task, uttid=example.uttid)


def generation_prompt(task: str, example: Example, token_list: TokenList) -> np.ndarray:
    """int64 [T, S] joint ids to decode from: the conditions plus the target's start token.

    A prefix of `build_sequence(...).frames`; the target field of `example` is not needed
    (except for textlm, whose given text is the prefix to continue).
    """
    return np.concatenate(
        [rows for rows, _ in _blocks(task, example, token_list, until_target=True)]
    )


def num_condition_frames(stream0: np.ndarray, token_list: TokenList) -> int:
    """How many leading frames of a decoding prompt are condition rather than target: through its
    last special token (the target's start token), given its stream-0 ids [T].

    A prefix LM attends both ways over exactly these rows, as training does over the rows before
    the first loss row. Frames after the start token (an own-prefix TTS prompt's speech, the given
    audio of audiolm, the given text of textlm) were targets in training, so they stay causal.
    """
    start, end = token_list.ranges["special"]
    special = np.flatnonzero((np.asarray(stream0) >= start) & (np.asarray(stream0) < end))
    return int(special[-1]) + 1 if len(special) else 0
