"""Task templates -> multi-stream frame sequences and loss masks (opuslm.tasks)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opuslm.tasks import (
    TASK_TARGETS,
    TEMPLATES,
    Example,
    Segment,
    TaskError,
    Template,
    build_sequence,
    crop_prompt,
    generation_prompt,
    num_condition_frames,
    own_prefix_prompt,
    pad_rows,
    pick_prompt_uttid,
    speech_rows,
    text_rows,
)
from opuslm.vocab import TokenList, VocabError

# Tiny vocabulary: 10 text tokens, K=4 semantic units, n_q=2 codebooks of C=3, so S=3.
# Ids: text 0..9 | special 10..25 (pad 10, sos 11, eos 12, eou 13, <text_start> 14,
# <speech_start> 15, <spk_start> 16, <asr_task> 17, <tts_task> 18, <audiolm_task> 19,
# <textlm_task> 20, reserved) | semantic 26..29 | codebook 0: 30..32 | codebook 1: 33..35.
PAD, SOS, EOS, TEXT_START, SPEECH_START, SPK_START = 10, 11, 12, 14, 15, 16
ASR_TASK, TTS_TASK, AUDIOLM_TASK = 17, 18, 19
P = [PAD, PAD, PAD]


@pytest.fixture(scope="module")
def token_list():
    return TokenList.build(
        [f"t{i}" for i in range(10)],
        num_semantic=4,
        num_codebooks=2,
        codebook_size=3,
        special_slots=16,
    )


@pytest.fixture()
def example():
    return Example(
        uttid="spk1_utt1",
        text=np.array([1, 2], dtype=np.int32),
        speech=np.array([[0, 1, 2], [3, 0, 1]], dtype=np.int32),
        prompt=np.array([[1, 1, 1]], dtype=np.int32),
    )


def row(token_id):
    return [token_id, PAD, PAD]


SPEECH = [[26, 31, 35], [29, 30, 34]]  # the example's speech as joint ids
PROMPT = [[27, 31, 34]]
TEXT = [row(1), row(2)]


def test_tiny_vocabulary_ids(token_list):
    assert (token_list.pad_id, token_list.sos_id, token_list.eos_id) == (PAD, SOS, EOS)
    assert [token_list.start_id(s) for s in ("text", "speech", "spk")] == [14, 15, 16]
    assert [token_list.task_id(t) for t in ("asr", "tts", "audiolm")] == [17, 18, 19]


GOLDEN = {
    "asr": (
        [row(SOS), row(ASR_TASK), row(SPEECH_START), *SPEECH, P, P, row(TEXT_START), *TEXT]
        + [row(EOS)],
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        8,
    ),
    "tts": (
        [row(SOS), row(TTS_TASK), row(TEXT_START), *TEXT, row(SPK_START), *PROMPT, P, P]
        + [row(SPEECH_START), *SPEECH, row(EOS)],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        10,
    ),
    "audiolm": (
        [row(SOS), row(AUDIOLM_TASK), row(SPEECH_START), *SPEECH, row(EOS)],
        [0, 0, 0, 1, 1, 1],
        3,
    ),
    "textlm": (TEXT, [1, 1], 2),
}


@pytest.mark.parametrize("task", sorted(GOLDEN))
def test_golden_sequences(task, token_list, example):
    frames, mask, prompt_len = GOLDEN[task]
    seq = build_sequence(task, example, token_list)
    assert seq.frames.dtype == np.int64 and seq.loss_mask.dtype == bool
    assert seq.frames.tolist() == frames
    assert seq.loss_mask.astype(int).tolist() == mask
    assert (seq.task, seq.uttid) == (task, "spk1_utt1")
    prompt = generation_prompt(task, example, token_list)
    assert prompt.tolist() == frames[:prompt_len]


@pytest.mark.parametrize("task", sorted(GOLDEN))
def test_whole_loss_region_is_every_row_but_the_first(task, token_list, example):
    seq = build_sequence(task, example, token_list, loss_region="whole")
    assert seq.loss_mask.tolist() == [False] + [True] * (len(seq.frames) - 1)
    target = build_sequence(task, example, token_list)
    np.testing.assert_array_equal(seq.frames, target.frames)


def test_unknown_loss_region(token_list, example):
    with pytest.raises(ValueError, match=r"loss_region must be one of \('target', 'whole'\)"):
        build_sequence("asr", example, token_list, loss_region="all")


def test_generation_prompt_needs_no_target(token_list, example):
    """Decoding has no transcript (ASR) or target speech (TTS); the prompt must not need them."""
    conditions_only = {
        "asr": Example("u", speech=example.speech),
        "tts": Example("u", text=example.text, prompt=example.prompt),
        "audiolm": Example("u"),
    }
    for task, conditions in conditions_only.items():
        frames, _, prompt_len = GOLDEN[task]
        assert generation_prompt(task, conditions, token_list).tolist() == frames[:prompt_len]


def test_generation_prompt_ends_with_target_start(token_list, example):
    for task in ("asr", "tts", "audiolm"):
        start = TEMPLATES[task].first_target.start
        assert generation_prompt(task, example, token_list)[-1].tolist() == row(
            token_list.start_id(start)
        )


def test_task_targets():
    assert TASK_TARGETS == {"asr": "text", "tts": "speech", "audiolm": "speech", "textlm": "text"}


def test_describe_matches_design():
    assert TEMPLATES["asr"].describe("asr") == (
        "sos <asr_task> <speech_start> speech <text_start> text eos"
    )
    assert TEMPLATES["tts"].describe("tts") == (
        "sos <tts_task> <text_start> text <spk_start> prompt <speech_start> speech eos"
    )
    assert TEMPLATES["textlm"].describe("textlm") == "text"


def test_separator_length_follows_stream_count(example):
    """S-1 pad rows: with 3 codebooks (S=4) the asr separator is 3 rows."""
    token_list = TokenList.build([f"t{i}" for i in range(10)], 10, 4, 3, 3, special_slots=16)
    ex = Example("u", text=example.text, speech=np.array([[0, 1, 2, 0], [3, 0, 1, 2]]))
    frames = build_sequence("asr", ex, token_list).frames
    speech_end = 3 + 2
    assert (frames[speech_end : speech_end + 3] == token_list.pad_id).all()
    assert frames[speech_end + 3, 0] == token_list.start_id("text")


def test_row_helpers(token_list):
    assert pad_rows(2, token_list).tolist() == [P, P]
    assert pad_rows(0, token_list).shape == (0, 3)
    assert text_rows(np.array([3, 9]), token_list).tolist() == [row(3), row(9)]
    assert speech_rows(np.array([[0, 1, 2], [3, 0, 1]]), token_list).tolist() == SPEECH


# ------------------------------------------------------------------------------ error messages
def test_unknown_task_lists_known_tasks(token_list, example):
    with pytest.raises(TaskError, match="'spk1_utt1': unknown task 'st'; known tasks: asr, tts"):
        build_sequence("st", example, token_list)


def test_missing_field(token_list):
    with pytest.raises(
        TaskError, match=r"'u7' \(task 'asr'\): the template needs `speech` but the example has"
    ):
        build_sequence("asr", Example("u7", text=np.array([1])), token_list)
    with pytest.raises(TaskError, match=r"'u7' \(task 'tts'\): the template needs `prompt`"):
        build_sequence(
            "tts", Example("u7", text=np.array([1]), speech=np.zeros((2, 3), int)), token_list
        )


def test_empty_field(token_list, example):
    example.text = np.array([], dtype=np.int32)
    with pytest.raises(TaskError, match=r"'spk1_utt1' \(task 'asr'\): `text` is empty"):
        build_sequence("asr", example, token_list)
    example.text = []
    with pytest.raises(TaskError, match="`text` is empty"):
        build_sequence("asr", example, token_list)


def test_plain_lists_are_accepted(token_list, example):
    as_lists = Example(
        example.uttid, text=[1, 2], speech=example.speech.tolist(), prompt=[[1, 1, 1]]
    )
    for task in TEMPLATES:
        expected = build_sequence(task, example, token_list)
        np.testing.assert_array_equal(
            build_sequence(task, as_lists, token_list).frames, expected.frames
        )


def test_wrong_number_of_streams(token_list, example):
    example.speech = np.zeros((2, 4), dtype=np.int32)
    with pytest.raises(
        VocabError,
        match=r"'spk1_utt1' \(task 'asr'\): `speech`: speech rows have 4 streams but the token "
        r"list has 3 \(1 semantic \+ 2 codebooks\)",
    ):
        build_sequence("asr", example, token_list)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("speech", [[4, 0, 0]], r"`speech`: semantic units 4\.\.4 outside \[0, 4\)"),
        ("speech", [[0, 0, 3]], r"`speech`: acoustic codes 0\.\.3 outside \[0, 3\)"),
        ("text", [10], r"`text`: text ids 10\.\.10 outside \[0, 10\)"),
        ("text", [-1], r"`text`: text ids -1\.\.-1 outside \[0, 10\)"),
        ("text", [[1, 2]], r"`text`: text ids must have 1 dimension\(s\), got shape \(1, 2\)"),
        ("text", 3, r"`text`: text ids must have 1 dimension\(s\), got shape \(\)"),
        ("speech", [[0.5, 0, 0]], r"`speech`: speech rows must hold integer ids, got dtype float"),
    ],
)
def test_ids_out_of_range_name_the_utterance(token_list, example, field, value, message):
    setattr(example, field, np.array(value))
    with pytest.raises(VocabError, match=r"utterance 'spk1_utt1' \(task 'asr'\): " + message):
        build_sequence("asr", example, token_list)


def test_task_token_missing_from_token_list(example):
    token_list = TokenList.build([f"t{i}" for i in range(10)], 10, 4, 2, 3, tasks=("asr",))
    with pytest.raises(
        VocabError,
        match=r"'spk1_utt1' \(task 'tts'\): the token list has no <tts_task> token; it was built "
        r"for tasks \['asr'\]",
    ):
        build_sequence("tts", example, token_list)


def test_template_targets_must_be_a_suffix():
    with pytest.raises(TaskError, match="non-empty suffix"):
        Template((Segment("text", "text", target=True), Segment("speech", "speech")))
    with pytest.raises(TaskError, match="non-empty suffix"):
        Template(())
    with pytest.raises(TaskError, match="segment content must be one of"):
        Segment("wav", "speech")


# ------------------------------------------------------------------------------ speaker prompts
def test_crop_prompt_start_and_random_window():
    frames = np.arange(10 * 3).reshape(10, 3)
    np.testing.assert_array_equal(crop_prompt(frames, 4, None), frames[:4])
    starts = set()
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = crop_prompt(frames, 4, rng)
        start = out[0, 0] // 3
        np.testing.assert_array_equal(out, frames[start : start + 4])
        starts.add(int(start))
    assert starts == set(range(7))
    np.testing.assert_array_equal(crop_prompt(frames, 10, rng), frames)


def test_crop_prompt_loops_short_prompts():
    frames = np.array([[1, 0, 0], [2, 0, 0]])
    assert crop_prompt(frames, 5, None)[:, 0].tolist() == [1, 2, 1, 2, 1]


def test_crop_prompt_errors():
    with pytest.raises(ValueError, match="num_frames must be positive"):
        crop_prompt(np.zeros((3, 3), int), 0, None)
    with pytest.raises(ValueError, match=r"non-empty \[P, S\] matrix, got shape \(0, 3\)"):
        crop_prompt(np.zeros((0, 3), int), 2, None)


def test_own_prefix_prompt():
    speech = np.arange(100 * 3).reshape(100, 3)
    np.testing.assert_array_equal(own_prefix_prompt(speech, 0.5, 50), speech[:25])
    np.testing.assert_array_equal(own_prefix_prompt(speech, 3.0, 50), speech)
    assert len(own_prefix_prompt(speech, 0.001, 50)) == 1
    with pytest.raises(ValueError, match="must be positive"):
        own_prefix_prompt(speech, 0, 50)
    with pytest.raises(ValueError, match="non-empty"):
        own_prefix_prompt(speech[:0], 1, 50)


def test_pick_prompt_uttid():
    rng = np.random.default_rng(0)
    utts = ["a", "b", "c"]
    picks = {pick_prompt_uttid("b", utts, rng) for _ in range(40)}
    assert picks == {"a", "c"}
    assert pick_prompt_uttid("a", ["a"], rng) == "a"
    assert pick_prompt_uttid("a", [], rng) == "a"


# ------------------------------------------------------------------------------ property
@settings(max_examples=60, deadline=None)
@given(
    task=st.sampled_from(sorted(TEMPLATES)),
    text_len=st.integers(1, 6),
    speech_len=st.integers(1, 6),
    prompt_len=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_sequence_length_and_speech_round_trip(task, text_len, speech_len, prompt_len, seed):
    token_list = TokenList.build([f"t{i}" for i in range(10)], 10, 4, 2, 3, special_slots=16)
    rng = np.random.default_rng(seed)

    def raw(n):
        return np.concatenate([rng.integers(0, 4, (n, 1)), rng.integers(0, 3, (n, 2))], axis=1)

    example = Example(
        "u", text=rng.integers(0, 10, text_len), speech=raw(speech_len), prompt=raw(prompt_len)
    )
    template = TEMPLATES[task]
    seq = build_sequence(task, example, token_list)
    segments = template.segments
    content = sum(len(getattr(example, s.content)) for s in segments)
    separators = sum(s.holds_speech for s in segments[:-1]) * (token_list.num_streams - 1)
    specials = 3 * template.wrapped + sum(s.start is not None for s in segments)
    assert len(seq.frames) == content + separators + specials

    speech_row_mask = seq.frames[:, 1] != token_list.pad_id
    speech_in_sequence = seq.frames[speech_row_mask]
    expected = [example.prompt] if "prompt" in {s.content for s in segments} else []
    expected += [example.speech] if "speech" in {s.content for s in segments} else []
    decoded = token_list.decode_frames(speech_in_sequence)
    np.testing.assert_array_equal(decoded, np.concatenate(expected) if expected else decoded[:0])

    num_targets = len(getattr(example, segments[-1].content)) + template.wrapped
    expected_mask = [False] * (len(seq.frames) - num_targets) + [True] * num_targets
    assert seq.loss_mask.tolist() == expected_mask

    prompt = generation_prompt(task, example, token_list)
    np.testing.assert_array_equal(prompt, seq.frames[: len(prompt)])
    if segments[-1].start is not None:
        assert len(prompt) == len(seq.frames) - num_targets
        assert prompt[-1, 0] == token_list.start_id(segments[-1].start)


@pytest.mark.parametrize("task", ["asr", "tts", "audiolm", "textlm"])
def test_condition_frames_of_a_prompt_are_the_rows_before_the_first_loss_row(
    task, token_list, example
):
    """The prefix-LM contract: decoding's bidirectional rows == training's (MultiStreamLM.forward
    makes the rows before the first loss row the condition), also when the prompt continues
    into the target (own-prefix TTS, audiolm / textlm continuation)."""
    seq = build_sequence(task, example, token_list)
    first_loss_row = int(np.argmax(seq.loss_mask))
    prompt = generation_prompt(task, example, token_list)
    assert num_condition_frames(prompt[:, 0], token_list) == first_loss_row
    continued = seq.frames[: first_loss_row + 2]  # the prompt plus two target rows
    assert num_condition_frames(continued[:, 0], token_list) == first_loss_row
