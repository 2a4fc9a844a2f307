"""Joint vocabulary: layout, save/load round trip, encode/decode, mismatch errors."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from opuslm.vocab import DEFAULT_SPECIAL_SLOTS, TokenList, VocabError


def small(**kw) -> TokenList:
    args = dict(
        text_tokens=["a", "b", "c"],
        num_text_rows=5,
        num_semantic=4,
        num_codebooks=2,
        codebook_size=3,
    )
    args.update(kw)
    return TokenList.build(**args)


def test_layout_follows_design():
    tl = small()
    assert tl.ranges == {
        "text": (0, 5),
        "special": (5, 5 + DEFAULT_SPECIAL_SLOTS),
        "semantic": (69, 73),
        "acoustic": (73, 79),
    }
    assert tl.tokens[:5] == ("a", "b", "c", "<unused_text_3>", "<unused_text_4>")
    assert tl.tokens[5:9] == ("<pad>", "<sos>", "<eos>", "<eou>")
    assert tl.pad_id == 5 and tl.sos_id == 6 and tl.eos_id == 7
    assert tl.task_id("asr") == tl.id("<asr_task>")
    assert tl.start_id("speech") == tl.id("<speech_start>")
    assert tl.tasks == ["asr", "tts", "audiolm", "textlm"]
    assert tl.num_streams == 3
    assert tl.stream_range(0) == (0, 79)
    assert tl.stream_range(1) == (73, 76) and tl.stream_range(2) == (76, 79)
    assert tl.modality_ids().tolist() == [0] * 5 + [1] * 64 + [2] * 4 + [3] * 6


def test_new_task_takes_a_reserved_slot_without_moving_ids():
    base = small()
    more = small(tasks=["asr", "tts", "audiolm", "textlm", "s2st"])
    assert more.id("<s2st_task>") == base.id("<reserved_0>")
    for name in ("text", "semantic", "acoustic"):
        assert more.ranges[name] == base.ranges[name]


def test_save_load_round_trip(tmp_path):
    tl = small()
    tl.save(tmp_path / "token_list.json")
    assert TokenList.load(tmp_path / "token_list.json") == tl
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token_list.json"]


def test_mismatch_names_first_difference():
    a = small()
    b = TokenList.build(["a", "x", "c"], 5, 4, 2, 3)
    with pytest.raises(VocabError, match=r"token id 1: 'b' vs 'x'"):
        a.require_same(b)
    with pytest.raises(VocabError, match="range of semantic"):
        a.require_same(small(num_semantic=5, num_codebooks=2))
    with pytest.raises(VocabError, match="codebook_size: 3 vs 4"):
        a.require_same(small(codebook_size=4))
    a.require_same(small())


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a valid token_list.json"),
        ("[]", "expected a JSON object"),
        ('{"tokens": []}', "missing keys"),
    ],
)
def test_load_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "token_list.json"
    path.write_text(content)
    with pytest.raises(VocabError, match=message) as err:
        TokenList.load(path)
    assert str(path) in str(err.value)


def test_load_rejects_inconsistent_ranges(tmp_path):
    tl = small()
    tl.save(tmp_path / "t.json")
    payload = json.loads((tmp_path / "t.json").read_text())
    payload["ranges"]["semantic"] = [69, 74]
    (tmp_path / "t.json").write_text(json.dumps(payload))
    with pytest.raises(VocabError, match="range of 'acoustic'"):
        TokenList.load(tmp_path / "t.json")


def test_text_rows_cannot_be_fewer_than_tokenizer():
    with pytest.raises(VocabError, match="embedding rows"):
        TokenList.build(["a", "b", "c"], num_text_rows=2)


def test_out_of_range_units_are_errors():
    tl = small()
    with pytest.raises(VocabError, match="semantic units"):
        tl.encode_semantic([0, 4])
    with pytest.raises(VocabError, match="acoustic codes"):
        tl.encode_acoustic([[0, 3]])
    with pytest.raises(VocabError, match=r"audio frames must be \[T, 3\]"):
        tl.encode_frames(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(VocabError, match="not semantic ids"):
        tl.decode_semantic([0])
    with pytest.raises(VocabError, match="own codebook"):
        tl.decode_acoustic([[76, 76]])


@given(
    st.integers(1, 6),
    st.integers(0, 4),
    st.integers(1, 5),
    st.data(),
)
def test_frames_round_trip(num_semantic, num_codebooks, codebook_size, data):
    tl = TokenList.build([f"t{i}" for i in range(7)], 9, num_semantic, num_codebooks, codebook_size)
    rows = data.draw(st.integers(0, 6))
    semantic = np.array(
        data.draw(st.lists(st.integers(0, num_semantic - 1), min_size=rows, max_size=rows)),
        dtype=np.int64,
    )
    codes = np.array(
        data.draw(
            st.lists(
                st.lists(
                    st.integers(0, codebook_size - 1),
                    min_size=num_codebooks,
                    max_size=num_codebooks,
                ),
                min_size=rows,
                max_size=rows,
            )
        ),
        dtype=np.int64,
    ).reshape(rows, num_codebooks)
    frames = np.concatenate([semantic[:, None], codes], axis=1)
    ids = tl.encode_frames(frames)
    for s in range(1, tl.num_streams):
        lo, hi = tl.stream_range(s)
        assert ((ids[:, s] >= lo) & (ids[:, s] < hi)).all()
    assert np.array_equal(tl.decode_frames(ids), frames)
