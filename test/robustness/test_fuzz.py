"""Fuzzing (issue 9 item 4): hostile bytes and values into the parsers of things users hand over.

Each test states the documented error type of one entry point and checks, on inputs hypothesis
generates, that nothing else escapes (no IndexError, UnicodeDecodeError, AttributeError, ...)
and that what is accepted is well-formed. Inputs mix valid structure with the characters and
bytes that broke parsers elsewhere (CR, NBSP, BOM, NUL, ESC, lone surrogates' UTF-8 bytes).
`max_examples` keeps the module to a few seconds; hypothesis remembers failures in .hypothesis/.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from opuslm.data import DataDirError, fix_data_dir, read_table, validate_data_dir, write_table
from opuslm.data.ark import ArkError, ScpTable
from opuslm.data.datadir import parse_segment
from opuslm.data.manifest import Manifest, ManifestError, read_lengths
from opuslm.tasks import TEMPLATES, Example, TaskError, build_sequence, generation_prompt
from opuslm.vocab import TokenList, VocabError

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Pieces of Kaldi table lines: a few ids (so that tables agree sometimes), separators and the
# characters that matter to the rules.
IDS = st.sampled_from(["u1", "u2", "u3", "spkA", "rec1", "a b", "u\u00a01", "\ufeffu1", "u\x1b"])
FIELD = st.text(alphabet="ab01.-/ \t\r\x00\u00a0\u2028|", max_size=8)
RAW = st.binary(max_size=12).filter(lambda b: b"\n" not in b)


@st.composite
def table_bytes(draw) -> bytes:
    """A table file: lines of `id value`, mixed with raw bytes, empty lines and odd endings."""
    lines = draw(
        st.lists(
            st.one_of(
                st.tuples(IDS, st.sampled_from([" ", "\t", "  "]), FIELD).map(
                    lambda t: "".join(t).encode("utf-8", "surrogatepass")
                ),
                RAW,
                st.just(b""),
            ),
            max_size=6,
        )
    )
    ending = draw(st.sampled_from([b"\n", b"\r\n", b""]))
    return b"\n".join(lines) + (ending if lines else b"")


# ----------------------------------------------------------------------------- Kaldi tables
@FUZZ
@given(content=table_bytes())
def test_read_table_raises_only_data_dir_errors_and_round_trips(content: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t"
        path.write_bytes(content)
        try:
            table = read_table(path)
        except DataDirError as e:
            assert str(e).startswith(f"{path}:")
            return
        for key in table:
            assert key and not any(c.isspace() or ord(c) < 32 for c in key)
        write_table(path, table.items())
        assert read_table(path) == table


@FUZZ
@given(
    tables=st.fixed_dictionaries(
        {},
        optional={
            name: table_bytes()
            for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "segments")
        },
    )
)
def test_validate_never_raises_and_fix_leaves_a_valid_directory(tables: dict[str, bytes]):
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in tables.items():
            (Path(tmp) / name).write_bytes(content)
        problems = validate_data_dir(tmp, check_audio_exists=False)
        assert all(p.file in tables or p.line is None for p in problems)
        try:
            fix_data_dir(tmp, verbose=False)
        except DataDirError as e:
            assert "utt2spk" in str(e) and "utt2spk" not in tables
            return
        left = validate_data_dir(tmp, require=("utt2spk",), check_audio_exists=False)
        # A directory that kept no utterance is reported as empty; anything else is valid.
        assert all("is empty" in p.message for p in left), [str(p) for p in left]


@FUZZ
@given(value=st.text(alphabet="rec1 0.5-e+naifINF\t", max_size=16))
def test_segment_values_raise_only_value_error(value: str):
    try:
        recording, start, end = parse_segment(value)
    except ValueError:
        return
    assert recording and 0 <= start and (end == -1 or end > start)
    assert np.isfinite([start, end]).all()


@FUZZ
@given(content=table_bytes())
def test_length_files_raise_only_manifest_errors(content: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "utt2num_frames"
        path.write_bytes(content)
        try:
            lengths = read_lengths(path)
        except ManifestError as e:
            assert str(e).startswith(str(path))
            return
        assert all(isinstance(n, int) for n in lengths.values())


# ----------------------------------------------------------------------------- scp and ark
@pytest.fixture(scope="module")
def valid_ark(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An ark of NPY records and one Kaldi binary record, as dumpers write them."""
    path = tmp_path_factory.mktemp("ark") / "a.ark"
    with open(path, "wb") as f:
        arrays = {"u1": np.arange(6, dtype=np.int32).reshape(2, 3), "u2": np.arange(4)}
        kaldiio.save_ark(f, arrays, write_function="numpy", write_kwargs={"allow_pickle": False})
        kaldiio.save_ark(f, {"u3": np.ones((2, 2), dtype=np.float32)})
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_scp_and_ark_raise_only_ark_errors(valid_ark: bytes, data: st.DataObject):
    # The valid ark with a few bytes changed, or cut, or random bytes.
    ark = bytearray(valid_ark)
    for _ in range(data.draw(st.integers(0, 3))):
        ark[data.draw(st.integers(0, len(ark) - 1))] = data.draw(st.integers(0, 255))
    ark = bytes(ark[: data.draw(st.integers(0, len(ark)))])
    ark = data.draw(st.one_of(st.just(ark), st.binary(max_size=200)))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a.ark").write_bytes(ark)
        keys = data.draw(st.lists(IDS, max_size=4))
        lines = [
            f"{key} {tmp}/a.ark:{data.draw(st.integers(0, len(ark) + 4))}".encode() for key in keys
        ]
        lines += data.draw(st.lists(RAW, max_size=1))
        (Path(tmp) / "a.scp").write_bytes(b"\n".join(lines) + b"\n")
        try:
            table = ScpTable(Path(tmp) / "a.scp")
            values = [table[key] for key in table]
        except ArkError as e:
            assert str(e).startswith(f"{tmp}/a.scp")
            return
        assert all(isinstance(v, np.ndarray) and v.dtype != object for v in values)


# ---------------------------------------------------------------------------- JSON loaders
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(), st.text(max_size=5)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
TOKEN_LIST = TokenList.build(["a", "b", "c"], num_semantic=2, num_codebooks=2, codebook_size=2)


def mutated(payload: dict, data: st.DataObject) -> object:
    """`payload` with some keys replaced by random JSON or dropped, or a random JSON value."""
    payload = dict(payload)
    for key in data.draw(st.lists(st.sampled_from(sorted(payload)), max_size=2)):
        if data.draw(st.booleans()):
            payload[key] = data.draw(JSON)
        else:
            payload.pop(key, None)
    return data.draw(st.one_of(st.just(payload), JSON))


@FUZZ
@given(data=st.data())
def test_token_list_loader_raises_only_vocab_errors(data: st.DataObject):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "token_list.json"
        TOKEN_LIST.save(path)
        payload = mutated(json.loads(path.read_text()), data)
        if isinstance(payload, dict) and "ranges" in payload and data.draw(st.booleans()):
            ranges = dict(payload["ranges"]) if isinstance(payload["ranges"], dict) else {}
            for name in data.draw(st.lists(st.sampled_from(sorted(ranges) or ["x"]), max_size=2)):
                ranges[name] = data.draw(st.lists(st.integers(-2, 20), max_size=3))
            payload["ranges"] = ranges
        path.write_text(json.dumps(payload))
        try:
            token_list = TokenList.load(path)
        except VocabError as e:
            assert str(e).startswith(str(path))
            return
        assert token_list.num_codebooks >= 0 and token_list.codebook_size >= 0
        assert len(token_list) == token_list.ranges["acoustic"][1]
        assert token_list.pad_id < len(token_list)


@FUZZ
@given(data=st.data())
def test_manifest_loader_raises_only_manifest_errors(data: st.DataObject):
    valid = {
        "format_version": 1,
        "task": "asr",
        "dataset": "train",
        "entries": {"speech": "speech.scp", "text": "text.scp"},
        "utt2spk": None,
        "token_list": "token_list.json",
        "token_list_sha256": "0" * 64,
        "num_streams": 3,
        "prompt_frames": 0,
        "utterances": {"u1": {"speech": 4, "text": 2, "length": 12}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.json"
        path.write_text(json.dumps(mutated(valid, data)))
        try:
            manifest = Manifest.load(path)
        except ManifestError as e:
            assert str(e).startswith(str(path))
            return
        assert manifest.lengths().dtype == np.int64 and (manifest.lengths() > 0).all()


# ---------------------------------------------------------------------------- task serialiser
FIELD_ARRAYS = st.one_of(
    st.none(),
    hnp.arrays(
        dtype=st.sampled_from([np.int8, np.int32, np.int64, np.uint64, np.float32, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    ),
    st.lists(st.integers(-3, 40), max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(
    task=st.sampled_from([*TEMPLATES, "nope"]),
    text=FIELD_ARRAYS,
    speech=FIELD_ARRAYS,
    prompt=FIELD_ARRAYS,
    loss_region=st.sampled_from(["target", "whole"]),
)
def test_task_serialiser_raises_only_task_and_vocab_errors(task, text, speech, prompt, loss_region):
    token_list = TOKEN_LIST
    example = Example("utt 1", text=text, speech=speech, prompt=prompt)
    try:
        sequence = build_sequence(task, example, token_list, loss_region)
    except (TaskError, VocabError) as e:
        assert "utt 1" in str(e)
        return
    frames, streams = sequence.frames, token_list.num_streams
    assert frames.dtype == np.int64 and frames.ndim == 2 and frames.shape[1] == streams
    assert sequence.loss_mask.shape == (len(frames),)
    assert sequence.loss_mask.any() or len(frames) == 1  # one text token: nothing to predict
    assert frames.min() >= 0 and frames.max() < len(token_list)
    for stream in range(1, streams):
        start, end = token_list.stream_range(stream)
        column = frames[:, stream]
        assert (((column >= start) & (column < end)) | (column == token_list.pad_id)).all()
    prompt_rows = generation_prompt(task, example, token_list)
    assert np.array_equal(prompt_rows, frames[: len(prompt_rows)])
