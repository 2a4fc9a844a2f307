"""Greedy ASR straight from token dumps (opuslm.bin.decode_asr_dumps), as the experiments use it."""

from __future__ import annotations

import pytest
import torch
from test_trainer import SINGLE, make_experiment

from opuslm.bin.decode_asr_dumps import load_checkpoint_model, transcribe_manifest
from opuslm.data.manifest import Manifest
from opuslm.train.config import load_config
from opuslm.train.trainer import Trainer


def test_transcripts_cover_the_manifest_and_do_not_depend_on_batching(tmp_path):
    config_path = make_experiment(tmp_path, num_utts=10)
    # A near-random model (lr 1e-8): it emits text ids instead of a learnt early eos.
    overrides = ["schedule.max_steps=2", "schedule.warmup_steps=0", "optim.lr=1e-8"]
    Trainer(load_config(config_path, overrides), tmp_path / "exp", SINGLE).run()
    model = load_checkpoint_model(tmp_path / "exp", "cpu")
    manifest = Manifest.load(tmp_path / "manifests" / "asr" / "data.json")

    def as_words(ids):
        return " ".join(f"t{i}" for i in ids)

    with torch.inference_mode():
        one_by_one = transcribe_manifest(model, manifest, as_words, batch_size=1, max_frames=6)
        batched = transcribe_manifest(model, manifest, as_words, batch_size=4, max_frames=6)
    assert sorted(one_by_one) == sorted(manifest.uttids)
    assert batched == one_by_one
    assert sum(map(bool, one_by_one.values())) >= 5  # text was decoded, not only eos


def test_a_tts_manifest_is_refused(tmp_path):
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
