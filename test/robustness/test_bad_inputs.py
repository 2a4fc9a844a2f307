"""Bad-input corpus (issue 9 item 1): one table per area, so adding a case is adding one line.

Each case breaks one valid input (made by the fixtures in conftest.py or here, never committed)
in one way and asserts the documented behaviour: an error of the documented type whose message
names the file and line, or the utterance; a skip counted in the log; or, for the cases marked
"(valid)", that the input is accepted. Cases other test modules already cover are listed in
RELIABILITY.md with their test names instead of being repeated here.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import yaml
from tiny_model import TinyModel

from opuslm.audio import AudioError, AudioReader
from opuslm.bin import tokenize_audio, tokenize_text
from opuslm.data import validate_data_dir
from opuslm.data.ark import ArkError, ScpTable
from opuslm.data.dataset import TaskDataset
from opuslm.data.manifest import ManifestError, build_manifest
from opuslm.data.sampler import BatchItem
from opuslm.packing import PackError, load_packed
from opuslm.train import checkpoint as ckpt
from opuslm.train.config import ConfigError, load_config
from opuslm.vocab import TokenList, VocabError
from robustness.helpers import SAMPLE_RATE, audio_bytes, tone, write_lines

# torch warns about the pickle protocol of a planted training state it refuses.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


def rewrite(path: Path, transform: Callable[[str], str]) -> None:
    path.write_text(transform(path.read_text(encoding="utf-8")), encoding="utf-8")


def replace_line(path: Path, line: int, new: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line - 1] = new
    write_lines(path, lines)


# ------------------------------------------------------------------------- data directories
UTTS = ("spkA-u1", "spkA-u2", "spkB-u1")  # as in conftest.data_dir
TABLES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur")


def use_segments(data: Path, start: str) -> None:
    """One recording cut into the three utterances; the first segment starts at `start`."""
    write_lines(data / "wav.scp", [f"rec1 {data / 'wav' / 'spkA-u1.wav'}"])
    starts = (start, "0.05", "0.1")
    write_lines(data / "segments", [f"{u} rec1 {s} 0.15" for u, s in zip(sorted(UTTS), starts)])


# name: (break the directory, (file, line, message fragment) expected among the problems; None
# for a valid directory).
DATADIR_CASES = {
    "uttid with a space": (
        lambda d: [rewrite(d / n, lambda t: t.replace("spkA-u1", "spkA u1")) for n in TABLES],
        ("utt2spk", 1, "speaker id 'u1 spkA' of 'spkA' contains whitespace"),
    ),
    "byte order mark": (
        lambda d: rewrite(d / "text", lambda t: "\ufeff" + t),
        ("text", 1, "starts with a UTF-8 byte order mark"),
    ),
    "empty transcript table": (
        lambda d: (d / "text").write_bytes(b""),
        ("text", None, "required file is empty"),
    ),
    "binary garbage as text": (
        lambda d: (d / "text").write_bytes(bytes(range(255, 0, -1)) * 4),
        ("text", 1, "not valid UTF-8 (byte 0xff at column 1)"),
    ),
    "control character in an id": (
        lambda d: replace_line(d / "text", 1, "spkA\x1bu1 HELLO"),
        ("text", 1, "id 'spkA\\x1bu1' contains a control or invisible character"),
    ),
    "NaN duration": (
        lambda d: replace_line(d / "utt2dur", 2, "spkA-u2 nan"),
        ("utt2dur", 2, "duration 'nan' of 'spkA-u2' is not a positive number"),
    ),
    "infinite duration": (
        lambda d: replace_line(d / "utt2dur", 3, "spkB-u1 inf"),
        ("utt2dur", 3, "duration 'inf' of 'spkB-u1' is not a positive number"),
    ),
    "segment starting at NaN": (
        lambda d: use_segments(d, "nan"),
        ("segments", 1, "are not finite numbers"),
    ),
    "wav.scp entry is a directory": (
        lambda d: replace_line(d / "wav.scp", 1, f"spkA-u1 {d / 'wav'}"),
        ("wav.scp", 1, "audio file not found"),
    ),
    "wav.scp entry without a path": (
        lambda d: replace_line(d / "wav.scp", 2, "spkA-u2"),
        ("wav.scp", 2, "no audio for 'spkA-u2'"),
    ),
    "tab-separated fields (valid)": (
        lambda d: rewrite(d / "text", lambda t: t.replace(" ", "\t", 1)),
        None,
    ),
    "segments cutting one recording (valid)": (lambda d: use_segments(d, "0.0"), None),
}


@pytest.mark.parametrize("case", DATADIR_CASES)
def test_data_directory(data_dir: Path, case: str):
    break_it, expected = DATADIR_CASES[case]
    break_it(data_dir)
    problems = validate_data_dir(data_dir)
    if expected is None:
        assert problems == []
        return
    file, line, fragment = expected
    assert any((p.file, p.line) == (file, line) and fragment in p.message for p in problems), [
        str(p) for p in problems
    ]
    where = f"{data_dir / file}:{line}: " if line else f"{data_dir / file}: "
    assert any(p.format(data_dir).startswith(where) for p in problems)


# ------------------------------------------------------------------------------------ audio
def flac_bytes(seconds: float = 1.0) -> bytes:
    return audio_bytes(tone(seconds), format="FLAC")


def wav_bytes(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> bytes:
    return audio_bytes(wav, sample_rate, subtype=subtype)


def claims_two_hours() -> bytes:
    """A 1 s, 16-bit wav whose data chunk header declares 2 hours (230.4 MB) of samples.

    Stands in for a really long recording cut short by an interrupted copy; a real 2-hour file
    is measured by the slow test `test_two_hour_recording_is_read_in_bounded_time` (below).
    """
    data = wav_bytes(tone(1.0))
    assert data[36:40] == b"data"
    declared = 2 * 3600 * SAMPLE_RATE * 2
    return data[:40] + declared.to_bytes(4, "little") + data[44:]


# name: (file name, its bytes, error fragment; None = readable).
AUDIO_CASES = {
    "truncated flac": ("cut.flac", lambda: flac_bytes()[:3000], "cannot read audio"),
    "flac header only": ("head.flac", lambda: flac_bytes()[:30], "cannot read audio"),
    "truncated wav": ("cut.wav", lambda: wav_bytes(tone(1.0))[:16000], "truncated WAV file"),
    "wav header claiming 2 hours": (
        "long.wav",
        claims_two_hours,
        "header declares 230400000 bytes of audio but only 32000 follow",
    ),
    "zero-byte file": ("empty.wav", lambda: b"", "cannot read audio"),
    "8 channels": (
        "ch8.wav",
        lambda: wav_bytes(np.tile(tone()[:, None], (1, 8))),
        "8 channels; only mono or stereo is down-mixed unless downmix=True",
    ),
    "text named .wav": ("notes.wav", lambda: b"hello world\n" * 20, "cannot read audio"),
    "wav beyond full scale (valid, clipped)": (
        "loud.wav",
        lambda: wav_bytes(tone() * 10, subtype="FLOAT"),
        None,
    ),
    "silence (valid)": ("silence.wav", lambda: wav_bytes(np.zeros(3200, np.float32)), None),
    "8 kHz 24-bit (valid, resampled)": (
        "low.wav",
        lambda: wav_bytes(tone(0.2, 8000), 8000, "PCM_24"),
        None,
    ),
    "path with spaces (valid)": ("a dir/my file.wav", lambda: wav_bytes(tone()), None),
}


def write_audio_case(directory: Path, case: str) -> Path:
    name, make, _ = AUDIO_CASES[case]
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make())
    return path


@pytest.mark.parametrize("case", AUDIO_CASES)
def test_audio_file(tmp_path: Path, case: str):
    path = write_audio_case(tmp_path, case)
    uttid = "utt-" + case.split(" (")[0].replace(" ", "_")
    write_lines(tmp_path / "wav.scp", [f"{uttid} {path}"])
    reader = AudioReader(tmp_path / "wav.scp")
    fragment = AUDIO_CASES[case][2]
    if fragment is None:
        wav = reader.read(uttid)
        assert wav.dtype == np.float32 and len(wav) > 0
        assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
        assert abs(len(wav) - 0.2 * SAMPLE_RATE) <= 1  # every valid case holds 0.2 s
        return
    with pytest.raises(AudioError, match=fragment) as error:
        reader.read(uttid)
    assert f"utterance {uttid} ({path})" in str(error.value)


def test_tokenize_audio_skips_each_bad_file_with_a_counted_log_line(
    tiny: TinyModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    bad = [case for case, (_, _, fragment) in AUDIO_CASES.items() if fragment is not None]
    entries = [f"good {tiny.wavs['utt_a']}"]
    entries += [f"bad{i} {write_audio_case(tmp_path / 'wav', case)}" for i, case in enumerate(bad)]
    data = tmp_path / "data"
    data.mkdir()
    write_lines(data / "wav.scp", sorted(entries))
    argv = [
        "--data_dir", str(data),
        "--semantic_dir", str(tiny.semantic_dir),
        "--codec_dir", str(tiny.codec_dir),
        "--output_dir", str(tmp_path / "dump"),
    ]  # fmt: skip
    assert tokenize_audio.main(argv) == 1
    assert "utterance bad0 (" in caplog.text and not (tmp_path / "dump" / "speech.scp").exists()
    caplog.clear()
    assert tokenize_audio.main([*argv, "--skip_bad"]) == 0
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping: ")]
    assert len(skipped) == len(bad) and f"skipped {len(bad)}" in caplog.text
    assert list(ScpTable(tmp_path / "dump" / "speech.scp")) == ["good"]


# ------------------------------------------------------------------------------ transcripts
# name: (content of the Kaldi text file, log fragment, True when --skip_bad skips the one bad
# utterance and keeps the others; False when the whole file is refused).
TEXT_CASES = {
    "non-UTF-8 transcript": (b"u1 the cat\nu2 caf\xe9\n", "text:2: not valid UTF-8", False),
    "duplicate uttid": (b"u1 the cat\nu1 the mat\n", "text:2: duplicate id 'u1'", False),
    "CRLF line endings": (b"u1 the cat\r\nu2 a dog\r\n", "text:1: Windows line ending", False),
    "byte order mark": (b"\xef\xbb\xbfu1 the cat\n", "text:1: starts with a UTF-8 byte", False),
    "tab-only transcript": (b"u1 the cat\nu2\t \t\n", "utterance u2: empty transcript", True),
    "control characters": (b"u1 the cat\nu2 the\x00\x07cat\n", "utterance u2: the tokenizer", True),
}


@pytest.mark.parametrize("case", TEXT_CASES)
def test_transcripts(tiny: TinyModel, tmp_path: Path, caplog: pytest.LogCaptureFixture, case):
    content, fragment, skippable = TEXT_CASES[case]
    (tmp_path / "text").write_bytes(content)
    argv = ["--text", str(tmp_path / "text"), "--tokenizer_dir", str(tiny.text_tokenizer_dir)]
    assert tokenize_text.main([*argv, "--output_dir", str(tmp_path / "a")]) == 1
    assert fragment in caplog.text
    caplog.clear()
    caplog.set_level(logging.INFO)
    status = tokenize_text.main([*argv, "--output_dir", str(tmp_path / "b"), "--skip_bad"])
    if skippable:
        assert status == 0 and "skipping: " + fragment in caplog.text and "skipped 1" in caplog.text
        assert list(ScpTable(tmp_path / "b" / "text.scp")) == ["u1"]
    else:
        assert status == 1 and not (tmp_path / "b" / "text.scp").exists()


def test_missing_text_file_names_the_path(tiny: TinyModel, tmp_path: Path, caplog):
    argv = ["--text", str(tmp_path / "nowhere" / "text"), "--output_dir", str(tmp_path / "out")]
    assert tokenize_text.main([*argv, "--tokenizer_dir", str(tiny.text_tokenizer_dir)]) == 1
    assert str(tmp_path / "nowhere" / "text") in caplog.text


# ------------------------------------------------------------------------------ token dumps
def arrays(scp: Path) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in ScpTable(scp).items()}


def save_dump(scp: Path, table: dict[str, np.ndarray], **write_kwargs) -> None:
    """Rewrite `scp` and its ark (`<scp stem>.ark`) with `table`, as the dumpers write them."""
    kaldiio.save_ark(
        str(scp.with_suffix(".ark")),
        table,
        scp=str(scp),
        write_function="numpy",
        write_kwargs=write_kwargs or {"allow_pickle": False},
    )


def change_entry(scp: Path, uttid: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
    table = arrays(scp)
    table[uttid] = change(table[uttid].copy())
    save_dump(scp, table)


def set_item(array: np.ndarray, index: tuple, value: int) -> np.ndarray:
    array[index] = value
    return array


def offset_of(scp: Path, line: int) -> tuple[str, int]:
    ark, offset = scp.read_text().splitlines()[line - 1].split()[1].rsplit(":", 1)
    return ark, int(offset)


def move_offset(scp: Path, line: int, offset: Callable[[str, int], int]) -> None:
    ark, old = offset_of(scp, line)
    key = scp.read_text().splitlines()[line - 1].split()[0]
    replace_line(scp, line, f"{key} {ark}:{offset(ark, old)}")


def add_three_frames(lengths: str) -> str:
    return "".join(f"{key} {int(n) + 3}\n" for key, n in map(str.split, lengths.splitlines()))


SECOND = "spk1_utt001"  # line 2 of every scp written by write_corpus
LENGTHS = {"text": "utt2num_tokens", "speech": "utt2num_frames"}
# name: (break the dumps (paths from the `dump` fixture), error type, message pattern; None
# when the dumps are usable). The probe builds an asr manifest and reads every example.
DUMP_CASES = {
    "scp points at a missing ark": (
        lambda p: replace_line(p["speech"], 2, f"{SECOND} {p['speech'].parent}/gone.ark:12"),
        ManifestError,
        rf"speech of '{SECOND}': .*speech\.scp:2: '{SECOND}': cannot read ark .*gone\.ark",
    ),
    "ark offset past the end": (
        lambda p: move_offset(p["speech"], 2, lambda ark, _: Path(ark).stat().st_size + 100),
        ManifestError,
        rf"speech\.scp:2: '{SECOND}': offset \d+ is past the end of .*speech\.ark",
    ),
    "offset inside a record": (
        lambda p: move_offset(p["speech"], 2, lambda _, old: old + 7),
        ManifestError,
        rf"speech\.scp:2: '{SECOND}': no NPY or Kaldi binary record at byte",
    ),
    "truncated ark": (
        lambda p: truncate(p["speech"].with_suffix(".ark"), 40),
        ManifestError,
        r"speech\.scp:4: 'spk0_utt003': truncated record",
    ),
    "scp line without a location": (
        lambda p: replace_line(p["text"], 2, SECOND),
        ArkError,
        rf"text\.scp:2: '{SECOND}': no ark location",
    ),
    "duplicate id in an scp": (
        lambda p: rewrite(p["text"], lambda t: t + t.splitlines(keepends=True)[0]),
        ArkError,
        r"text\.scp:5: duplicate id 'spk0_utt000' \(first on line 1\)",
    ),
    "scp not UTF-8": (
        lambda p: p["text"].write_bytes(p["text"].read_bytes().replace(b"spk1", b"spk\xff", 1)),
        ArkError,
        r"text\.scp:2: not valid UTF-8",
    ),
    "text token id out of range": (
        lambda p: change_entry(p["text"], SECOND, lambda a: set_item(a, (0,), 10_000)),
        VocabError,
        rf"utterance '{SECOND}' \(task 'asr'\): `text`: text ids .*10000 outside \[0, 40\)",
    ),
    "negative semantic unit": (
        lambda p: change_entry(p["speech"], SECOND, lambda a: set_item(a, (0, 0), -1)),
        VocabError,
        rf"utterance '{SECOND}' .*`speech`: semantic units -1\.\.\d+ outside \[0, 16\)",
    ),
    "codec code out of range": (
        lambda p: change_entry(p["speech"], SECOND, lambda a: set_item(a, (2, 1), 8)),
        VocabError,
        rf"utterance '{SECOND}' .*`speech`: acoustic codes \d+\.\.8 outside \[0, 8\)",
    ),
    "float token dump": (
        lambda p: change_entry(p["text"], SECOND, lambda a: a.astype(np.float32)),
        VocabError,
        rf"utterance '{SECOND}' .*text ids must hold integer ids, got dtype float32",
    ),
    "object array record (needs pickle)": (
        lambda p: save_dump(
            p["text"], {**arrays(p["text"]), SECOND: np.array([{"x": 1}])}, allow_pickle=True
        ),
        ManifestError,
        rf"text\.scp:2: '{SECOND}': not a plain NPY array \(object dtype; it would need unp",
    ),
    "length file disagrees with the ark": (
        lambda p: rewrite(p["speech"].parent / "utt2num_frames", add_three_frames),
        ManifestError,
        r"utterance 'spk0_utt000' makes \d+ rows but the manifest says \d+",
    ),
    "length file not UTF-8": (
        lambda p: (p["speech"].parent / "utt2num_frames").write_bytes(b"spk0_utt000 \xff\n"),
        ManifestError,
        r"utt2num_frames:1: not valid UTF-8",
    ),
    "an id missing from one dump (valid, dropped and counted)": (
        lambda p: [
            rewrite(path, lambda t: t.replace(SECOND, "renamed"))
            for path in (p["text"], p["text"].parent / LENGTHS["text"])
        ],
        None,
        "asr/train: dropped 2 of 5 utterances not present in every entry file",
    ),
}


def truncate(path: Path, cut: int) -> None:
    path.write_bytes(path.read_bytes()[:-cut])


def read_every_example(paths: dict[str, Path], output: Path) -> None:
    output.parent.mkdir(parents=True)  # the manifest stores paths relative to it
    token_list = TokenList.load(paths["token_list"])
    entries = {"speech": paths["speech"], "text": paths["text"]}
    manifest = build_manifest("asr", "train", paths["token_list"], entries, output)
    dataset = TaskDataset([manifest], token_list)
    for index in range(len(manifest.uttids)):
        dataset[BatchItem(0, index, 0)]


@pytest.mark.parametrize("case", DUMP_CASES)
def test_token_dumps(dump: dict[str, Path], tmp_path: Path, caplog, case: str):
    break_it, error, pattern = DUMP_CASES[case]
    break_it(dump)
    if error is None:
        read_every_example(dump, tmp_path / "asr" / "data.json")
        assert pattern in caplog.text
        return
    with pytest.raises(error, match=pattern):
        read_every_example(dump, tmp_path / "asr" / "data.json")


# ------------------------------------------------------------------------- training configs
# name: (config file content, ConfigError pattern after "<path>: ").
TRAIN_CONFIG_CASES = {
    "wrong type": ("optim:\n  lr: fast\n", "optim.lr must be float, got 'fast'"),
    "section not a mapping": ("optim: 3\n", "optim must be OptimConfig, got 3"),
    "bool for an int": ("train:\n  seed: true\n", "train.seed must be int, got True"),
    "tuple of the wrong length": ("optim:\n  betas: [0.9]\n", r"optim.betas must be tuple"),
    "manifest weight not a number": (
        "data:\n  train:\n  - {path: a.json, weight: heavy}\n",
        r"data.train\[0\].weight must be float, got 'heavy'",
    ),
    "unknown nested key": (
        "data:\n  train:\n  - {path: a.json, wieght: 2}\n",
        r"unknown key data.train\[0\].wieght",
    ),
    "curriculum weight not a number": (
        "data:\n  curriculum:\n  - {until_step: 10, weights: [1.0, lots]}\n",
        r"data.curriculum\[0\].weights\[1\] must be float, got 'lots'",
    ),
    "curriculum phase misspelt": (
        "data:\n  curriculum:\n  - {until: 10, weights: [1.0]}\n",
        r"unknown key data.curriculum\[0\].until \(known: until_step, weights\)",
    ),
    "curriculum step not an integer": (
        "data:\n  curriculum:\n  - {until_step: 1e3, weights: [1.0]}\n",
        r"data.curriculum\[0\].until_step must be int, got '1e3'",
    ),
    "YAML syntax error": ("optim: [1, 2\n", "not valid YAML"),
    "a list instead of sections": ("- optim\n", "the config must be a mapping of sections"),
}


@pytest.mark.parametrize("case", TRAIN_CONFIG_CASES)
def test_training_config(tmp_path: Path, case: str):
    content, pattern = TRAIN_CONFIG_CASES[case]
    path = tmp_path / "train.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}: {pattern}"):
        load_config(path)


def test_missing_training_config_names_the_path(tmp_path: Path):
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'no.yaml'}: config file not found"):
        load_config(tmp_path / "no.yaml")


def test_training_config_not_utf8_names_the_path(tmp_path: Path):
    path = tmp_path / "train.yaml"
    path.write_bytes(b"optim:\n  lr: 0.1 # caf\xe9\n")
    with pytest.raises(ConfigError, match=f"^{path}: not UTF-8 text"):
        load_config(path)


# ------------------------------------------------------------------------ packed model dirs
def edit_config(packed: Path, edit: Callable[[dict], object]) -> None:
    config = yaml.safe_load((packed / "config.yaml").read_text())
    edit(config)
    (packed / "config.yaml").write_text(yaml.safe_dump(config))


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


# name: (break the copied packed directory, PackError pattern).
MODEL_DIR_CASES = {
    "config.yaml missing": (lambda d: remove(d / "config.yaml"), "config.yaml is missing"),
    "weights missing": (lambda d: remove(d / "model.safetensors"), "model.safetensors is missing"),
    "text tokenizer missing": (
        lambda d: remove(d / "text_tokenizer"),
        "text_tokenizer/ is missing",
    ),
    "semantic tokenizer missing": (lambda d: remove(d / "semantic"), "semantic/ is missing"),
    "zero-byte weights": (
        lambda d: (d / "model.safetensors").write_bytes(b""),
        "model.safetensors: not a safetensors file",
    ),
    "truncated weights": (
        lambda d: truncate(d / "model.safetensors", 1000),
        "model.safetensors: not a safetensors file",
    ),
    "config.yaml not YAML": (
        lambda d: (d / "config.yaml").write_text("model: [\n"),
        "config.yaml: not valid YAML",
    ),
    "sample_rate not an int": (
        lambda d: edit_config(d, lambda c: c.update(sample_rate="16k")),
        "config.yaml: sample_rate must be int, got '16k'",
    ),
    "prompt_frames zero": (
        lambda d: edit_config(d, lambda c: c.update(prompt_frames=0)),
        "config.yaml: sample_rate, frame_rate and prompt_frames must be positive",
    ),
    "model config not a mapping": (
        lambda d: edit_config(d, lambda c: c.update(model="llama")),
        "config.yaml: model must be dict, got 'llama'",
    ),
    "decoding settings not a mapping": (
        lambda d: edit_config(d, lambda c: c["decoding"].update(asr=5)),
        "config.yaml: decoding.asr: decoding settings must be a mapping, got 5",
    ),
    "decoding max_frames not a number": (
        lambda d: edit_config(d, lambda c: c["decoding"]["asr"].update(max_frames="many")),
        "config.yaml: decoding.asr: bad decoding settings for asr",
    ),
    "semantic centroids not an array": (
        lambda d: (d / "semantic" / "centroids.npy").write_bytes(b"not numpy"),
        "semantic: cannot load the tokenizer",
    ),
    "default prompt missing": (
        lambda d: remove(d / "default_prompt.safetensors"),
        "default_prompt.safetensors: not a default prompt safetensors file",
    ),
}


@pytest.mark.parametrize("case", MODEL_DIR_CASES)
def test_packed_model_directory(tiny: TinyModel, tmp_path: Path, case: str):
    packed = tmp_path / "packed"
    shutil.copytree(tiny.packed_dir, packed)
    break_it, pattern = MODEL_DIR_CASES[case]
    break_it(packed)
    with pytest.raises(PackError, match=f"{packed}.*{pattern}"):
        load_packed(packed)


# ------------------------------------------------------------------------------ checkpoints
def other_token_list(directory: Path) -> TokenList:
    old = TokenList.load(directory / ckpt.TOKEN_LIST)
    tokens = list(old.tokens)
    tokens[5] = "<changed>"
    return TokenList(tuple(tokens), old.ranges, old.num_codebooks, old.codebook_size)


def load_everything(root: Path, expected: TokenList | None = None) -> None:
    directory = ckpt.resolve_checkpoint(root)
    ckpt.require_token_list(directory, expected or TokenList.load(directory / ckpt.TOKEN_LIST))
    ckpt.load_checkpoint_config(directory)
    ckpt.load_weights(directory / ckpt.WEIGHTS)
    ckpt.load_train_state(directory)


# name: (break the copied checkpoints root (step_5 + latest), error type, pattern).
CHECKPOINT_CASES = {
    "truncated weights": (
        lambda r: truncate(r / "step_5" / ckpt.WEIGHTS, 500),
        ckpt.CheckpointError,
        r"step_5/model.safetensors: not a readable safetensors weights file",
    ),
    "training state not a torch file": (
        lambda r: (r / "step_5" / ckpt.TRAIN_STATE).write_bytes(b"\x80\x04garbage"),
        ckpt.CheckpointError,
        r"step_5/train_state.pt: refused: not a training state written by opuslm",
    ),
    "config.yaml missing": (
        lambda r: remove(r / "step_5" / ckpt.CONFIG),
        ckpt.CheckpointError,
        r"latest points at .*step_5, which is not a complete checkpoint",
    ),
    "latest points at a step that is gone": (
        lambda r: (r / "step_5").rename(r / ".step_5.tmp"),
        ckpt.CheckpointError,
        r"latest points at .*step_5, which is not a complete checkpoint",
    ),
    "token list of another model": (
        lambda r: None,
        VocabError,
        r"token list of checkpoint .*step_5 does not match .* first difference at token id 5",
    ),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_checkpoint(tiny: TinyModel, tmp_path: Path, case: str):
    root = tmp_path / "checkpoints"
    shutil.copytree(tiny.checkpoint_dir.parent, root)
    expected = other_token_list(root / "step_5") if case == "token list of another model" else None
    break_it, error, pattern = CHECKPOINT_CASES[case]
    break_it(root)
    with pytest.raises(error, match=pattern):
        load_everything(root, expected)


@pytest.mark.slow
def test_two_hour_recording_is_read_in_bounded_time(tmp_path: Path):
    """A real 2-hour 16 kHz wav (a sparse file: 230 MB of zeros on disk that take no space) read
    whole; the time and peak memory are printed for RELIABILITY.md. The library reads any length;
    recipes drop long recordings in stage 2 (--max_wav_duration) before tokenization."""
    import time
    import tracemalloc

    samples = 2 * 3600 * SAMPLE_RATE
    header = wav_bytes(np.zeros(1, np.float32))[:40] + (2 * samples).to_bytes(4, "little")
    path = tmp_path / "two_hours.wav"
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + 2 * samples)
    write_lines(tmp_path / "wav.scp", [f"long {path}"])
    tracemalloc.start()
    start = time.perf_counter()
    wav = AudioReader(tmp_path / "wav.scp").read("long")
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert wav.shape == (samples,) and wav.dtype == np.float32 and not wav.any()
    print(f"2-hour wav: read in {seconds:.2f} s, peak {peak / 2**30:.2f} GiB traced")
