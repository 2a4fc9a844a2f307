"""The trainer: config loading, up-front data errors, exact resume after kill -9, annealing from a
pre-training checkpoint, clean stop on SIGTERM, non-finite steps, logs and plot.

`make_experiment` (tiny Llama body, tiny synthetic dumps) is shared with test_ddp.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_manifest import tiny_token_list, write_corpus

from opuslm.data.manifest import Manifest, ManifestError, build_manifest
from opuslm.data.sampler import BatchBudgetError
from opuslm.train import checkpoint as ckpt
from opuslm.train import trainer as trainer_module
from opuslm.train.config import ConfigError, load_config
from opuslm.train.distributed import DistInfo
from opuslm.train.report import read_log
from opuslm.train.trainer import Trainer, TrainingError, architecture_changes
from opuslm.vocab import VocabError

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}
SINGLE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
# Same thread count in every process: bit-identical results across runs need the same kernels.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def make_experiment(
    root: Path, num_utts: int = 24, corpus: dict | None = None, **sections: dict
) -> Path:
    """Dumps, asr + tts manifests (3:1) and a config; `sections` update the config's sections,
    `corpus` holds extra `write_corpus` options."""
    paths = write_corpus(root / "dump", num_utts=num_utts, **(corpus or {}))
    manifests = {}
    for task in ("asr", "tts"):
        manifests[task] = root / "manifests" / task / "data.json"
        build_manifest(
            task,
            "train",
            paths["token_list"],
            {"speech": paths["speech"], "text": paths["text"]},
            manifests[task],
            utt2spk=paths["utt2spk"],
            prompt_frames=4 if task == "tts" else 0,
        ).save()
    config = {
        "model": {"base": TINY_LLAMA},
        "data": {
            "token_list": str(paths["token_list"]),
            "train": [
                {"path": str(manifests["asr"]), "weight": 3.0},
                {"path": str(manifests["tts"]), "weight": 1.0},
            ],
            "valid": [str(manifests["asr"])],
            "batch_bins": 160,
            "num_workers": 0,
        },
        "optim": {"lr": 3e-3, "weight_decay": 0.01},
        "schedule": {"type": "cosine", "warmup_steps": 2, "max_steps": 8},
        "train": {
            "log_interval": 1,
            "valid_interval": 4,
            "save_interval": 4,
            "deterministic": True,
            "progress_bar": False,
        },
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    config_path = root / "train.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def train_command(config: Path, output_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "opuslm.bin.train", "--config", str(config)] + [
        "--output_dir",
        str(output_dir),
        *overrides,
    ]


# One thread (tiny models, bit-identical kernels); determinism restored (test/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread_and_restored_determinism")


# ------------------------------------------------------------------------------------ config
def test_config_overrides_and_errors(tmp_path):
    config_path = make_experiment(tmp_path)
    config = load_config(config_path, ["--optim.lr", "1e-4", "schedule.max_steps=50", "--resume"])
    assert config.optim.lr == 1e-4 and config.schedule.max_steps == 50 and config.resume
    assert config.optim.betas == (0.9, 0.95)
    assert config.data.train[0].weight == 3.0
    with pytest.raises(ConfigError, match="command line overrides: unknown key optim.lrr"):
        load_config(config_path, ["--optim.lrr", "1"])
    with pytest.raises(ConfigError, match="optim.accum_grad must be int, got 'two'"):
        load_config(config_path, ["optim.accum_grad=two"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  batch_bin: 10\n")
    with pytest.raises(ConfigError, match=f"{bad}: unknown key data.batch_bin"):
        load_config(bad)
    with pytest.raises(ConfigError, match="train.precision must be one of"):
        load_config(config_path, ["train.precision=fp8"]).validate()


TWO_MANIFESTS = ["model.base=tiny", "data.token_list=t.json", "data.train=[{path: a}, {path: b}]"]


@pytest.mark.parametrize(
    "curriculum, pattern",
    [
        ("[{until_step: 0, weights: [1, 0]}]", r"data.curriculum\[0\].until_step must be greater "),
        (
            "[{until_step: 5, weights: [1, 0]}, {until_step: 5, weights: [0, 1]}]",
            r"data.curriculum\[1\].until_step must be greater than data.curriculum\[0\]",
        ),
        ("[{until_step: 5, weights: [1]}]", r"data.curriculum\[0\].weights has 1 weights"),
        ("[{until_step: 5, weights: [1, -1]}]", r"data.curriculum\[0\].weights must be >= 0"),
        ("[{until_step: 5, weights: [0, 0]}]", r"data.curriculum\[0\].weights .* positive sum"),
    ],
)
def test_curriculum_config_errors_name_the_phase(curriculum, pattern):
    config = load_config(None, [*TWO_MANIFESTS, f"data.curriculum={curriculum}"])
    with pytest.raises(ConfigError, match=f"^train.yaml: {pattern}"):
        config.validate("train.yaml")
    valid = "data.curriculum=[{until_step: 5, weights: [1, 0]}, {until_step: 9, weights: [0, 1]}]"
    load_config(None, [*TWO_MANIFESTS, valid]).validate("train.yaml")


def test_curriculum_phases_count_optimizer_steps(tmp_path, caplog):
    # accum_grad 2: a step consumes two global batches, so ASR only for the first 3 steps =
    # positions 0..5.
    config_path = make_experiment(tmp_path)
    curriculum = "data.curriculum=[{until_step: 3, weights: [1.0, 0.0]}]"
    config = load_config(config_path, [curriculum, "optim.accum_grad=2", "schedule.max_steps=4"])
    trainer = Trainer(config, tmp_path / "exp", SINGLE)
    assert trainer.sampler.phase_ends.tolist() == [6]
    assert {trainer.sampler.manifest_at(p) for p in range(6)} == {0}
    with caplog.at_level("INFO", logger="opuslm.train.trainer"):
        trainer.run()
    assert "data.curriculum[0] ended at position 6: mixing probabilities now [0.75, 0.25]" in (
        caplog.text
    )


def test_train_entry_max_length_keeps_the_short_utterances(tmp_path, caplog):
    # The ASR manifest listed twice: its short utterances only for the first 2 steps, then all.
    config_path = make_experiment(tmp_path)
    asr = str(tmp_path / "manifests" / "asr" / "data.json")
    full = Manifest.load(asr)
    cut = int(np.median(full.lengths()))
    train = f"data.train=[{{path: {asr}, weight: 0, max_length: {cut}}}, {{path: {asr}}}]"
    curriculum = "data.curriculum=[{until_step: 2, weights: [1.0, 0.0]}]"
    config = load_config(config_path, [train, curriculum, "schedule.max_steps=4"])
    with caplog.at_level("INFO", logger="opuslm.train.trainer"):
        trainer = Trainer(config, tmp_path / "exp", SINGLE)
    short, everything = trainer.dataset.lengths()
    assert everything.tolist() == full.lengths().tolist()
    assert 0 < len(short) < len(everything) and short.max() <= cut
    assert sorted(short.tolist()) == sorted(n for n in everything.tolist() if n <= cut)
    kept = f"data.train[0] ({asr}): {len(short)} of {len(everything)} utterances have at most"
    assert kept in caplog.text
    # Bad values are named before any data is read.
    bad = load_config(config_path, [f"data.train=[{{path: {asr}, max_length: 0}}]"])
    with pytest.raises(ConfigError, match=r"data.train\[0\].max_length must be >= 1, got 0"):
        bad.validate()
    too_short = load_config(config_path, [f"data.train=[{{path: {asr}, max_length: 1}}]"])
    with pytest.raises(ManifestError, match=r"no utterance has at most 1 rows \(shortest: \d+"):
        Trainer(too_short, tmp_path / "e2", SINGLE)


# ------------------------------------------------------------------------- up-front errors
def test_data_errors_before_any_step(tmp_path):
    config_path = make_experiment(tmp_path)
    out = tmp_path / "exp"
    with pytest.raises(BatchBudgetError, match=r"asr/data.json: utterance '.*' has \d+ rows"):
        Trainer(load_config(config_path, ["data.batch_bins=20"]), out, SINGLE)

    manifest_path = Path(load_config(config_path).data.train[0].path)
    payload = json.loads(manifest_path.read_text())
    empty = tmp_path / "empty" / "data.json"
    empty.parent.mkdir()
    empty.write_text(json.dumps({**payload, "utterances": {}}))
    with pytest.raises(ManifestError, match=f"{empty}: the manifest has no utterances"):
        Trainer(load_config(config_path, [f"data.valid=[{empty}]"]), out, SINGLE)

    other = tmp_path / "other_token_list.json"
    tiny_token_list(num_text=41).save(other)
    with pytest.raises(VocabError, match="asr/data.json .*first difference at range of text"):
        Trainer(load_config(config_path, [f"data.token_list={other}"]), out, SINGLE)

    # A context that holds the median utterance (T frames run T + S - 2 delayed rows): the
    # longer ones are refused before any step, with the max_length that drops them.
    asr = load_config(config_path).data.train[0].path
    manifest = Manifest.load(asr)
    most = int(np.median(manifest.lengths()))
    context = most + manifest.num_streams - 2
    with pytest.raises(
        ManifestError,
        match=rf"asr/data.json \(data.train\[0\]\): \d+ of 24 utterances have more than {most} "
        rf"frames, .* context of {context} .* the longest, '.*', has \d+; "
        rf"drop them with data.train\[0\].max_length: {most}",
    ):
        Trainer(
            load_config(config_path, [f"model.base.max_position_embeddings={context}"]), out, SINGLE
        )
    # As advised, and without the valid set (the same utterances): the rest fit.
    advised = [
        f"model.base.max_position_embeddings={context}",
        f"data.train=[{{path: {asr}, max_length: {most}}}]",
        "data.valid=[]",
    ]
    Trainer(load_config(config_path, advised), tmp_path / "fits", SINGLE)
    assert not out.exists()  # nothing was trained, logged or saved


# ----------------------------------------------------------------------------- kill -9 resume
# About 20 s: under `make bench`. The default suite kills training inside every write in-process
# and checks the same bit-identical resume (robustness/test_faults.py).
@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical(tmp_path):
    config_path = make_experiment(
        tmp_path,
        schedule={"max_steps": 20},
        train={"save_interval": 4, "valid_interval": 100},
    )
    # The uninterrupted run: in this process, with data workers (the others load in-process).
    Trainer(load_config(config_path, ["data.num_workers=2"]), tmp_path / "ref", SINGLE).run()

    run = tmp_path / "run"
    process = subprocess.Popen(
        train_command(config_path, run), env=SUBPROCESS_ENV, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        latest = (
            ckpt.latest_checkpoint(run / "checkpoints") if (run / "checkpoints").exists() else None
        )
        if latest is not None and int(latest.name.split("_")[1]) >= 8:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "checkpoints" / "step_20").exists(), "the run finished before the kill"

    resumed = subprocess.run(
        train_command(config_path, run, "--resume"),
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    expected = ckpt.load_weights(tmp_path / "ref" / "checkpoints" / "step_20" / ckpt.WEIGHTS)
    got = ckpt.load_weights(run / "checkpoints" / "step_20" / ckpt.WEIGHTS)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    reference_log = [
        r for r in read_log(tmp_path / "ref" / "train.log.jsonl") if r["kind"] == "train"
    ]
    resumed_log = [r for r in read_log(run / "train.log.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in resumed_log] == list(range(1, 21))  # no duplicated steps
    assert [r["loss"] for r in resumed_log] == [r["loss"] for r in reference_log]


# ----------------------------------------------------------------------------------- annealing
def test_annealing_starts_from_pretraining_weights_and_decays_to_zero(tmp_path):
    config_path = make_experiment(tmp_path)
    pretrain = Trainer(load_config(config_path), tmp_path / "pretrain", SINGLE)
    pretrain.run()
    pretrained = ckpt.load_weights(tmp_path / "pretrain" / "checkpoints" / "step_8" / ckpt.WEIGHTS)

    overrides = [
        "--init_from",
        str(tmp_path / "pretrain"),
        "schedule.type=linear",
        "schedule.warmup_steps=0",
        "schedule.max_steps=6",
    ]
    anneal = Trainer(load_config(config_path, overrides), tmp_path / "anneal", SINGLE)
    start = anneal.model.state_dict()
    for name, tensor in pretrained.items():
        assert torch.equal(start[name], tensor), name
    assert anneal.step == 0 and not anneal.optimizer.state  # fresh optimizer by default
    anneal.run()
    lrs = [
        r["lr"] for r in read_log(tmp_path / "anneal" / "train.log.jsonl") if r["kind"] == "train"
    ]
    assert lrs[0] == pytest.approx(3e-3) and lrs[-1] == 0.0 and len(lrs) == 6

    carried = Trainer(
        load_config(config_path, [*overrides, "--init_optimizer"]), tmp_path / "carry", SINGLE
    )
    saved = ckpt.load_train_state(tmp_path / "pretrain" / "checkpoints" / "step_8")["optimizer"]
    name = "body.model.layers.0.mlp.up_proj.weight"
    param = dict(carried.model.named_parameters())[name]
    assert torch.equal(carried.optimizer.state[param]["exp_avg"], saved["state"][name]["exp_avg"])
    assert carried.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3)  # not pre-training's


def test_ctc_head_is_added_or_dropped_when_initialising(tmp_path):
    """A CTC run starts from a plain text/speech LM checkpoint and logs its CTC loss; a run
    without CTC starts from the CTC run's checkpoint."""
    config_path = make_experiment(tmp_path)
    short = ["schedule.max_steps=4", "schedule.warmup_steps=0"]
    Trainer(load_config(config_path, short), tmp_path / "plain", SINGLE).run()
    with_ctc = [*short, "model.ctc_weight=0.5", "--init_from", str(tmp_path / "plain")]
    Trainer(load_config(config_path, with_ctc), tmp_path / "ctc", SINGLE).run()
    records = [r for r in read_log(tmp_path / "ctc" / "train.log.jsonl") if r["kind"] == "train"]
    assert all(r["ce/ctc"] > 0 for r in records)  # 3:1 asr:tts batches always hold ASR examples
    assert "ctc_head.weight" in ckpt.load_weights(
        tmp_path / "ctc" / "checkpoints" / "step_4" / ckpt.WEIGHTS
    )
    without = [*short, "--init_from", str(tmp_path / "ctc")]
    trainer = Trainer(load_config(config_path, without), tmp_path / "again", SINGLE)
    assert trainer.model.ctc_head is None


def test_a_ctc_head_of_another_upsampling_starts_fresh(tmp_path, caplog):
    """model.ctc_upsample changes the head's shape: initialising across it keeps the body and
    names the change, and the new head trains from its own random weights."""
    config_path = make_experiment(tmp_path)
    short = ["schedule.max_steps=2", "schedule.warmup_steps=0", "model.ctc_weight=0.5"]
    Trainer(load_config(config_path, short), tmp_path / "u1", SINGLE).run()
    caplog.set_level(logging.INFO, logger="opuslm.train")
    upsampled = [*short, "model.ctc_upsample=2", "--init_from", str(tmp_path / "u1")]
    trainer = Trainer(load_config(config_path, upsampled), tmp_path / "u2", SINGLE)
    assert "a CTC head of another shape" in caplog.text
    assert "ctc_upsample 1 -> 2" in caplog.text
    source = ckpt.load_weights(tmp_path / "u1" / "checkpoints" / "step_2" / ckpt.WEIGHTS)
    own = trainer.model.state_dict()
    assert own["ctc_head.weight"].shape[0] == 2 * source["ctc_head.weight"].shape[0]
    body = next(k for k in own if k.startswith("body.") and k.endswith("q_proj.weight"))
    assert torch.equal(own[body], source[body])
    trainer.run()
    records = [r for r in read_log(tmp_path / "u2" / "train.log.jsonl") if r["kind"] == "train"]
    assert records and all(r["ce/ctc"] > 0 for r in records)
    with pytest.raises(ConfigError, match="model.ctc_upsample must be >= 1"):
        load_config(config_path, ["model.ctc_upsample=0"]).validate()


def test_initialising_across_an_attention_change_is_warned(tmp_path, caplog):
    """Same weight shapes, other computation: an annealing config without the pre-training's
    prefix_lm loads fine, so the trainer names the difference."""
    config_path = make_experiment(tmp_path)
    short = ["schedule.max_steps=2", "schedule.warmup_steps=0"]
    prefix = load_config(config_path, [*short, "model.prefix_lm=true"])
    Trainer(prefix, tmp_path / "a", SINGLE).run()
    caplog.set_level(logging.WARNING, logger="opuslm.train")
    same = [*short, "model.prefix_lm=true", "--init_from", str(tmp_path / "a")]
    Trainer(load_config(config_path, same), tmp_path / "same", SINGLE)
    assert "differs from this run's" not in caplog.text
    changed = [*short, "--init_from", str(tmp_path / "a")]
    Trainer(load_config(config_path, changed), tmp_path / "changed", SINGLE)
    assert "differs from this run's in prefix_lm True -> False" in caplog.text


def test_architecture_changes_compare_only_what_both_configs_have():
    saved = {"body": {"num_attention_heads": 4, "rope_theta": 1e4, "head_dim": 64}}
    current = {"prefix_lm": False, "body": {"num_attention_heads": 2, "rope_theta": 1e4}}
    assert architecture_changes(saved, current) == ["body.num_attention_heads 4 -> 2"]


# -------------------------------------------------------------------- stop, non-finite, logs
def test_sigterm_saves_and_stops_cleanly(tmp_path):
    trainer = Trainer(load_config(make_experiment(tmp_path)), tmp_path / "exp", SINGLE)
    real_step = trainer.train_step

    def step_then_signal(micro_batches, sums):
        done = real_step(micro_batches, sums)
        if trainer.step == 2:  # the third step is running: a scheduler sends SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
        return done

    trainer.train_step = step_then_signal
    summary = trainer.run()
    assert summary.stopped_early and summary.step == 3
    assert ckpt.latest_checkpoint(tmp_path / "exp" / "checkpoints").name == "step_3"
    assert ckpt.load_train_state(tmp_path / "exp" / "checkpoints" / "step_3")["sampler"] == {
        "position": 3,
        "seed": 0,
    }
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    with pytest.raises(ValueError, match="already holds checkpoints: pass --resume"):
        Trainer(load_config(make_experiment(tmp_path)), tmp_path / "exp", SINGLE)

    # Resuming with a longer schedule: position from the checkpoint, shape from the config.
    extended = load_config(make_experiment(tmp_path), ["--resume", "schedule.max_steps=20"])
    resumed = Trainer(extended, tmp_path / "exp", SINGLE)
    assert resumed.step == 3 and resumed.position == 3
    expected = 3e-3 * resumed.scheduler.lr_lambdas[0](3)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert resumed.scheduler.lr_lambdas[0].max_steps == 20


def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    config_path = make_experiment(tmp_path, schedule={"max_steps": 3}, train={"valid_interval": 9})
    losses = []
    for flag in ("false", "true"):
        config = load_config(config_path, [f"model.gradient_checkpointing={flag}"])
        trainer = Trainer(config, tmp_path / flag, SINGLE)
        assert trainer.model.body.is_activation_checkpointing == (flag == "true")
        trainer.run()
        log = read_log(tmp_path / flag / "train.log.jsonl")
        losses.append([r["loss"] for r in log if r["kind"] == "train"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_bf16_precision_autocasts_on_the_cpu(tmp_path, monkeypatch):
    """precision bf16 runs the matmuls in bfloat16 on a CPU too; weights stay fp32; losses close."""
    # The test machine may lack native bf16 (then the trainer would fall back to fp32).
    monkeypatch.setattr(trainer_module, "cpu_has_bf16_kernels", lambda: True)
    config_path = make_experiment(tmp_path, schedule={"max_steps": 3}, train={"valid_interval": 9})
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(
            load_config(config_path, [f"train.precision={precision}"]), tmp_path / precision, SINGLE
        )
        seen = set()
        linear = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(lambda module, args, out, seen=seen: seen.add(out.dtype))
        trainer.run()
        assert seen == {torch.bfloat16 if precision == "bf16" else torch.float32}
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        log = read_log(tmp_path / precision / "train.log.jsonl")
        losses[precision] = [r["loss"] for r in log if r["kind"] == "train"]
    assert losses["bf16"] != losses["fp32"]  # a different arithmetic really ran
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)


def test_bf16_falls_back_to_fp32_on_a_cpu_without_bf16_kernels(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(trainer_module, "cpu_has_bf16_kernels", lambda: False)
    config = load_config(make_experiment(tmp_path), ["train.precision=bf16"])
    with caplog.at_level(logging.WARNING, logger="opuslm.train"):
        trainer = Trainer(config, tmp_path / "exp", SINGLE)
    assert "no native bf16 matmuls" in caplog.text and "training in fp32" in caplog.text
    linear = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
    with trainer.autocast:
        assert linear(torch.zeros(1, linear.in_features)).dtype == torch.float32


CASCADE_LAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"


@pytest.mark.parametrize(
    "cpuinfo,native",
    [
        (CASCADE_LAKE, False),  # AVX-512 without BF16: oneDNN emulates it, slower than fp32
        (CASCADE_LAKE.replace("avx512_vnni", "avx512_vnni avx512_bf16"), True),  # Cooper Lake
        (CASCADE_LAKE.replace("avx512_vnni", "amx_bf16 amx_tile"), True),  # Sapphire Rapids
        ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),  # Arm Neoverse V1
        ("processor\t: 0\nFeatures\t: fp asimd\n", False),
    ],
)
def test_bf16_kernels_need_the_cpu_flag(cpuinfo, native, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert trainer_module.cpu_has_bf16_kernels(cpuinfo) is native
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert trainer_module.cpu_has_bf16_kernels(cpuinfo) is False  # oneDNN without bf16 at all


def test_non_finite_steps_are_skipped_then_stop(tmp_path):
    config = load_config(make_experiment(tmp_path), ["train.max_bad_steps=3"])
    trainer = Trainer(config, tmp_path / "exp", SINGLE)
    real_forward = trainer.model.forward
    calls = {"n": 0}

    def forward(*args):
        output = real_forward(*args)
        calls["n"] += 1
        if calls["n"] == 2 or calls["n"] >= 5:
            output.loss_sum = output.loss_sum * float("nan")
        return output

    trainer.model.forward = forward
    with pytest.raises(TrainingError, match="3 consecutive steps with a non-finite loss"):
        trainer.run()
    # Step 2's batch was skipped (weights untouched), steps 3 and 4 trained, then 3 bad in a row.
    assert trainer.step == 3 and trainer.bad_steps_total == 4 and trainer.position == 7


def test_log_has_task_stream_modality_metrics_and_plot(tmp_path):
    Trainer(load_config(make_experiment(tmp_path)), tmp_path / "exp", SINGLE).run()
    records = read_log(tmp_path / "exp" / "train.log.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))
    for key in ("loss/asr", "loss/tts", "acc/stream0", "ce/stream2", "acc/semantic", "ce/text"):
        assert any(key in r for r in train), key
    valid = [r for r in records if r["kind"] == "valid"]
    assert [(r["step"], r["task"]) for r in valid] == [(4, "asr"), (8, "asr")]
    assert 0 < valid[-1]["loss"] < valid[0]["loss"]  # it learns something
    assert (tmp_path / "exp" / "loss.png").stat().st_size > 1000
    manifest = Manifest.load(load_config(make_experiment(tmp_path / "b")).data.train[0].path)
    assert manifest.task == "asr"
