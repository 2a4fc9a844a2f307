"""The training loop: data, model, optimizer, schedule, checkpoints and logs of one run.

Loss normalisation (done ONCE): a step's micro-batches (gradient accumulation) on all ranks
share one denominator, the all-reduced number of target frames `F`. Each micro-batch backpropagates
`loss_sum * world_size / F`; DDP averages gradients over ranks (divides by world_size), so the
update is the gradient of `sum(loss_sum over micro-batches and ranks) / F`, the same as one process
on the same global batch.

A run is a pure function of the config and its seed on CPU with `train.deterministic`: the batch
stream depends only on `(seed, position)` (`opuslm.data.sampler`), and a checkpoint holds the
weights, optimizer, scheduler, consumed position and RNG states, so `resume` continues exactly.
"""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from tqdm import tqdm

from opuslm.data.augment import SpeechTimeMask
from opuslm.data.dataset import Batch, TaskDataset
from opuslm.data.manifest import Manifest, ManifestError
from opuslm.data.sampler import BatchItem, MixedBatchSampler, validation_batches
from opuslm.model.lm import LMOutput, MultiStreamLM
from opuslm.train import checkpoint as ckpt
from opuslm.train.config import Config, ManifestWeight
from opuslm.train.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    set_gradient_sync,
    wrap_model,
)
from opuslm.train.report import JsonlLog, MetricSums, Throughput, plot_curves, summarise
from opuslm.train.schedule import build_scheduler
from opuslm.vocab import TokenList

logger = logging.getLogger(__name__)

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many consecutive non-finite steps)."""


@dataclass
class TrainSummary:
    step: int
    position: int
    stopped_early: bool
    bad_steps: int
    positions_per_s: float
    data_wait_fraction: float


def build_model(config: Config, token_list: TokenList) -> MultiStreamLM:
    """The MultiStreamLM of `model.base`: a local HF directory or an inline HF config dict."""
    base = config.model.base
    if isinstance(base, dict):
        if "model_type" not in base:
            raise ValueError("model.base as a dict needs a model_type (e.g. llama)")
        fields = {"vocab_size": token_list.size("text"), **base}
        base = transformers.AutoConfig.for_model(**fields)
    return MultiStreamLM.from_base(
        base,
        token_list,
        config.model.loss_weights,
        config.model.ctc_weight,
        config.model.prefix_lm,
        config.model.ctc_upsample,
        config.model.guided_attention,
        config.model.transcript_dropout,
        config.model.tts_ctc_weight,
    )


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on norms and biases), as in GPT-style recipes."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C / SIGTERM: the main process stops them after saving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StopFlag:
    """SIGTERM / SIGINT ask for a clean stop: the loop saves a checkpoint and returns."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        logger.warning("signal %d: stopping after this step and saving a checkpoint", signum)
        self.requested = True


# Architecture settings outside the body, with the value a config dict without them means.
# prefix_lm changes what a model computes without changing any weight's shape, so only this
# comparison notices it; a ctc_upsample change also resizes the CTC head (started afresh).
ARCHITECTURE_KEYS = {"prefix_lm": False, "ctc_upsample": 1}
BODY_ARCHITECTURE_KEYS = (
    "model_type",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "max_position_embeddings",
    "tie_word_embeddings",
)


def architecture_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key saved -> current` for each architecture setting two model config dicts
    (MultiStreamLM.config_dict) disagree on. A body key only one side has (another
    transformers version) is skipped; prefix_lm defaults to False, as in from_config_dict."""
    pairs = [(k, saved.get(k, d), current.get(k, d)) for k, d in ARCHITECTURE_KEYS.items()]
    saved_body, body = saved.get("body", {}), current.get("body", {})
    pairs += [
        (f"body.{k}", saved_body[k], body[k])
        for k in BODY_ARCHITECTURE_KEYS
        if k in saved_body and k in body
    ]
    return [f"{key} {old!r} -> {new!r}" for key, old, new in pairs if old != new]


# CPU feature flags of native bfloat16 arithmetic: x86 AVX-512 BF16 (Cooper Lake, Zen 4) or AMX
# (Sapphire Rapids), Arm's BF16 extension (/proc/cpuinfo "Features").
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_has_bf16_kernels(cpuinfo: str | None = None) -> bool:
    """Whether this CPU runs bfloat16 matmuls natively, so that bf16 autocast pays.

    oneDNN reports bf16 as supported on any AVX-512 CPU, but without the BF16 instructions it
    emulates them: on a Cascade Lake core a [3072, 256] x [256, 768] matmul took 53 ms in bf16
    against 13 ms in fp32 (benchmarks/bench_precision.py measures the trainer). So the CPU's own
    flags decide; `cpuinfo` is /proc/cpuinfo's text (read when None; where there is none, e.g.
    macOS, oneDNN's answer stands).
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & NATIVE_BF16_FLAGS)


class Trainer:
    """One training run (pre-training or annealing) driven by a `Config`."""

    def __init__(self, config: Config, output_dir: str | os.PathLike, info: DistInfo) -> None:
        config.validate()
        self.config = config
        self.info = info
        self.output_dir = Path(output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"
        self.device = info.device
        cfg_train = config.train
        if cfg_train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg_train.seed)  # same initial weights on every rank (FSDP needs it)
        np.random.seed(cfg_train.seed)

        self._build_data()  # every data error surfaces here, before any step
        self.model = build_model(config, self.token_list)
        self._check_context()
        self.step = 0
        self.position = 0
        self.bad_steps_total = 0
        self.last_lr = config.optim.lr
        if not config.resume and ckpt.list_checkpoints(self.checkpoint_root):
            raise ValueError(
                f"{self.checkpoint_root} already holds checkpoints: pass --resume to continue "
                "that run, or choose another --output_dir"
            )
        resume_from = ckpt.latest_checkpoint(self.checkpoint_root) if config.resume else None
        init_from = None
        if resume_from is None and config.init_from:
            init_from = ckpt.resolve_checkpoint(config.init_from)
        weights_from = resume_from or init_from
        if weights_from is not None:
            ckpt.require_token_list(weights_from, self.token_list)
            state = ckpt.load_weights(weights_from / ckpt.WEIGHTS)
            if init_from is not None:
                state = self._adapt_optional_heads(state, init_from)
                self._warn_architecture_changes(init_from)
            self.model.load_state_dict(state)
        if config.model.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.wrapped = wrap_model(self.model, cfg_train.parallel, info)

        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, optim.weight_decay),
            lr=optim.lr,
            betas=optim.betas,
            eps=optim.eps,
        )
        sched = config.schedule
        self.scheduler = build_scheduler(
            self.optimizer, sched.type, sched.warmup_steps, sched.max_steps, sched.floor_ratio
        )
        if resume_from is not None:
            self._load_train_state(resume_from)
            logger.info("resumed from %s at step %d", resume_from, self.step)
        elif init_from is not None:
            logger.info("initialised weights from %s", init_from)
            if config.init_optimizer:
                # Moments from the checkpoint; lr, betas and weight decay stay this run's.
                hyperparameters = [
                    {k: v for k, v in group.items() if k != "params"}
                    for group in self.optimizer.param_groups
                ]
                self._set_optimizer_state(ckpt.load_train_state(init_from)["optimizer"])
                for group, values in zip(self.optimizer.param_groups, hyperparameters):
                    group.update(values)
        elif config.resume:
            logger.info("no checkpoint in %s: starting a new run", self.checkpoint_root)
        self.log = JsonlLog(self.output_dir / "train.log.jsonl") if info.is_main else None
        if self.log is not None:
            self.log.truncate_after(self.step)
        self.stop = StopFlag()
        # bf16 autocast: matmuls in bfloat16, weights, optimizer state and loss reductions in
        # fp32. On a CPU it pays only with native bf16 instructions (cpu_has_bf16_kernels); on
        # others, plain AVX-512 included, oneDNN emulates it slower than fp32, so it falls back.
        use_bf16 = cfg_train.precision == "bf16"
        if use_bf16 and self.device.type == "cpu" and not cpu_has_bf16_kernels():
            logger.warning(
                "precision bf16: this CPU has no native bf16 matmuls (no avx512_bf16 / amx_bf16 / "
                "bf16 flag), where bf16 runs slower than fp32; training in fp32"
            )
            use_bf16 = False
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
        )

    def _build_data(self) -> None:
        """Token list, manifests (checked against it), datasets, sampler and validation batches.

        Raises on any data problem (empty manifest, token-list mismatch, an utterance over the
        batch budget) naming the file or utterance.
        """
        data, info, cfg_train = self.config.data, self.info, self.config.train
        self.token_list = TokenList.load(data.token_list)
        train_manifests = [self._train_manifest(i, m) for i, m in enumerate(data.train)]
        self.tasks = sorted({m.task for m in train_manifests})
        self.dataset = self._dataset(train_manifests, train=True)
        # An optimizer step consumes accum_grad global batches (positions); a step skipped for a
        # non-finite loss consumes them too, so a phase then ends a step or so early.
        accum = self.config.optim.accum_grad
        self.sampler = MixedBatchSampler(
            self.dataset.lengths(),
            self.dataset.uttids(),
            self.dataset.sources(),
            [m.weight for m in data.train],
            data.batch_bins,
            seed=cfg_train.seed,
            rank=info.rank,
            world_size=info.world_size,
            phases=[(p.until_step * accum, p.weights) for p in data.curriculum],
        )
        self.valid_dataset = None
        self.valid_batches: list[list[list[BatchItem]]] = []
        if data.valid:
            valid_manifests = [Manifest.load(p) for p in data.valid]
            self.valid_dataset = self._dataset(valid_manifests, train=False)
            self.valid_batches = [
                validation_batches(
                    lengths, uttids, source, index, data.batch_bins, info.rank, info.world_size
                )
                for index, (lengths, uttids, source) in enumerate(
                    zip(
                        self.valid_dataset.lengths(),
                        self.valid_dataset.uttids(),
                        self.valid_dataset.sources(),
                    )
                )
            ]

    def _check_context(self) -> None:
        """Refuse a training or validation sequence longer than the model's context.

        Rotary bodies would train on rows past the context without an error, at positions
        decoding never reaches (it stops at the context). Raises ManifestError naming the
        manifest, how many utterances are over, the longest, and how to drop them.
        """
        most_frames = self.model.frames_within_context  # with the delay's rows, the context
        if most_frames is None:
            return
        context = self.model.context_length
        for name, dataset in (("data.train", self.dataset), ("data.valid", self.valid_dataset)):
            if dataset is None:
                continue
            for index, (lengths, uttids, source) in enumerate(
                zip(dataset.lengths(), dataset.uttids(), dataset.sources())
            ):
                over = np.flatnonzero(lengths > most_frames)
                if over.size == 0:
                    continue
                longest = int(over[np.argmax(lengths[over])])
                drop = (
                    f"drop them with {name}[{index}].max_length: {most_frames}"
                    if name == "data.train"
                    else "leave them out of the set (a lower --max_wav_duration)"
                )
                raise ManifestError(
                    f"{source} ({name}[{index}]): {over.size} of {len(lengths)} utterances have "
                    f"more than {most_frames} frames, which with the delay's rows fill the "
                    f"model's context of {context} (max_position_embeddings); the longest, "
                    f"'{uttids[longest]}', has {int(lengths[longest])}; {drop}, or raise "
                    "max_position_embeddings"
                )

    def _train_manifest(self, index: int, entry: ManifestWeight) -> Manifest:
        """data.train[index]'s manifest, cut to its max_length if it has one (logged)."""
        manifest = Manifest.load(entry.path)
        if entry.max_length is None:
            return manifest
        short = manifest.at_most(entry.max_length, self.config.data.prompt_frames)
        logger.info(
            "data.train[%d] (%s): %d of %d utterances have at most %d rows",
            index,
            entry.path,
            len(short.utterances),
            len(manifest.utterances),
            entry.max_length,
        )
        return short

    def _dataset(self, manifests: list[Manifest], train: bool) -> TaskDataset:
        data = self.config.data
        mask = data.asr_speech_mask
        return TaskDataset(
            manifests,
            self.token_list,
            prompt_source=data.prompt_source,
            prompt_frames=data.prompt_frames,
            loss_region=data.loss_region,
            seed=self.config.train.seed,
            asr_speech_mask=(
                SpeechTimeMask.for_token_list(mask.num_masks, mask.max_width, self.token_list)
                if train and mask.num_masks > 0
                else None
            ),
        )

    # ------------------------------------------------------------------------ checkpoints
    def _adapt_optional_heads(
        self, state: dict[str, torch.Tensor], source: Path
    ) -> dict[str, torch.Tensor]:
        """Initialising from a model with/without the optional CTC head: a head this run adds
        keeps its fresh weights, one this run drops is left out (both logged)."""
        own = self.model.state_dict()
        head = "ctc_head."
        added = [k for k in own if k.startswith(head) and k not in state]
        dropped = [k for k in state if k.startswith(head) and k not in own]
        resized = [
            k for k in own if k.startswith(head) and k in state and state[k].shape != own[k].shape
        ]
        if added:
            logger.info("%s has no CTC head: this run's starts from random weights", source)
        if dropped:
            logger.info("%s has a CTC head this run does not use: left out", source)
        if resized:
            logger.info(
                "%s has a CTC head of another shape (model.ctc_upsample): this run's starts from "
                "random weights",
                source,
            )
        kept = {k: v for k, v in state.items() if k not in dropped}
        return {**kept, **{k: own[k] for k in added + resized}}

    def _warn_architecture_changes(self, source: Path) -> None:
        """Initialising from a checkpoint whose model computes something else with weights of the
        same shapes (prefix-LM attention, heads, RoPE): load_state_dict cannot notice, so say so.
        Typically an annealing config that forgot a key of the pre-training config."""
        saved = ckpt.load_checkpoint_config(source).get("model", {})
        changes = architecture_changes(saved, self.model.config_dict())
        if changes:
            logger.warning(
                "initialising from %s, whose model differs from this run's in %s: the weights "
                "are loaded and this run's settings used; check the config if unintended",
                source,
                ", ".join(changes),
            )

    def _set_optimizer_state(self, state: dict[str, Any]) -> None:
        set_optimizer_state_dict(
            self.wrapped, self.optimizer, state, options=StateDictOptions(full_state_dict=True)
        )

    def _load_train_state(self, directory: Path) -> None:
        state = ckpt.load_train_state(directory)
        self._set_optimizer_state(state["optimizer"])
        scheduler_state = state["scheduler"]
        # The schedule's shape comes from this run's config (e.g. a longer max_steps when a run
        # is extended); the checkpoint gives its position.
        saved_factors = scheduler_state["lr_lambdas"]
        if saved_factors != [vars(f) for f in self.scheduler.lr_lambdas]:
            logger.warning("schedule changed since the checkpoint: %s -> config", saved_factors)
        self.scheduler.load_state_dict(
            {**scheduler_state, "lr_lambdas": [None] * len(saved_factors)}
        )
        for group, base_lr, factor in zip(
            self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas
        ):
            group["lr"] = base_lr * factor(self.scheduler.last_epoch)
        self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        self.position = int(state["sampler"]["position"])
        self.bad_steps_total = int(state["bad_steps_total"])
        rng = state["rng"]
        ckpt.set_rng_state(rng[self.info.rank] if len(rng) == self.info.world_size else rng[0])

    def save(self) -> None:
        """Checkpoint of the state after `self.step` steps (collective: all ranks call it)."""
        weights = get_model_state_dict(self.wrapped, options=FULL_STATE)
        optimizer = get_optimizer_state_dict(self.wrapped, self.optimizer, options=FULL_STATE)
        rng = all_gather_objects(ckpt.rng_state())
        if self.info.is_main:
            train_state = {
                "step": self.step,
                "bad_steps_total": self.bad_steps_total,
                "optimizer": optimizer,
                "scheduler": self.scheduler.state_dict(),
                "sampler": {"position": self.position, "seed": self.sampler.seed},
                "rng": rng,
            }
            config = {"model": self.model.config_dict(), "training": self.config.to_dict()}
            ckpt.save_checkpoint(
                self.checkpoint_root,
                self.step,
                weights,
                train_state,
                config,
                self.token_list,
                keep_last_n=self.config.train.keep_last_n,
            )
        barrier()

    # ------------------------------------------------------------------------ data
    def _loader(self) -> Iterator[Batch]:
        data = self.config.data
        self.sampler.load_state_dict({"position": self.position, "seed": self.sampler.seed})
        workers = data.num_workers
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            collate_fn=self.dataset.collate,
            num_workers=workers,
            prefetch_factor=data.prefetch_factor if workers > 0 else None,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            worker_init_fn=ignore_stop_signals,
        )
        return iter(loader)

    # ------------------------------------------------------------------------ steps
    def _forward(self, module: torch.nn.Module, batch: Batch) -> LMOutput:
        batch = batch.to(self.device)
        with self.autocast:
            return module(batch.frames, batch.loss_mask, batch.lengths)

    def train_step(self, micro_batches: list[Batch], sums: MetricSums) -> bool:
        """One optimizer update over the micro-batches; False when skipped (non-finite)."""
        local_frames = sum(int(b.loss_mask.sum()) for b in micro_batches)
        global_frames = float(all_reduce_sum(torch.tensor([local_frames], device=self.device))[0])
        scale = self.info.world_size / max(global_frames, 1.0)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, batch in enumerate(micro_batches):
            set_gradient_sync(self.wrapped, i == len(micro_batches) - 1)
            output = self._forward(self.wrapped, batch)
            (output.loss_sum * scale).backward()
            loss_sum += output.loss_sum.detach().double()
            sums.add(output, batch)
        loss = float(all_reduce_sum(loss_sum)) / max(global_frames, 1.0)
        grad_norm = float("nan")
        if math.isfinite(loss):
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
            )
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return False
        sums.values["grad_norm_sum"] += grad_norm
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    @torch.no_grad()
    def validate(self) -> list[dict[str, Any]]:
        """Teacher-forced loss / accuracy per valid manifest (all ranks; rank 0 gets records)."""
        if self.valid_dataset is None:
            return []
        self.model.eval()
        records = []
        for index, batches in enumerate(self.valid_batches):
            reader = self.valid_dataset.readers[index]
            sums = MetricSums([reader.manifest.task])
            loader = torch.utils.data.DataLoader(
                self.valid_dataset,
                batch_sampler=batches,
                collate_fn=self.valid_dataset.collate,
                num_workers=self.config.data.num_workers,
            )
            for batch in loader:
                sums.add(self._forward(self.model, batch), batch)
            metrics = summarise(sums.reduced(self.device))
            records.append(
                {
                    "kind": "valid",
                    "step": self.step,
                    "task": reader.manifest.task,
                    "dataset": reader.manifest.dataset,
                    **metrics,
                }
            )
        self.model.train()
        return records

    def _write(self, records: list[dict[str, Any]]) -> None:
        if self.log is not None:
            for record in records:
                self.log.write(record)

    def _plot(self) -> None:
        if self.log is not None and self.log.path.exists():
            plot_curves(self.log.path, self.checkpoint_root.parent / "loss.png")

    # ------------------------------------------------------------------------ loop
    def run(self) -> TrainSummary:
        cfg = self.config.train
        max_steps = self.config.schedule.max_steps
        accum = self.config.optim.accum_grad
        self.stop.install()
        self.model.train()
        batches = self._loader()
        sums = MetricSums(self.tasks)
        consecutive_bad = 0
        stopped_early = False
        progress = tqdm(
            total=max_steps,
            initial=self.step,
            desc="train",
            disable=not (self.info.is_main and cfg.progress_bar),
            dynamic_ncols=True,
        )
        meter = Throughput()
        try:
            while self.step < max_steps:
                with meter.waiting():
                    micro_batches = [next(batches) for _ in range(accum)]
                stop = torch.tensor([float(self.stop.requested)], device=self.device)
                if float(all_reduce_sum(stop)[0]) > 0:
                    stopped_early = True
                    break
                ok = self.train_step(micro_batches, sums)
                phase = self.sampler.phase_at(self.position)
                self.position += accum
                if self.sampler.phase_at(self.position) != phase:
                    logger.info(
                        "data.curriculum[%d] ended at position %d: mixing probabilities now %s",
                        phase,
                        self.position,
                        np.round(self.sampler.probabilities_at(self.position), 3).tolist(),
                    )
                meter.step(sum(b.num_positions for b in micro_batches if b.loss_mask.any()))
                if not ok:
                    consecutive_bad += 1
                    self.bad_steps_total += 1
                    uttids = [u for batch in micro_batches for u in batch.uttids]
                    logger.warning(
                        "non-finite loss or gradient: step %d skipped (%d in a row, %d in the "
                        "run; utterances %s)",
                        self.step + 1,
                        consecutive_bad,
                        self.bad_steps_total,
                        " ".join(uttids[:8]) + (" ..." if len(uttids) > 8 else ""),
                    )
                    if consecutive_bad >= cfg.max_bad_steps:
                        raise TrainingError(
                            f"{consecutive_bad} consecutive steps with a non-finite loss or "
                            f"gradient (at step {self.step}); lower optim.lr or check the data"
                        )
                    continue
                consecutive_bad = 0
                self.step += 1
                progress.update(1)
                with meter.paused():  # logging, validation and checkpoints are not training time
                    if self.step % cfg.log_interval == 0 or self.step == max_steps:
                        record = self._train_record(sums, *meter.take_interval())
                        progress.set_postfix(
                            loss=f"{record['loss']:.3f}",
                            acc=f"{record['acc']:.3f}",
                            lr=f"{record['lr']:.2e}",
                            fps=f"{record['frames_per_s']:.0f}",
                        )
                        self._write([record])
                        sums.clear()
                    if self.step % cfg.valid_interval == 0 or self.step == max_steps:
                        self._write(self.validate())
                        self._plot()
                    if self.step % cfg.save_interval == 0 or self.step == max_steps:
                        self.save()
        finally:
            progress.close()
            self.stop.uninstall()
        if stopped_early:
            self.save()
            self._plot()
        return TrainSummary(
            step=self.step,
            position=self.position,
            stopped_early=stopped_early,
            bad_steps=self.bad_steps_total,
            positions_per_s=meter.total_positions / max(meter.total_seconds, 1e-9),
            data_wait_fraction=meter.data_wait / max(meter.total_seconds, 1e-9),
        )

    def _train_record(
        self, sums: MetricSums, positions: int, steps: int, seconds: float, data_wait: float
    ) -> dict[str, Any]:
        reduced = sums.reduced(self.device)
        positions_all = float(
            all_reduce_sum(torch.tensor([float(positions)], device=self.device))[0]
        )
        record = {
            "kind": "train",
            "step": self.step,
            "lr": self.last_lr,
            "frames_per_s": positions_all / max(seconds, 1e-9),
            # Share of the step time spent waiting for the DataLoader (rank 0): ~0 = not starved.
            "data_wait": data_wait / max(seconds, 1e-9),
            "grad_norm": reduced.pop("grad_norm_sum", 0.0) / max(steps * self.info.world_size, 1),
            "bad_steps_total": self.bad_steps_total,
            "position": self.position,
            **summarise(reduced),
        }
        return record
