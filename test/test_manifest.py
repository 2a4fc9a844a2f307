"""Task manifests (intersection of entry files, sequence lengths, validation errors) and the
dataset that reads them (TTS prompts, collate).

`write_corpus` (tiny synthetic token dumps written with kaldiio) is shared by the training tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from opuslm.bin import make_manifest
from opuslm.data.dataset import TaskDataset
from opuslm.data.manifest import Manifest, ManifestError, build_manifest, sequence_length
from opuslm.data.sampler import BatchItem
from opuslm.tasks import Example, build_sequence, crop_prompt
from opuslm.vocab import TokenList, VocabError

NUM_TEXT = 40
NUM_SEMANTIC = 16
NUM_CODEBOOKS = 2
CODEBOOK_SIZE = 8


def tiny_token_list(
    num_text: int = NUM_TEXT,
    num_semantic: int = NUM_SEMANTIC,
    num_codebooks: int = NUM_CODEBOOKS,
    codebook_size: int = CODEBOOK_SIZE,
) -> TokenList:
    return TokenList.build(
        [f"t{i}" for i in range(num_text)],
        num_semantic=num_semantic,
        num_codebooks=num_codebooks,
        codebook_size=codebook_size,
    )


def write_corpus(
    directory: Path,
    num_utts: int = 12,
    speech_frames: tuple[int, int] = (6, 20),
    text_tokens: tuple[int, int] = (3, 10),
    num_speakers: int = 3,
    seed: int = 0,
    length_files: bool = True,
    token_list: TokenList | None = None,
) -> dict[str, Path]:
    """speech.scp / text.scp / utt2spk / token_list.json of random tokens under `directory`.

    Speech rows are int32 [T, S] (S from `token_list`, default `tiny_token_list()`); text vectors
    int32 [L]. Returns the paths.
    """
    token_list = token_list or tiny_token_list()
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    uttids = [f"spk{i % num_speakers}_utt{i:03d}" for i in range(num_utts)]
    speech, text = {}, {}
    for uttid in uttids:
        frames = rng.integers(*speech_frames)
        semantic = rng.integers(0, token_list.size("semantic"), (frames, 1))
        codes = rng.integers(0, token_list.codebook_size, (frames, token_list.num_codebooks))
        speech[uttid] = np.concatenate([semantic, codes], axis=1).astype(np.int32)
        length = rng.integers(*text_tokens)
        text[uttid] = rng.integers(0, token_list.size("text"), length).astype(np.int32)
    for name, table in (("speech", speech), ("text", text)):
        # NPY records: Kaldi's binary format has no int32 matrices (as opuslm.dump writes them).
        kaldiio.save_ark(
            str(directory / f"{name}.ark"),
            table,
            scp=str(directory / f"{name}.scp"),
            write_function="numpy",
        )
    if length_files:
        (directory / "utt2num_frames").write_text(
            "".join(f"{u} {len(v)}\n" for u, v in speech.items())
        )
        (directory / "utt2num_tokens").write_text(
            "".join(f"{u} {len(v)}\n" for u, v in text.items())
        )
    (directory / "utt2spk").write_text("".join(f"{u} {u.split('_')[0]}\n" for u in uttids))
    token_list.save(directory / "token_list.json")
    return {
        "speech": directory / "speech.scp",
        "text": directory / "text.scp",
        "utt2spk": directory / "utt2spk",
        "token_list": directory / "token_list.json",
    }


@pytest.mark.parametrize("task", ["asr", "tts", "audiolm", "textlm"])
def test_sequence_length_matches_build_sequence(task):
    token_list = tiny_token_list()
    rng = np.random.default_rng(1)
    speech = np.concatenate(
        [rng.integers(0, NUM_SEMANTIC, (7, 1)), rng.integers(0, CODEBOOK_SIZE, (7, 2))], axis=1
    )
    example = Example("u", text=rng.integers(0, NUM_TEXT, 5), speech=speech)
    example.prompt = crop_prompt(speech, 4, None)
    built = build_sequence(task, example, token_list)
    assert len(built.frames) == sequence_length(task, 3, speech=7, text=5, prompt=4)


@pytest.mark.parametrize("length_files", [True, False])
def test_manifest_intersects_entries_and_measures(tmp_path, length_files):
    paths = write_corpus(tmp_path / "dump", num_utts=6, length_files=length_files)
    # One utterance only in text.scp: it must be dropped.
    extra = tmp_path / "dump" / "text2.scp"
    lines = paths["text"].read_text().splitlines()
    extra.write_text("\n".join(lines[:-1]) + "\n")
    output = tmp_path / "exp" / "asr_train" / "data.json"
    manifest = build_manifest(
        "asr", "train", paths["token_list"], {"speech": paths["speech"], "text": extra}, output
    )
    manifest.save()
    loaded = Manifest.load(output)
    speech = kaldiio.load_scp(str(paths["speech"]))
    text = kaldiio.load_scp(str(paths["text"]))
    expected_ids = sorted(speech)[:-1]
    assert loaded.uttids == expected_ids
    for uttid, info in loaded.utterances.items():
        assert info["speech"] == len(speech[uttid])
        assert info["text"] == len(text[uttid])
        assert info["length"] == len(speech[uttid]) + len(text[uttid]) + 3 + 4
    # Paths are relative to the manifest directory and resolve back to the inputs.
    raw = json.loads(output.read_text())
    assert not Path(raw["entries"]["speech"]).is_absolute()
    assert loaded.path_of(raw["entries"]["speech"]).resolve() == paths["speech"].resolve()
    assert loaded.load_token_list() == tiny_token_list()


def test_make_manifest_command_for_tts(tmp_path):
    paths = write_corpus(tmp_path / "dump", num_utts=5)
    output = tmp_path / "m" / "data.json"
    argv = ["--task", "tts", "--dataset", "train", "--token_list", str(paths["token_list"])]
    argv += ["--speech", str(paths["speech"]), "--text", str(paths["text"])]
    argv += ["--utt2spk", str(paths["utt2spk"]), "--prompt_frames", "4", "--output", str(output)]
    assert make_manifest.main(argv) == 0
    manifest = Manifest.load(output)
    assert manifest.prompt_frames == 4 and manifest.utt2spk is not None
    lengths = manifest.lengths()
    info = next(iter(manifest.utterances.values()))
    assert lengths[0] == info["text"] + 4 + info["speech"] + 3 + 5
    assert manifest.lengths(prompt_frames=6)[0] == lengths[0] + 2


def test_errors_name_the_file(tmp_path):
    paths = write_corpus(tmp_path / "dump", num_utts=3)
    out = tmp_path / "data.json"
    bad = tmp_path / "dump" / "utt2num_frames"
    bad.write_text("spk0_utt000 seven\n")
    with pytest.raises(ManifestError, match="utt2num_frames: length of 'spk0_utt000'"):
        build_manifest("audiolm", "x", paths["token_list"], {"speech": paths["speech"]}, out)
    with pytest.raises(ManifestError, match="task asr needs entry files"):
        build_manifest("asr", "x", paths["token_list"], {"speech": paths["speech"]}, out)
    with pytest.raises(ManifestError, match="prompt_frames"):
        build_manifest("tts", "x", paths["token_list"], paths_for(paths, "text", "speech"), out)
    # Speech dumps with the wrong number of streams.
    bad.unlink()
    other = TokenList.build(
        [f"t{i}" for i in range(NUM_TEXT)], num_semantic=16, num_codebooks=3, codebook_size=8
    )
    other.save(tmp_path / "tl3.json")
    with pytest.raises(ManifestError, match=r"speech.scp: 'spk0_utt000': speech must be \[T, 4\]"):
        build_manifest("audiolm", "x", tmp_path / "tl3.json", {"speech": paths["speech"]}, out)


def test_empty_manifest_and_changed_token_list_are_errors(tmp_path):
    paths = write_corpus(tmp_path / "dump", num_utts=3)
    out = tmp_path / "data.json"
    manifest = build_manifest("audiolm", "x", paths["token_list"], {"speech": paths["speech"]}, out)
    manifest.save()
    payload = json.loads(out.read_text())
    payload["utterances"] = {}
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(payload))
    with pytest.raises(ManifestError, match=f"{empty}: the manifest has no utterances"):
        Manifest.load(empty)
    renamed = TokenList.build(
        ["t0", "t1", "t2", "x3"] + [f"t{i}" for i in range(4, NUM_TEXT)],
        num_semantic=NUM_SEMANTIC,
        num_codebooks=NUM_CODEBOOKS,
        codebook_size=CODEBOOK_SIZE,
    )
    with pytest.raises(VocabError, match=f"manifest {out}.*first difference at token id 3"):
        manifest.require_token_list(renamed)
    tiny_token_list(num_text=NUM_TEXT + 1).save(paths["token_list"])
    with pytest.raises(ManifestError, match="changed since the manifest was built"):
        Manifest.load(out).load_token_list()


def paths_for(paths: dict[str, Path], *names: str) -> dict[str, Path]:
    return {n: paths[n] for n in names}


# ------------------------------------------------------------------- dataset over manifests
def tts_dataset(tmp_path: Path, prompt_source: str) -> tuple[TaskDataset, dict[str, np.ndarray]]:
    paths = write_corpus(tmp_path / "dump", num_utts=9)
    output = tmp_path / "tts" / "data.json"
    entries = {"speech": paths["speech"], "text": paths["text"]}
    build_manifest(
        "tts", "x", paths["token_list"], entries, output, utt2spk=paths["utt2spk"], prompt_frames=3
    ).save()
    dataset = TaskDataset([Manifest.load(output)], tiny_token_list(), prompt_source=prompt_source)
    return dataset, {u: np.asarray(m) for u, m in kaldiio.load_scp(str(paths["speech"])).items()}


def prompt_rows(dataset: TaskDataset, item: BatchItem) -> np.ndarray:
    """The raw dump rows of the prompt inside a built TTS sequence."""
    sequence = dataset[item]
    token_list = dataset.token_list
    start = np.flatnonzero(sequence.frames[:, 0] == token_list.start_id("spk"))[0] + 1
    return token_list.decode_frames(sequence.frames[start : start + 3])


def windows(speech: np.ndarray, size: int) -> list[np.ndarray]:
    return [speech[i : i + size] for i in range(len(speech) - size + 1)]


def test_tts_prompt_from_another_utterance_of_the_speaker(tmp_path):
    dataset, speech = tts_dataset(tmp_path, "speaker")
    uttid = dataset.readers[0].uttids[0]
    for position in range(5):
        prompt = prompt_rows(dataset, BatchItem(0, 0, position))
        sources = [
            u
            for u, rows in speech.items()
            if any(np.array_equal(prompt, w) for w in windows(rows, 3))
        ]
        assert sources and uttid not in sources
        assert all(u.split("_")[0] == uttid.split("_")[0] for u in sources)
    # The same request gives the same prompt (whichever worker builds it, after a resume too).
    item = BatchItem(0, 0, 7)
    assert np.array_equal(prompt_rows(dataset, item), prompt_rows(dataset, item))


def test_tts_prompt_own_prefix_and_collate(tmp_path):
    dataset, speech = tts_dataset(tmp_path, "self")
    uttid = dataset.readers[0].uttids[2]
    assert np.array_equal(prompt_rows(dataset, BatchItem(0, 2, 0)), speech[uttid][:3])
    items = [BatchItem(0, 2, 0), BatchItem(0, 5, 0), BatchItem(0, 1, 0, counted=False)]
    sequences = [dataset[i] for i in items]
    batch = dataset.collate(sequences)
    lengths = [len(s.frames) for s in sequences]
    assert batch.lengths.tolist() == lengths
    assert batch.frames.shape == (3, max(lengths), 3)
    for row, seq in enumerate(sequences):
        assert np.array_equal(batch.frames[row, : lengths[row]].numpy(), seq.frames)
        assert (batch.frames[row, lengths[row] :] == dataset.token_list.pad_id).all()
        assert not batch.loss_mask[row, lengths[row] :].any()
    assert batch.loss_mask[0].any() and not batch.loss_mask[2].any()  # the filler has no loss
    assert batch.tasks == ["tts"] * 3 and batch.uttids[0] == uttid


# --------------------------------------------------------------------------- aligned TTS
def write_alignments(directory: Path, text_scp: Path, speech_scp: Path, shorten: str = "") -> Path:
    """align.scp (+ utt2num_tokens) of evenly spread starts; `shorten`: drop that one's last."""
    speech = kaldiio.load_scp(str(speech_scp))
    starts = {}
    for uttid, ids in kaldiio.load_scp(str(text_scp)).items():
        frames = len(speech[uttid])
        value = (np.arange(len(ids)) * frames) // len(ids)
        starts[uttid] = (value[:-1] if uttid == shorten else value).astype(np.int32)
    directory.mkdir(parents=True, exist_ok=True)
    kaldiio.save_ark(
        str(directory / "align.ark"),
        starts,
        scp=str(directory / "align.scp"),
        write_function="numpy",
    )
    (directory / "utt2num_tokens").write_text("".join(f"{u} {len(v)}\n" for u, v in starts.items()))
    return directory / "align.scp"


def test_aligned_tts_manifest_and_dataset(tmp_path):
    paths = write_corpus(tmp_path / "dump", num_utts=6)
    align = write_alignments(tmp_path / "align", paths["text"], paths["speech"])
    output = tmp_path / "m" / "data.json"
    argv = ["--task", "tts", "--dataset", "train", "--token_list", str(paths["token_list"])]
    argv += ["--speech", str(paths["speech"]), "--text", str(paths["text"]), "--align", str(align)]
    argv += ["--utt2spk", str(paths["utt2spk"]), "--prompt_frames", "4", "--output", str(output)]
    assert make_manifest.main(argv) == 0
    manifest = Manifest.load(output)
    info = next(iter(manifest.utterances.values()))
    assert info["align"] == info["text"]
    assert manifest.lengths()[0] == 2 * info["text"] + 4 + info["speech"] + 3 + 5
    assert manifest.lengths(prompt_frames=6)[0] == manifest.lengths()[0] + 2
    dataset = TaskDataset([manifest], tiny_token_list())
    for index in range(6):  # the dataset checks each sequence against the manifest's length
        sequence = dataset[BatchItem(0, index, 0)]
        info = manifest.utterances[manifest.uttids[index]]
        assert sequence.loss_mask.sum() == info["speech"] + info["text"] + 1  # and eos
    # Training on it with the utterance's own prefix as the prompt is refused, as decoding is.
    with pytest.raises(ManifestError, match="aligned TTS manifest needs prompt_source 'speaker'"):
        TaskDataset([manifest], tiny_token_list(), prompt_source="self")


def test_an_alignment_of_other_text_is_refused(tmp_path, caplog):
    paths = write_corpus(tmp_path / "dump", num_utts=4)
    uttid = sorted(kaldiio.load_scp(str(paths["text"])))[1]
    align = write_alignments(tmp_path / "align", paths["text"], paths["speech"], shorten=uttid)
    entries = {"speech": paths["speech"], "text": paths["text"], "align": align}
    with pytest.raises(ManifestError, match=f"align.scp: 1 alignments .* \\(first '{uttid}'\\)"):
        build_manifest(
            "tts", "x", paths["token_list"], entries, tmp_path / "m.json", paths["utt2spk"], 3
        )
    argv = ["--task", "tts", "--dataset", "x", "--token_list", str(paths["token_list"])]
    argv += ["--speech", str(paths["speech"]), "--text", str(paths["text"]), "--align", str(align)]
    argv += ["--prompt_frames", "3", "--output", str(tmp_path / "m.json")]
    assert make_manifest.main(argv) == 1  # the command logs it, naming the file
    assert "align.scp: 1 alignments have another number of tokens" in caplog.text
    assert not (tmp_path / "m.json").exists()
    with pytest.raises(ManifestError, match="task asr does not use entry files \\['align'\\]"):
        build_manifest("asr", "x", paths["token_list"], entries, tmp_path / "m.json")
