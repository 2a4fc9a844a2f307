"""`python -m opuslm.bin.infer` on the tiny packed model: output files, nbest, resuming, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from tiny_model import UTTERANCES, TinyModel

from opuslm import OpusLM
from opuslm.bin import infer

UTTIDS = sorted(UTTERANCES)


@pytest.fixture(scope="module")
def model(tiny: TinyModel) -> OpusLM:
    return OpusLM.from_pretrained(tiny.packed_dir)


def table(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return {line.split(maxsplit=1)[0]: line.partition(" ")[2] for line in lines}


def run_asr(tiny: TinyModel, output_dir: Path, *extra: str) -> int:
    argv = ["--model_dir", str(tiny.packed_dir), "--task", "asr", "--wav_scp", str(tiny.wav_scp)]
    return infer.main([*argv, "--output_dir", str(output_dir), "--batch_size", "2", *extra])


def test_asr_writes_sorted_text_equal_to_the_api_and_its_settings(
    tiny: TinyModel, model: OpusLM, tmp_path: Path
):
    assert run_asr(tiny, tmp_path) == 0
    lines = (tmp_path / "text").read_text().splitlines()
    assert [line.split()[0] for line in lines] == UTTIDS
    hyps = table(tmp_path / "text")
    for uttid, path in tiny.wavs.items():
        wav, sample_rate = sf.read(path, dtype="float32")
        assert hyps[uttid] == model.transcribe(wav, sample_rate)
    settings = yaml.safe_load((tmp_path / "decode_config.yaml").read_text())
    assert settings["task"] == "asr" and settings["max_frames"] == 8
    assert settings["text"]["greedy"] is True and "semantic" not in settings
    decoding = ("max_len_ratio", "ctc_weight", "ctc_pre_beam", "beam_size")
    assert [settings[key] for key in decoding] == [0, 0, 20, 1]
    assert not list((tmp_path / "parts").iterdir())


def test_asr_resumes_and_skips_finished_utterances(tiny: TinyModel, tmp_path: Path):
    # A finished merged line, a finished record of a killed job, and a torn record.
    (tmp_path / "text").write_text("utt_a FROM MERGED OUTPUT\n")
    (tmp_path / "parts").mkdir()
    record = {"uttid": "utt_b", "lines": {"text": "utt_b FROM A JOB RECORD"}}
    torn = json.dumps({"uttid": "utt_c", "lines": {"text": "utt_c TORN"}})[:20]
    (tmp_path / "parts" / "job.1.jsonl").write_text(json.dumps(record) + "\n" + torn)
    assert run_asr(tiny, tmp_path) == 0
    hyps = table(tmp_path / "text")
    assert hyps["utt_a"] == "FROM MERGED OUTPUT"
    assert hyps["utt_b"] == "FROM A JOB RECORD"
    assert sorted(hyps) == UTTIDS and "TORN" not in hyps["utt_c"]


def test_tts_nbest_writes_wavs_and_scp_files(tiny: TinyModel, tmp_path: Path):
    prompt_scp = tmp_path / "prompt.scp"
    prompt_scp.write_text("".join(f"{u} {tiny.wavs['utt_b']}\n" for u in UTTIDS))
    output_dir = tmp_path / "out"
    argv = ["--model_dir", str(tiny.packed_dir), "--task", "tts", "--text", str(tiny.text)]
    argv += ["--prompt_scp", str(prompt_scp), "--output_dir", str(output_dir), "--nbest", "2"]
    assert infer.main(argv) == 0
    first, second = table(output_dir / "wav.scp"), table(output_dir / "wav.scp.1")
    assert sorted(first) == UTTIDS
    assert sorted(second) == [f"{u}_sample1" for u in UTTIDS]
    assert sorted(table(output_dir / "wav_nbest.scp")) == sorted([*first, *second])
    for uttid in UTTIDS:
        assert first[uttid] == str(output_dir / "wav" / f"{uttid}.wav")
        info = sf.info(first[uttid])
        assert info.samplerate == 16000 and info.subtype == "PCM_16"
        assert 0 < info.frames <= 12 * 320
        assert Path(second[f"{uttid}_sample1"]).is_file()
    settings = yaml.safe_load((output_dir / "decode_config.yaml").read_text())
    assert settings["prompt"] == "prompt_scp" and settings["nbest"] == 2
    assert settings["semantic"]["greedy"] is False and "text" not in settings


def test_audiolm_writes_continuations(tiny: TinyModel, tmp_path: Path):
    argv = ["--model_dir", str(tiny.packed_dir), "--task", "audiolm"]
    argv += ["--wav_scp", str(tiny.wav_scp), "--output_dir", str(tmp_path)]
    assert infer.main(argv) == 0
    wavs = table(tmp_path / "wav.scp")
    assert sorted(wavs) == UTTIDS
    assert all(0 < sf.info(path).frames <= 6 * 320 for path in wavs.values())


def test_textlm_and_decode_config_overrides(tiny: TinyModel, tmp_path: Path):
    decode_config = tmp_path / "decode.yaml"
    decode_config.write_text(yaml.safe_dump({"max_frames": 3, "text": {"greedy": False}}))
    argv = ["--model_dir", str(tiny.packed_dir), "--task", "textlm", "--text", str(tiny.text)]
    argv += ["--output_dir", str(tmp_path / "out"), "--decode_config", str(decode_config)]
    assert infer.main([*argv, "--nbest", "2"]) == 0
    assert sorted(table(tmp_path / "out" / "text")) == UTTIDS
    assert (tmp_path / "out" / "nbest" / "text.0").read_text() == (
        tmp_path / "out" / "text"
    ).read_text()
    assert sorted(table(tmp_path / "out" / "nbest" / "text.1")) == UTTIDS
    settings = yaml.safe_load((tmp_path / "out" / "decode_config.yaml").read_text())
    assert settings["max_frames"] == 3 and settings["text"]["greedy"] is False


def test_bad_inputs_fail_with_a_message(tiny: TinyModel, tmp_path: Path, caplog):
    prompt_scp = tmp_path / "prompt.scp"
    prompt_scp.write_text(f"utt_a {tiny.wavs['utt_a']}\n")
    argv = ["--model_dir", str(tiny.packed_dir), "--task", "tts", "--text", str(tiny.text)]
    argv += ["--output_dir", str(tmp_path / "out"), "--prompt_scp", str(prompt_scp)]
    assert infer.main(argv) == 1
    assert "no speaker prompt for utterance utt_b" in caplog.text
    bad_config = tmp_path / "decode.yaml"
    bad_config.write_text("max_frame: 3\n")
    assert run_asr(tiny, tmp_path / "asr", "--decode_config", str(bad_config)) == 1
    assert "unknown decoding key 'max_frame'" in caplog.text
    bad_config.write_text("ctc_weight: 0.3\n")  # the tiny model has no CTC head
    assert run_asr(tiny, tmp_path / "asr", "--decode_config", str(bad_config)) == 1
    assert "ctc_weight 0.3 needs a model with a CTC head" in caplog.text
    with pytest.raises(SystemExit):
        infer.main(["--model_dir", str(tiny.packed_dir), "--task", "tts", "--output_dir", "x"])


@pytest.mark.slow
def test_parallel_jobs_give_the_single_job_output(tiny: TinyModel, tmp_path: Path):
    assert run_asr(tiny, tmp_path / "one") == 0
    assert run_asr(tiny, tmp_path / "two", "--nj", "2") == 0
    assert (tmp_path / "two" / "text").read_text() == (tmp_path / "one" / "text").read_text()
    assert len(list((tmp_path / "two" / "log").glob("infer.*.log"))) == 2


def test_interleaved_tts_drops_the_transcript_rows_from_the_audio(
    tiny: TinyModel, model: OpusLM, tmp_path: Path, caplog
):
    decoding = {"interleave_text": True, "max_frames": 40, "advance_penalty": 0.5}
    prompt = model.tts_prompt("hello there")
    frames = model.generate("tts", [prompt], decoding, seed=0)[0]
    low, high = model.token_list.ranges["semantic"]
    speech_rows = int(((frames[:, 0] >= low) & (frames[:, 0] < high)).sum())
    assert 0 < speech_rows < len(frames)  # the transcript's rows are in the output
    wav, _ = model.decode_audio(frames)
    assert len(wav) == speech_rows * 320
    decode_config = tmp_path / "decode.yaml"
    decode_config.write_text(yaml.safe_dump(decoding))
    argv = ["--model_dir", str(tiny.packed_dir), "--task", "tts", "--text", str(tiny.text)]
    argv += ["--output_dir", str(tmp_path / "out"), "--decode_config", str(decode_config)]
    assert infer.main(argv) == 0
    settings = yaml.safe_load((tmp_path / "out" / "decode_config.yaml").read_text())
    assert settings["interleave_text"] is True and settings["advance_penalty"] == 0.5
    decode_config.write_text("interleave_text: 'yes'\n")
    argv = ["--model_dir", str(tiny.packed_dir), "--task", "tts", "--text", str(tiny.text)]
    argv += ["--output_dir", str(tmp_path / "bad"), "--decode_config", str(decode_config)]
    assert infer.main(argv) == 1
    assert "interleave_text" in caplog.text and "expected true or false" in caplog.text
