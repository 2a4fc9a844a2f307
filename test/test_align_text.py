"""`python -m opuslm.bin.align_text`: the aligner learns toy tone speech and finds where each
token starts; an utterance with too few frames gets evenly spread tokens, logged and counted."""

from __future__ import annotations

import logging

import kaldiio
import numpy as np
import soundfile
import torch
from test_lm import single_thread  # noqa: F401  (autouse: one thread for tiny models)

from opuslm.bin import align_text
from opuslm.data.ark import ScpTable
from opuslm.vocab import TokenList

SR, HOP = 16000, 320
TONES = [300.0, 900.0, 2100.0, 0.0]  # token ids 0..2 are tones, 3 is silence


def toy_set(directory, count: int, seed: int) -> dict[str, np.ndarray]:
    """A data dir + token dumps of tone 'speech' under `directory`; returns the true starts."""
    rng = np.random.default_rng(seed)
    (directory / "wav").mkdir(parents=True)
    tokens = directory / "tokens"
    tokens.mkdir()
    wav_lines, texts, speech, truth = [], {}, {}, {}
    for i in range(count):
        uttid = f"utt{seed}_{i:03d}"
        ids = rng.integers(0, 4, int(rng.integers(3, 8)))
        ids[0] = int(rng.integers(0, 3))  # no leading silence
        ids[1:][ids[1:] == ids[:-1]] = (ids[1:][ids[1:] == ids[:-1]] + 1) % 4  # no repeats
        pieces, starts, frame = [], [], 0
        for token in ids:
            n = int(rng.integers(3, 7))
            starts.append(frame)
            frame += n
            t = np.arange(n * HOP) / SR
            tone = 0.4 * np.sin(2 * np.pi * TONES[token] * rng.uniform(0.95, 1.05) * t)
            pieces.append(tone + 0.01 * rng.standard_normal(n * HOP))
        path = directory / "wav" / f"{uttid}.wav"
        soundfile.write(path, np.concatenate(pieces).astype(np.float32), SR)
        wav_lines.append(f"{uttid} {path}\n")
        texts[uttid] = ids.astype(np.int32)
        speech[uttid] = np.zeros((frame, 3), dtype=np.int32)
        truth[uttid] = np.array(starts)
    (directory / "wav.scp").write_text("".join(wav_lines))
    for name, table in (("text", texts), ("speech", speech)):
        kaldiio.save_ark(
            str(tokens / f"{name}.ark"),
            table,
            scp=str(tokens / f"{name}.scp"),
            write_function="numpy",
        )
    return truth


def test_alignments_of_unseen_utterances_find_the_starts(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    toy_set(tmp_path / "train", 64, seed=0)
    test_truth = toy_set(tmp_path / "test", 12, seed=1)
    token_list = TokenList.build(
        ["a", "b", "c", "_"], num_semantic=4, num_codebooks=2, codebook_size=3
    )
    token_list.save(tmp_path / "token_list.json")
    # One test utterance's speech dump is cut to fewer frames than it has tokens: no CTC path.
    short = sorted(test_truth)[0]
    table = {
        u: np.asarray(v)
        for u, v in kaldiio.load_scp(str(tmp_path / "test/tokens/speech.scp")).items()
    }
    table[short] = table[short][:2]
    kaldiio.save_ark(
        str(tmp_path / "test/tokens/speech2.ark"),
        table,
        scp=str(tmp_path / "test/tokens/speech.scp"),
        write_function="numpy",
    )
    common = ["--aligner_dir", str(tmp_path / "aligner"), "--hop_length", str(HOP)]
    common += ["--aligner_steps", "250", "--aligner_hidden", "24"]
    argv = ["--data_dir", str(tmp_path / "train"), "--token_dir", str(tmp_path / "train/tokens")]
    argv += ["--output_dir", str(tmp_path / "align/train"), "--train_aligner"]
    argv += ["--token_list", str(tmp_path / "token_list.json"), *common]
    with torch.random.fork_rng():
        assert align_text.main(argv) == 0
    argv = ["--data_dir", str(tmp_path / "test"), "--token_dir", str(tmp_path / "test/tokens")]
    assert align_text.main([*argv, "--output_dir", str(tmp_path / "align/test"), *common]) == 0
    aligned = ScpTable(tmp_path / "align/test/align.scp")
    assert sorted(aligned) == sorted(test_truth)
    errors = np.concatenate(
        [np.abs(np.asarray(aligned[u]) - test_truth[u]) for u in test_truth if u != short]
    )
    assert np.mean(errors <= 1) > 0.9, errors
    assert (
        np.asarray(aligned[short]).tolist()
        == (np.arange(len(test_truth[short])) * 2 // len(test_truth[short])).tolist()
    )
    assert f"utterance {short}: no CTC path" in caplog.text
    assert "12 utterances aligned, 1 spread evenly (no CTC path)" in caplog.text
    lengths = (tmp_path / "align/test/utt2num_tokens").read_text().split()
    assert lengths[1] == str(len(test_truth[sorted(test_truth)[0]]))
    # Aligning again finds the dump done; a set without the aligner trained fails clearly.
    assert align_text.main([*argv, "--output_dir", str(tmp_path / "align/test"), *common]) == 0
    assert "complete and up to date" in caplog.text
    common[1] = str(tmp_path / "none")
    assert align_text.main([*argv, "--output_dir", str(tmp_path / "x"), *common]) == 1
    assert "no aligner" in caplog.text and "--train_aligner" in caplog.text
