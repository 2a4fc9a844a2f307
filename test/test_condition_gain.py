"""opuslm.bin.condition_gain: CE with the own vs another utterance's condition."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from test_trainer import SINGLE, make_experiment

from opuslm.bin import condition_gain as cli
from opuslm.bin.condition_gain import condition_gain, swapped
from opuslm.data.dataset import ManifestReader, collate
from opuslm.data.manifest import Manifest, ManifestError
from opuslm.packing import load_checkpoint_model
from opuslm.tasks import Example, build_sequence
from opuslm.train.config import load_config
from opuslm.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread_and_restored_determinism")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint with both CTC directions, and its asr / tts manifests."""
    root = tmp_path_factory.mktemp("gain")
    config = make_experiment(root, num_utts=7, model={"ctc_weight": 0.5, "tts_ctc_weight": 0.5})
    Trainer(load_config(config, ["schedule.max_steps=3"]), root / "exp", SINGLE).run()
    model, _ = load_checkpoint_model(root / "exp")
    manifests = {t: Manifest.load(root / "manifests" / t / "data.json") for t in ("asr", "tts")}
    return model.eval(), manifests


def by_hand(model, manifest, field, modality, ctc):
    """Mean CE (and CTC) over one batch of all utterances, with the next one's `field`."""
    reader = ManifestReader(manifest, "speaker", None)
    rng = np.random.default_rng(0)
    examples = [reader.example(i, rng) for i in range(len(manifest.uttids))]
    results = []
    for shift in (0, 1):
        changed = [
            dataclasses.replace(e, **{field: getattr(examples[(i + shift) % len(examples)], field)})
            for i, e in enumerate(examples)
        ]
        batch = collate(
            [build_sequence(manifest.task, e, model.token_list) for e in changed],
            model.token_list.pad_id,
        )
        stats = model(batch.frames, batch.loss_mask, batch.lengths).stats
        results.append(
            (
                stats[f"loss_sum/{modality}"] / stats[f"count/{modality}"],
                stats[f"loss_sum/{ctc}"] / stats[f"count/{ctc}"],
            )
        )
    return results


@pytest.mark.parametrize(
    "task, field, modality, ctc",
    [("tts", "text", "semantic", "ctc_tts"), ("asr", "speech", "text", "ctc")],
)
def test_gain_is_the_ce_difference_of_swapped_conditions(trained, task, field, modality, ctc):
    model, manifests = trained
    with torch.inference_mode():
        result = condition_gain(model, manifests[task], batch_size=3)
        (ce_own, ctc_own), (ce_other, ctc_other) = by_hand(
            model, manifests[task], field, modality, ctc
        )
    assert result["num_utts"] == 7 and result["swapped"] == field
    assert result["ce_own"] == pytest.approx(ce_own, rel=1e-5)
    assert result["ce_other"] == pytest.approx(ce_other, rel=1e-5)
    assert result["gain"] == pytest.approx(ce_other - ce_own, abs=1e-5)
    assert result["ce_own"] != result["ce_other"]  # the swap changed the input
    assert result["ctc_own"] != pytest.approx(result["ctc_other"])
    assert result["ctc_own"] == pytest.approx(ctc_own, rel=1e-5)
    assert result["ctc_gain"] == pytest.approx(ctc_other - ctc_own, abs=1e-5)


def test_manifests_without_a_condition_to_swap_are_refused(trained):
    model, manifests = trained
    one = dataclasses.replace(
        manifests["asr"], utterances=dict(list(manifests["asr"].utterances.items())[:1])
    )
    with pytest.raises(ManifestError, match="at least 2 utterances"):
        condition_gain(model, one)
    textlm = dataclasses.replace(manifests["asr"], task="textlm")
    with pytest.raises(ManifestError, match="task 'textlm' has no condition to swap"):
        condition_gain(model, textlm)


def test_command_line_writes_the_result(trained, tmp_path):
    _, manifests = trained
    checkpoint = manifests["tts"].path.parents[2] / "exp"
    output = tmp_path / "gain.json"
    cli.main(
        ["--checkpoint", str(checkpoint), "--manifest", str(manifests["tts"].path)]
        + ["--output", str(output), "--device", "cpu"]
    )
    result = json.loads(output.read_text())
    assert result["task"] == "tts" and result["checkpoint"].endswith("step_3")
    assert set(result) >= {"ce_own", "ce_other", "gain", "ctc_gain"}


def test_an_aligned_transcript_is_swapped_with_its_alignment_stretched():
    speech = np.zeros((10, 3), dtype=np.int64)
    first = Example("a", text=np.array([1, 2]), speech=speech, align=np.array([0, 6]))
    second = Example("b", text=np.array([3, 4, 5]), speech=speech[:4], align=np.array([0, 1, 3]))
    out = swapped([first, second], "text")
    assert out[0].text.tolist() == [3, 4, 5] and out[0].align.tolist() == [0, 2, 7]
    assert out[1].text.tolist() == [1, 2] and out[1].align.tolist() == [0, 2]
    assert out[0].speech is speech  # the own speech stays
