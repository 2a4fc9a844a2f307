"""Greedy ASR straight from token dumps (opuslm.bin.decode_asr_dumps), as the experiments use it."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from test_trainer import SINGLE, make_experiment

from opuslm.bin import decode_asr_dumps
from opuslm.bin.decode_asr_dumps import load_checkpoint_model, transcribe_manifest
from opuslm.data.manifest import Manifest
from opuslm.model.word_lm import WordNgramLM
from opuslm.train.config import load_config
from opuslm.train.trainer import Trainer


def as_words(ids):
    return " ".join(f"t{i}" for i in ids)


def test_transcripts_cover_the_manifest_and_do_not_depend_on_batching(tmp_path, monkeypatch):
    # A CTC head (model.ctc_weight) for joint decoding too.
    config_path = make_experiment(tmp_path, num_utts=10, model={"ctc_weight": 0.3})
    # A near-random model (lr 1e-8): it emits text ids instead of a learnt early eos.
    overrides = ["schedule.max_steps=2", "schedule.warmup_steps=0", "optim.lr=1e-8"]
    Trainer(load_config(config_path, overrides), tmp_path / "exp", SINGLE).run()
    model = load_checkpoint_model(tmp_path / "exp", "cpu")
    manifest = Manifest.load(tmp_path / "manifests" / "asr" / "data.json")

    with torch.inference_mode():
        one_by_one = transcribe_manifest(model, manifest, as_words, batch_size=1, max_frames=6)
        batched = transcribe_manifest(model, manifest, as_words, batch_size=4, max_frames=6)
        joint = {
            batch_size: transcribe_manifest(
                model, manifest, as_words, batch_size, max_frames=6, ctc_weight=0.5
            )
            for batch_size in (1, 4)
        }
    assert sorted(one_by_one) == sorted(manifest.uttids)
    assert batched == one_by_one
    assert sum(map(bool, one_by_one.values())) >= 5  # text was decoded, not only eos
    assert joint[4] == joint[1] and sorted(joint[1]) == sorted(manifest.uttids)
    assert joint[1] != one_by_one  # the CTC scores are in effect

    # The command line passes --ctc_weight, --ctc_pre_beam and --beam_size through.
    seen = {}
    plain_transcribe = decode_asr_dumps.transcribe_manifest

    def spy(*args):
        seen["args"] = args
        return plain_transcribe(*args)

    monkeypatch.setattr(decode_asr_dumps, "transcribe_manifest", spy)
    monkeypatch.setattr(
        decode_asr_dumps, "load_text_tokenizer", lambda _: SimpleNamespace(decode=as_words)
    )
    output = tmp_path / "joint" / "text"
    argv = ["--checkpoint", str(tmp_path / "exp"), "--text_tokenizer_dir", "unused"]
    argv += ["--manifest", str(manifest.path), "--output", str(output), "--device", "cpu"]
    decode_asr_dumps.main(
        [*argv, "--max_frames", "6", "--ctc_weight", "0.5", "--ctc_pre_beam", "3"]
        + ["--beam_size", "2"]
    )
    assert seen["args"][-7:] == (0.5, 3, 2, None, 0.0, None, 0.0)
    lines = output.read_text().splitlines()
    assert len(lines) == len(manifest.uttids)
    # ... and --lexicon with --lexicon_penalty, read through the tokenizer's surfaces.
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("ab 3\nba 1\n")
    monkeypatch.setattr(
        decode_asr_dumps,
        "load_text_tokenizer",
        lambda _: SimpleNamespace(decode=as_words, surfaces=lambda: ["a", "b", " "]),
    )
    decode_asr_dumps.main([*argv, "--lexicon", str(lexicon), "--lexicon_penalty", "2.5"])
    passed, penalty = seen["args"][-4:-2]
    assert penalty == 2.5 and len(passed) == 2 and passed.move(0, 0)[1] == 0
    # ... and --word_lm with --word_lm_weight, likewise.
    counts = tmp_path / "word_lm.counts"
    WordNgramLM.from_sentences([["ab", "ba"]], 2).save(counts)
    decode_asr_dumps.main([*argv, "--word_lm", str(counts), "--word_lm_weight", "0.5"])
    passed, weight = seen["args"][-2:]
    assert weight == 0.5 and passed.lm.words == ["ab", "ba"] and passed.surfaces == ["a", "b", " "]
    with pytest.raises(SystemExit):
        decode_asr_dumps.main([*argv, "--lexicon_penalty", "2.5"])  # no --lexicon
    with pytest.raises(SystemExit):
        decode_asr_dumps.main([*argv, "--word_lm_weight", "0.5"])  # no --word_lm


def test_a_tts_manifest_or_joint_decoding_without_a_ctc_head_is_refused(tmp_path):
    config_path = make_experiment(tmp_path, num_utts=6)
    Trainer(
        load_config(config_path, ["schedule.max_steps=1", "schedule.warmup_steps=0"]),
        tmp_path / "exp",
        SINGLE,
    ).run()
    model = load_checkpoint_model(tmp_path / "exp", "cpu")
    tts = Manifest.load(tmp_path / "manifests" / "tts" / "data.json")
    with pytest.raises(ValueError, match="an asr manifest is needed"):
        transcribe_manifest(model, tts, str)
    asr = Manifest.load(tmp_path / "manifests" / "asr" / "data.json")
    with pytest.raises(ValueError, match="needs a model with a CTC head"):
        transcribe_manifest(model, asr, as_words, ctc_weight=0.3)


def test_training_and_dump_decoding_import_without_the_audio_libraries():
    # GPU machines that only read token dumps may lack librosa (a feature-extraction dependency):
    # importing it must wait until features are computed. sys.modules[name] = None makes any
    # import of it fail, as on such a machine.
    code = (
        "import sys\n"
        "sys.modules['librosa'] = None\n"
        "import opuslm.bin.decode_asr_dumps, opuslm.bin.train\n"
        "from opuslm.tokenizers.semantic import SpectralFeatures\n"
        "try:\n"
        "    SpectralFeatures()\n"
        "except ImportError:\n"
        "    print('features need librosa')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "features need librosa"
