"""Judging in worker processes (`transcribe_all`, score_tts / copy_synthesis --nj): the same
transcripts and output files as in one process, in input order, and errors that name the
utterance."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from length_judge import LengthJudge
from test_judges import SENTENCES, flite_wav

from opuslm.audio import AudioError, AudioReader
from opuslm.bin import score_tts
from opuslm.eval import judges
from opuslm.eval.judges import JudgeError, PocketsphinxJudge, transcribe_all

# Words without a sentence: pocketsphinx's language model helps little, so its transcript is
# the first to change with anything else that changes.
WORD_SALAD = "weather nice brown please meet will is when we home by meet"


@pytest.fixture(scope="module")
def lengths_scp(tmp_path_factory) -> Path:
    """8 utterances of silence, utt<i> with 1000 * (i + 1) samples."""
    root = tmp_path_factory.mktemp("lengths")
    lines = []
    for i in range(8):
        sf.write(root / f"{i}.wav", np.zeros(1000 * (i + 1), np.float32), 16000)
        lines.append(f"utt{i} {root / f'{i}.wav'}\n")
    (root / "wav.scp").write_text("".join(lines), encoding="utf-8")
    return root / "wav.scp"


@pytest.fixture(autouse=True)
def pool_for_any_size(monkeypatch):
    """These tests exercise the pool on a handful of items: no minimum per worker."""
    monkeypatch.setattr(judges, "MIN_ITEMS_PER_WORKER", 1)


def test_small_sets_are_judged_without_a_pool(lengths_scp, monkeypatch):
    monkeypatch.setattr(judges, "MIN_ITEMS_PER_WORKER", 5)
    sources = {"syn": AudioReader(lengths_scp)}
    items = [("syn", f"utt{i}") for i in range(8)]  # 8 items: one worker's worth
    assert {int(t.text.split()[1]) for t in transcribe_all(LengthJudge(), sources, items, 2)} == {
        os.getpid()
    }


def test_transcribe_all_keeps_input_order_across_workers(lengths_scp, tmp_path):
    sources = {"syn": AudioReader(lengths_scp)}
    items = [("syn", f"utt{i}") for i in (3, 0, 7, 1, 6, 2, 5, 4)]
    local = transcribe_all(LengthJudge(), sources, items, nj=1)
    pooled = transcribe_all(LengthJudge(meet=tmp_path), sources, items, nj=2)
    expected = [1000 * (int(uttid[3:]) + 1) for _, uttid in items]
    assert [t.num_samples for t in pooled] == [t.num_samples for t in local] == expected
    assert [int(t.text.split()[0]) for t in pooled] == expected
    assert {int(t.text.split()[1]) for t in local} == {os.getpid()}  # nj=1: no pool
    worker_pids = {int(t.text.split()[1]) for t in pooled}
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids


@pytest.mark.parametrize("nj", [1, 2])
def test_judge_error_in_a_worker_names_the_utterance(lengths_scp, nj):
    sources = {"synthesised audio x.scp": AudioReader(lengths_scp)}
    items = [("synthesised audio x.scp", f"utt{i}") for i in range(8)]
    with pytest.raises(JudgeError) as error:
        transcribe_all(LengthJudge(fail_length=6000), sources, items, nj)
    assert str(error.value) == (
        "the length judge failed on utterance utt5 of synthesised audio x.scp: "
        "RuntimeError: model exploded"
    )


def test_transcribe_all_rejects_bad_arguments(lengths_scp):
    sources = {"a": AudioReader(lengths_scp), "b": AudioReader(lengths_scp, sample_rate=8000)}
    with pytest.raises(ValueError, match="nj must be at least 1"):
        transcribe_all(LengthJudge(), sources, [], nj=0)
    with pytest.raises(ValueError, match="different sample rates"):
        transcribe_all(LengthJudge(), sources, [("a", "utt0")])
    with pytest.raises(ValueError, match=r"unknown audio sources \['c'\]"):
        transcribe_all(LengthJudge(), {"a": sources["a"]}, [("c", "utt0")])


def test_pocketsphinx_transcript_does_not_depend_on_earlier_utterances(tmp_path):
    # Its noise-removal statistics used to carry over, so judging the same audio twice, or in
    # another order (as workers do), gave other words; word salad shows it best.
    texts = [SENTENCES[0], WORD_SALAD]
    wavs = [
        sf.read(flite_wav(tmp_path / f"{i}.wav", t), dtype="float32")[0]
        for i, t in enumerate(texts)
    ]
    fresh = [PocketsphinxJudge().transcribe(wav, 16000) for wav in wavs]
    judge = PocketsphinxJudge()
    order = [0, 1, 1]
    assert [judge.transcribe(wavs[i], 16000) for i in order] == [fresh[i] for i in order]


# --------------------------------------------------------------------------- score_tts --nj
@pytest.fixture(scope="module")
def tts_samples(tmp_path_factory) -> dict[str, Path]:
    """3 flite utterances; 2 synthesised samples each for utt0 and utt1 (silence, its own audio
    or another utterance's), none for utt2."""
    root = tmp_path_factory.mktemp("tts_nj")
    texts = [SENTENCES[0], SENTENCES[1], WORD_SALAD]
    refs = [flite_wav(root / f"ref{i}.wav", text) for i, text in enumerate(texts)]
    silence = root / "silence.wav"
    sf.write(silence, np.zeros(8000, np.float32), 16000)
    syn = {
        "utt0_sample0": silence,
        "utt0_sample1": refs[0],
        "utt1_sample0": refs[1],
        "utt1_sample1": refs[2],
    }
    files = {
        "text": {f"utt{i}": text for i, text in enumerate(texts)},
        "wav.scp": {f"utt{i}": path for i, path in enumerate(refs)},
        "syn.scp": syn,
    }
    for name, table in files.items():
        lines = "".join(f"{key} {value}\n" for key, value in table.items())
        (root / name).write_text(lines, encoding="utf-8")
    return {name: root / name for name in files}


def test_score_tts_nj2_writes_the_same_files_as_nj1(tts_samples, tmp_path):
    outputs = {}
    for nj in (1, 2):
        out = tmp_path / f"nj{nj}"
        args = ["--ref_text", str(tts_samples["text"]), "--ref_wav_scp"]
        args += [str(tts_samples["wav.scp"]), "--syn_wav_scp", str(tts_samples["syn.scp"])]
        args += ["--output_dir", str(out), "--best_of_n", "2", "--nj", str(nj)]
        assert score_tts.main(args) == 0
        outputs[nj] = {path.name: path.read_bytes() for path in sorted(out.iterdir())}
    names = ["best_sample", "judge_ref_text", "judge_text", "result.txt", "result_ref.txt"]
    assert list(outputs[1]) == [*names, "score.json"]
    assert outputs[2] == outputs[1]
    # The sample choice needs each transcript matched to its own key.
    chosen = outputs[1]["best_sample"].decode().split()
    assert chosen == ["utt0", "utt0_sample1", "utt1", "utt1_sample0"]
    assert b'"num_missing_syn": 1' in outputs[1]["score.json"]


def test_score_tts_unreadable_audio_in_a_worker_names_the_utterance(tts_samples, tmp_path, caplog):
    syn_scp = tmp_path / "syn.scp"
    syn_scp.write_text(
        f"utt0 {tts_samples['wav.scp'].parent / 'ref0.wav'}\nutt1 {tmp_path / 'gone.wav'}\n",
        encoding="utf-8",
    )
    args = ["--ref_text", str(tts_samples["text"]), "--ref_wav_scp", str(tts_samples["wav.scp"])]
    args += ["--syn_wav_scp", str(syn_scp), "--output_dir", str(tmp_path / "out"), "--nj", "2"]
    assert score_tts.main(args) == 1
    assert f"utterance utt1: audio file {tmp_path / 'gone.wav'} does not exist" in caplog.text
    assert not (tmp_path / "out" / "score.json").exists()


def test_audio_error_is_raised_unchanged_from_a_worker(lengths_scp, tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_text(lengths_scp.read_text() + f"utt9 {tmp_path / 'gone.wav'}\n", encoding="utf-8")
    items = [("a", f"utt{i}") for i in (0, 1, 9)]
    with pytest.raises(AudioError, match="utterance utt9: audio file .* does not exist"):
        transcribe_all(LengthJudge(), {"a": AudioReader(scp)}, items, nj=2)
