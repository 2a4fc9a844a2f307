"""Time masks on ASR speech rows (opuslm.data.augment) and where training applies them."""

from __future__ import annotations

import numpy as np
import pytest
from test_manifest import tiny_token_list, write_corpus
from test_trainer import SINGLE, make_experiment

from opuslm.data.augment import SpeechTimeMask
from opuslm.data.dataset import TaskDataset
from opuslm.data.manifest import Manifest, build_manifest
from opuslm.data.sampler import BatchItem
from opuslm.train.config import ConfigError, load_config
from opuslm.train.trainer import Trainer


def test_masks_replace_whole_frames_with_units_of_each_streams_own_range():
    mask = SpeechTimeMask(num_masks=3, max_width=4, stream_sizes=(5, 7, 7))
    rows = np.full((40, 3), -1)  # outside every range: changed cells are easy to find
    out = mask(rows, np.random.default_rng(0))
    assert (rows == -1).all()  # the input is not modified
    changed = (out != -1).any(axis=1)
    assert (out[changed] != -1).all()  # a masked frame is masked in every stream
    assert 1 <= changed.sum() <= 3 * 4
    for stream, size in enumerate((5, 7, 7)):
        assert out[changed, stream].min() >= 0 and out[changed, stream].max() < size
    # Same generator state, same masks: resumed training rebuilds the same batches.
    again = mask(rows, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)


def test_masks_fit_short_utterances_and_zero_masks_change_nothing():
    short = np.full((2, 2), -1)
    out = SpeechTimeMask(num_masks=5, max_width=10, stream_sizes=(3, 3))(
        short, np.random.default_rng(1)
    )
    assert out.shape == (2, 2) and (out != -1).any()
    rows = np.arange(20).reshape(10, 2)
    np.testing.assert_array_equal(
        SpeechTimeMask(0, 5, (100, 100))(rows, np.random.default_rng(0)), rows
    )
    assert SpeechTimeMask(2, 3, (3, 3))(np.zeros((0, 2)), np.random.default_rng(0)).shape == (0, 2)
    with pytest.raises(ValueError, match=r"speech rows must be \[T, 2\]"):
        SpeechTimeMask(1, 3, (3, 3))(np.zeros((4, 3)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_width >= 1"):
        SpeechTimeMask(1, 0, (3, 3))


def test_sizes_follow_the_token_list():
    token_list = tiny_token_list(num_semantic=11, num_codebooks=2, codebook_size=6)
    assert SpeechTimeMask.for_token_list(2, 3, token_list).stream_sizes == (11, 6, 6)


@pytest.mark.parametrize("task", ["asr", "tts"])
def test_dataset_masks_the_speech_of_asr_examples_only(tmp_path, task):
    paths = write_corpus(tmp_path / "dump", num_utts=6, speech_frames=(30, 40))
    output = tmp_path / task / "data.json"
    entries = {"speech": paths["speech"], "text": paths["text"]}
    prompt = 4 if task == "tts" else 0
    build_manifest(
        task, "x", paths["token_list"], entries, output, paths["utt2spk"], prompt_frames=prompt
    ).save()
    token_list = tiny_token_list()
    plain = TaskDataset([Manifest.load(output)], token_list)
    mask = SpeechTimeMask.for_token_list(4, 5, token_list)
    masked = TaskDataset([Manifest.load(output)], token_list, asr_speech_mask=mask)
    differs = []
    for index in range(6):
        item = BatchItem(manifest=0, index=index, position=0)
        a, b = plain[item], masked[item]
        assert a.frames.shape == b.frames.shape
        np.testing.assert_array_equal(a.loss_mask, b.loss_mask)
        # The transcript (the rows with loss) is never touched.
        np.testing.assert_array_equal(a.frames[a.loss_mask], b.frames[b.loss_mask])
        differs.append(not np.array_equal(a.frames, b.frames))
        np.testing.assert_array_equal(b.frames, masked[item].frames)  # deterministic per item
    assert all(differs) if task == "asr" else not any(differs)


def test_trainer_masks_training_data_but_not_validation(tmp_path):
    config_path = make_experiment(
        tmp_path, num_utts=8, data={"asr_speech_mask": {"num_masks": 2, "max_width": 3}}
    )
    trainer = Trainer(load_config(config_path, ["schedule.max_steps=3"]), tmp_path / "exp", SINGLE)
    assert trainer.dataset.asr_speech_mask == SpeechTimeMask.for_token_list(
        2, 3, trainer.token_list
    )
    assert trainer.valid_dataset.asr_speech_mask is None
    trainer.run()  # masked batches go through the loader and the model
    assert (tmp_path / "exp" / "checkpoints" / "latest").exists()
    bad = load_config(config_path, ["data.asr_speech_mask.num_masks=-1"])
    with pytest.raises(ConfigError, match="data.asr_speech_mask needs num_masks >= 0"):
        bad.validate()
