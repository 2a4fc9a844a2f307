"""Transcript dropout (MultiStreamLM.transcript_dropout): which input rows are hidden, that the
targets and evaluation are untouched, and the settings."""

from __future__ import annotations

import pytest
import torch
from test_lm import (
    ctc_batch,
    single_thread,  # noqa: F401  (autouse: one thread for tiny models)
    tiny_config,
    tiny_token_list,
)

from opuslm.model.delay import delay
from opuslm.model.lm import MultiStreamLM
from opuslm.train.config import ConfigError, load_config


def models(dropout: float = 0.5):
    """The same random weights without and with transcript dropout."""
    token_list = tiny_token_list()
    torch.manual_seed(0)
    plain = MultiStreamLM.from_base(tiny_config(), token_list)
    dropping = MultiStreamLM.from_base(tiny_config(), token_list, transcript_dropout=dropout)
    dropping.load_state_dict(plain.state_dict())
    return token_list, plain, dropping


def test_only_the_asr_transcript_inputs_are_hidden():
    token_list, _, model = models(0.5)
    frames, loss_mask, lengths, _, text = ctc_batch(token_list)  # [ASR, TTS]
    positions = torch.arange(frames.shape[1])
    target = loss_mask & (positions < lengths[:, None])
    inputs = delay(frames, token_list.pad_id)[:, :-1]
    text_lo, text_hi = token_list.ranges["text"]
    stream0 = frames[..., 0]
    asr_text_rows = torch.nonzero(target[0] & (stream0[0] >= text_lo) & (stream0[0] < text_hi))
    asr_text_rows = set(asr_text_rows.flatten().tolist())
    assert len(asr_text_rows) == len(text)
    hidden_count = 0
    for seed in range(200):
        torch.manual_seed(seed)
        hidden = model._hide_transcript(inputs, frames, target)
        changed = torch.nonzero(hidden != inputs).tolist()
        # only stream 0 of the ASR example's transcript rows, and only to pad
        assert {(b, s) for b, _, s in changed} <= {(0, 0)}
        assert {row for _, row, _ in changed} <= asr_text_rows
        assert all(int(hidden[b, r, s]) == token_list.pad_id for b, r, s in changed)
        hidden_count += len(changed)
    assert inputs[0, min(asr_text_rows), 0] != token_list.pad_id  # the input was not modified
    assert hidden_count / (200 * len(text)) == pytest.approx(0.5, abs=0.06)


@torch.no_grad()
def test_training_losses_see_hidden_inputs_and_keep_their_targets():
    token_list, plain, model = models(0.5)
    frames, loss_mask, lengths, _, _ = ctc_batch(token_list)
    plain.eval()
    model.eval()  # evaluation and decoding never hide anything
    assert float(model(frames, loss_mask, lengths).loss) == float(
        plain(frames, loss_mask, lengths).loss
    )
    model.train()
    plain.train()
    losses = []
    for seed in range(5):
        torch.manual_seed(seed)
        out = model(frames, loss_mask, lengths)
        assert int(out.num_target_frames) == int(
            plain(frames, loss_mask, lengths).num_target_frames
        )
        losses.append(float(out.loss))
    # Some draws hide rows (another loss), and the TTS example's loss is never touched.
    assert any(loss != float(plain(frames, loss_mask, lengths).loss) for loss in losses)
    tts = slice(1, 2)
    torch.manual_seed(0)
    assert float(model(frames[tts], loss_mask[tts], lengths[tts]).loss) == pytest.approx(
        float(plain(frames[tts], loss_mask[tts], lengths[tts]).loss)
    )


def test_transcript_dropout_settings(tmp_path):
    token_list, _, model = models(0.25)
    rebuilt = MultiStreamLM.from_config_dict(model.config_dict(), token_list)
    assert rebuilt.transcript_dropout == 0.25
    legacy = {k: v for k, v in model.config_dict().items() if k != "transcript_dropout"}
    assert MultiStreamLM.from_config_dict(legacy, token_list).transcript_dropout == 0.0
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"transcript_dropout must be in \[0, 1\)"):
            MultiStreamLM.from_base(tiny_config(), token_list, transcript_dropout=bad)
    path = tmp_path / "train.yaml"
    path.write_text(
        "model:\n  base: {model_type: llama}\n  transcript_dropout: 1.5\n"
        "data:\n  token_list: t.json\n  train: [{path: a.json}]\n"
    )
    with pytest.raises(ConfigError, match=r"model.transcript_dropout must be in \[0, 1\)"):
        load_config(path).validate()
    assert load_config(path, ["model.transcript_dropout=0.3"]).model.transcript_dropout == 0.3
