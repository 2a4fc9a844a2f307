"""Training examples from task manifests: lazy token-dump reads, task sequences, padded batches.

`TaskDataset[BatchItem]` reads one utterance's entries through `opuslm.data.ark.ScpTable` (lazy:
an ark is opened only when a matrix is read; pipes and pickles are refused), builds the
`opuslm.tasks.Example` (a TTS prompt from another utterance of the same speaker, or the
utterance's own prefix), and returns `opuslm.tasks.build_sequence`'s `TaskSequence`, checked to
have the length the manifest promised the sampler. `collate` pads them into a `Batch`.

Randomness (which prompt utterance, which prompt window, the optional time masks on ASR speech
of `opuslm.data.augment`) comes from a generator seeded by
`(seed, batch position, manifest, utterance)`, so a batch is the same whichever worker builds it
and after a resume.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from opuslm.data.ark import ScpTable
from opuslm.data.augment import SpeechTimeMask
from opuslm.data.manifest import Manifest, ManifestError, check_entry_shape, read_key_value_file
from opuslm.data.sampler import BatchItem
from opuslm.tasks import Example, TaskSequence, build_sequence, crop_prompt, pick_prompt_uttid
from opuslm.vocab import TokenList


@dataclass
class Batch:
    """frames: LongTensor [B, T, S] joint ids (pad beyond lengths); loss_mask: BoolTensor [B, T];
    lengths: LongTensor [B]; tasks / uttids: per example."""

    frames: torch.Tensor
    loss_mask: torch.Tensor
    lengths: torch.Tensor
    tasks: list[str]
    uttids: list[str]

    def to(self, device: torch.device) -> Batch:
        non_blocking = device.type == "cuda"
        return Batch(
            self.frames.to(device, non_blocking=non_blocking),
            self.loss_mask.to(device, non_blocking=non_blocking),
            self.lengths.to(device, non_blocking=non_blocking),
            self.tasks,
            self.uttids,
        )

    def pin_memory(self) -> Batch:
        return Batch(
            self.frames.pin_memory(),
            self.loss_mask.pin_memory(),
            self.lengths.pin_memory(),
            self.tasks,
            self.uttids,
        )

    @property
    def num_positions(self) -> int:
        """Valid (undelayed) rows in the batch."""
        return int(self.lengths.sum())


def collate(sequences: Sequence[TaskSequence], pad_id: int) -> Batch:
    """Right-pad task sequences into a Batch (pad id in frames, False in loss_mask)."""
    lengths = [len(s.frames) for s in sequences]
    num_streams = sequences[0].frames.shape[1]
    frames = np.full((len(sequences), max(lengths), num_streams), pad_id, dtype=np.int64)
    loss_mask = np.zeros((len(sequences), max(lengths)), dtype=bool)
    for i, seq in enumerate(sequences):
        frames[i, : lengths[i]] = seq.frames
        loss_mask[i, : lengths[i]] = seq.loss_mask
    return Batch(
        frames=torch.from_numpy(frames),
        loss_mask=torch.from_numpy(loss_mask),
        lengths=torch.tensor(lengths, dtype=torch.long),
        tasks=[s.task for s in sequences],
        uttids=[s.uttid for s in sequences],
    )


class ManifestReader:
    """The entries of one manifest, read lazily by utterance id."""

    def __init__(self, manifest: Manifest, prompt_source: str, prompt_frames: int | None) -> None:
        self.manifest = manifest
        self.uttids = manifest.uttids
        self.tables = {
            name: ScpTable(manifest.path_of(path)) for name, path in manifest.entries.items()
        }
        self.prompt_frames = manifest.prompt_frames if prompt_frames is None else prompt_frames
        self.expected_lengths = manifest.lengths(self.prompt_frames)
        self.speaker_utts: dict[str, list[str]] = {}
        self.utt2spk: dict[str, str] = {}
        if manifest.task == "tts" and prompt_source == "self" and "align" in manifest.entries:
            # The own prefix would be raw speech while the target interleaves the transcript
            # from its first frame on, and decoding (`interleave_text`) refuses such prompts.
            raise ManifestError(
                f"{manifest.path}: an aligned TTS manifest needs prompt_source 'speaker' (the "
                "prompt from another utterance); an own-prefix prompt holds no transcript rows"
            )
        if manifest.task == "tts" and prompt_source == "speaker":
            if manifest.utt2spk is None:
                raise ManifestError(
                    f"{manifest.path}: prompt_source 'speaker' needs utt2spk in the manifest "
                    "(make_manifest --utt2spk), or use prompt_source 'self'"
                )
            self.utt2spk = read_key_value_file(manifest.path_of(manifest.utt2spk))
            members = set(self.uttids)
            grouped = defaultdict(list)
            for uttid, speaker in self.utt2spk.items():
                if uttid in members:
                    grouped[speaker].append(uttid)
            self.speaker_utts = dict(grouped)

    def read(self, name: str, uttid: str) -> np.ndarray:
        try:
            value = np.asarray(self.tables[name][uttid])
        except Exception as e:
            raise ManifestError(
                f"{self.manifest.path}: cannot read {name} of {uttid!r}: {e}"
            ) from None
        check_entry_shape(
            name, value, self.manifest.num_streams, f"{self.manifest.path}: {uttid!r}"
        )
        return value

    def example(self, index: int, rng: np.random.Generator) -> Example:
        uttid = self.uttids[index]
        fields = {name: self.read(name, uttid) for name in self.tables}
        if self.manifest.task == "tts":
            if self.utt2spk:
                speaker = self.utt2spk[uttid]
                source = pick_prompt_uttid(uttid, self.speaker_utts[speaker], rng)
                prompt = fields["speech"] if source == uttid else self.read("speech", source)
                fields["prompt"] = crop_prompt(prompt, self.prompt_frames, rng)
            else:  # the utterance's own prefix: deterministic window at the start
                fields["prompt"] = crop_prompt(fields["speech"], self.prompt_frames, None)
        return Example(uttid=uttid, **fields)

    def lengths(self) -> np.ndarray:
        return self.expected_lengths


class TaskDataset(torch.utils.data.Dataset):
    """Map-style dataset over several manifests, indexed by `BatchItem`s from the sampler."""

    def __init__(
        self,
        manifests: Sequence[Manifest],
        token_list: TokenList,
        prompt_source: str = "speaker",
        prompt_frames: int | None = None,
        loss_region: str = "target",
        seed: int = 0,
        asr_speech_mask: SpeechTimeMask | None = None,
    ) -> None:
        """asr_speech_mask: masks the speech of ASR examples (training data only)."""
        for manifest in manifests:
            manifest.require_token_list(token_list)
        self.readers = [ManifestReader(m, prompt_source, prompt_frames) for m in manifests]
        self.token_list = token_list
        self.loss_region = loss_region
        self.seed = seed
        self.asr_speech_mask = asr_speech_mask

    def __len__(self) -> int:
        return sum(len(r.uttids) for r in self.readers)

    def __getitem__(self, item: BatchItem) -> TaskSequence:
        reader = self.readers[item.manifest]
        rng = np.random.default_rng((self.seed, item.position, item.manifest, item.index))
        example = reader.example(item.index, rng)
        if self.asr_speech_mask is not None and reader.manifest.task == "asr":
            example = replace(example, speech=self.asr_speech_mask(example.speech, rng))
        sequence = build_sequence(reader.manifest.task, example, self.token_list, self.loss_region)
        expected = int(reader.expected_lengths[item.index])
        if len(sequence.frames) != expected:
            # The sampler packed the batch by the manifest's length: a longer sequence would
            # silently overrun the frame budget.
            raise ManifestError(
                f"{reader.manifest.path}: utterance {example.uttid!r} makes "
                f"{len(sequence.frames)} rows but the manifest says {expected}: the dumps or "
                "their length files changed since it was built; rebuild it (make_manifest)"
            )
        if not item.counted:  # a filler example for a rank with an empty slice: no loss
            sequence.loss_mask[:] = False
        return sequence

    def lengths(self) -> list[np.ndarray]:
        return [r.lengths() for r in self.readers]

    def uttids(self) -> list[list[str]]:
        return [r.uttids for r in self.readers]

    def sources(self) -> list[str]:
        return [str(r.manifest.path) for r in self.readers]

    def collate(self, sequences: Sequence[TaskSequence]) -> Batch:
        return collate(sequences, self.token_list.pad_id)
