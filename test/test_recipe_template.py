"""The recipe template: setup.sh, stage selection, input checks and audio formatting (stage 2).

A fresh recipe is made by setup.sh in a directory whose path has a space; its local/data.sh is
replaced by a tiny one that writes sox-generated 8 kHz audio, so stage 2 must resample it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "egs2" / "TEMPLATE" / "speechlm1"
SETUP = TEMPLATE / "setup.sh"
CONF_ARGS = TEMPLATE / "scripts" / "conf_args.py"

# train: three 1 s utterances and one of 0.2 s (dropped by --min_wav_duration 0.5);
# valid: the same lengths, kept (only the training set is filtered); test: two of 1 s.
TINY_DATA_SH = r"""#!/usr/bin/env bash
set -euo pipefail
make_set() {  # make_set <set> <uttid:seconds>...
  local set=$1 item
  shift
  mkdir -p "data/${set}" "audio dir"
  : >"data/${set}/wav.scp"; : >"data/${set}/text"; : >"data/${set}/utt2spk"
  for item in "$@"; do
    sox -n -r 8000 -b 16 "audio dir/${item%:*}.wav" synth "${item#*:}" sine 300
    echo "${item%:*} $(pwd)/audio dir/${item%:*}.wav" >>"data/${set}/wav.scp"
    echo "${item%:*} a b c" >>"data/${set}/text"
    echo "${item%:*} spk" >>"data/${set}/utt2spk"
  done
  utils/fix_data_dir.sh "data/${set}"
}
make_set train spk-1:1 spk-2:1 spk-3:1 spk-4:0.2
make_set valid spk-5:1 spk-6:0.2
make_set test spk-7:1 spk-8:1
"""


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=recipe, capture_output=True, text=True, timeout=120)


def table(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    target = tmp_path / "new recipe" / "speechlm1"
    result = run(tmp_path, str(SETUP), str(target))
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture
def tiny_recipe(recipe: Path) -> Path:
    data_sh = recipe / "local" / "data.sh"
    data_sh.write_text(TINY_DATA_SH)
    data_sh.chmod(0o755)
    return recipe


def egs_scripts() -> list[Path]:
    return sorted(p for p in (REPO / "egs2").rglob("*.sh") if not p.is_symlink())


def test_every_recipe_script_parses():
    scripts = egs_scripts()
    assert TEMPLATE / "speechlm.sh" in scripts and len(scripts) >= 12
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_setup_creates_a_recipe_wired_to_the_template(recipe: Path, tmp_path: Path):
    assert (recipe / "speechlm.sh").resolve() == TEMPLATE / "speechlm.sh"
    assert (recipe / "utils").resolve() == REPO / "utils"
    assert not Path(str((recipe / "utils").readlink())).is_absolute()
    for name in ("path.sh", "cmd.sh", "db.sh", "conf/tokenizer.yaml", "conf/train.yaml"):
        assert (recipe / name).read_text() == (TEMPLATE / name).read_text()
    help_text = run(recipe, "./speechlm.sh", "--help")
    assert help_text.returncode == 0 and "--stop_stage" in help_text.stdout
    stub = run(recipe, "./run.sh", "--stop_stage", "1")
    assert stub.returncode != 0
    assert "local/data.sh: not written yet" in stub.stderr
    again = run(tmp_path, str(SETUP), str(recipe))
    assert again.returncode == 1 and "exists and is not empty" in again.stderr


def test_stage_options_run_only_the_chosen_stages(tiny_recipe: Path):
    first = run(tiny_recipe, "./run.sh", "--stage", "1", "--stop_stage", "1")
    assert first.returncode == 0, first.stderr
    assert "Stage 1: data preparation" in first.stderr and "Stage 2" not in first.stderr
    assert "stage  1 data preparation" in first.stderr  # the wall-time table
    assert (tiny_recipe / "data" / "train" / "spk2utt").is_file()
    assert not (tiny_recipe / "dump").exists()

    second = run(
        tiny_recipe, "./run.sh", "--stage", "2", "--stop_stage", "2", "--min_wav_duration", "0.3"
    )
    assert second.returncode == 0, second.stderr
    assert "Stage 1" not in second.stderr and "Stage 3" not in second.stderr
    assert "dropped 1 utterances < 0.3 s and 0 > 20 s; kept 3" in second.stderr
    raw = tiny_recipe / "dump" / "raw"
    assert set(table(raw / "train" / "wav.scp")) == {"spk-1", "spk-2", "spk-3"}
    assert set(table(raw / "train" / "text")) == {"spk-1", "spk-2", "spk-3"}
    assert table(raw / "train" / "spk2utt") == {"spk": "spk-1 spk-2 spk-3"}
    assert set(table(raw / "valid" / "wav.scp")) == {"spk-5", "spk-6"}
    durations = {k: float(v) for k, v in table(raw / "valid" / "utt2dur").items()}
    assert durations == pytest.approx({"spk-5": 1.0, "spk-6": 0.2})
    for wav in table(raw / "test" / "wav.scp").values():
        info = soundfile.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    # Stages 1-2 write nothing under exp/ but the per-stage wall-time log.
    assert [p.name for p in (tiny_recipe / "exp").iterdir()] == ["timings_train.tsv"]

    # Only the training set depends on the duration limits: it alone is redone.
    changed = run(tiny_recipe, "./run.sh", "--stage", "2", "--stop_stage", "2")
    assert changed.returncode == 0, changed.stderr
    assert "dropped 1 utterances < 0.5 s and 0 > 20 s; kept 3" in changed.stderr
    assert changed.stderr.count("done already") == 2
    unchanged = run(tiny_recipe, "./run.sh", "--stage", "2", "--stop_stage", "2")
    assert unchanged.returncode == 0, unchanged.stderr
    assert unchanged.stderr.count("done already") == 3


@pytest.mark.parametrize(
    ("stage", "options", "maker"),
    [
        (2, [], 1),
        (3, [], 2),
        (4, [], 3),
        (5, [], 3),
        (6, ["--base_lm_config", "conf/train.yaml"], 5),
        (7, [], 5),
        (8, ["--anneal_config", "conf/anneal.yaml"], 7),
        (9, [], 7),
        (10, [], 9),
        (11, [], 7),
    ],
)
def test_a_stage_without_its_inputs_names_the_stage_to_run(recipe, stage, options, maker):
    result = run(recipe, "./run.sh", "--stage", str(stage), "--stop_stage", str(stage), *options)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].endswith(f"run stage {maker} first (--stage {maker})")


def test_a_missing_pretrained_tokenizer_is_named(recipe: Path):
    (recipe / "conf" / "tokenizer.yaml").write_text(
        "text: {pretrained: no/such/model}\nsemantic: {num_clusters: 8}\ncodec: {hop_length: 320}\n"
    )
    result = run(recipe, "./run.sh", "--stage", "4", "--stop_stage", "4")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].endswith(
        "conf/tokenizer.yaml: text.pretrained: no/such/model is not a directory"
        " (see the recipe's README)"
    )


def test_a_bad_stage_range_is_an_error(recipe: Path):
    result = run(recipe, "./run.sh", "--stage", "5", "--stop_stage", "3")
    assert result.returncode == 1
    assert "need 1 <= --stage (5) <= --stop_stage (3) <= 11" in result.stderr


def test_conf_args_turns_a_config_section_into_options(tmp_path: Path):
    config = tmp_path / "tokenizer.yaml"
    config.write_text(
        "codec:\n  hop_length: 640\n  names: [a b, c]\n  flag: true\n  off: false\n"
        "  unset: null\ntext: {pretrained: /models/my lm}\nbad: {nested: {a: 1}}\n"
    )

    def conf_args(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(CONF_ARGS), *args], capture_output=True)

    options = conf_args(str(config), "codec").stdout.split(b"\0")
    assert options == [b"--hop_length", b"640", b"--names", b"a b", b"c", b"--flag", b""]
    assert conf_args(str(config), "semantic").stdout == b""
    assert conf_args("--value", str(config), "text.pretrained").stdout == b"/models/my lm\n"
    assert conf_args("--value", str(config), "semantic.pretrained").stdout == b"\n"
    nested = conf_args(str(config), "bad")
    assert (
        nested.returncode == 1 and b"bad.nested: nested mappings are not options" in nested.stderr
    )


MAKE_RESULTS = TEMPLATE / "scripts" / "make_results.py"


def run_make_results(recipe: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["--tag", "t", "--model_dir", "exp/m", "--base_lm_dir", "exp/b", "--test_sets", "test"]
    args += ["--text_test_sets", "text", "--timings", "exp/timings_t.tsv", "--output", "R.md"]
    return subprocess.run(
        [sys.executable, str(MAKE_RESULTS), *args, *extra],
        cwd=recipe,
        capture_output=True,
        text=True,
    )


def test_make_results_shows_missing_figures_as_dashes_and_names_them(tmp_path):
    model = tmp_path / "exp" / "m" / "decode_asr_test"
    model.mkdir(parents=True)
    (model / "score.json").write_text('{"task": "asr", "wer": 12.5, "cer": 4.25, "num_utts": 3}')
    (tmp_path / "exp" / "timings_t.tsv").write_text(
        "2026-01-01T00:00:00\t1\tdata preparation\t7\t./run.sh\n"
        "2026-01-01T00:01:00\t1\tdata preparation\t5\t./run.sh --stage 1\n"
    )
    result = run_make_results(tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "R.md").read_text()
    assert "| test | m | 12.50 | - | 4.25 | 3 |" in text  # a score.json from before intervals
    assert "| test | reference audio | - | - | - | - | - |" in text
    assert "| 1 | data preparation | 5 | 2026-01-01T00:01:00 |" in text  # the latest run
    assert "./run.sh --stage 1\n```" in text
    assert "exp/m/decode_tts_test/score.json is missing" in result.stderr
    assert "use its condition" not in text  # no gain measured: no section

    (model / "score.json").write_text(
        '{"task": "asr", "wer": 12.5, "cer": 4.25, "num_utts": 3, "wer_interval_95": [10, 15.25]}'
    )
    gains = tmp_path / "exp" / "m" / "condition_gain"
    gains.mkdir()
    (gains / "tts_test.json").write_text('{"ce_own": 2.7761, "ce_other": 2.7792, "gain": 0.0031}')
    assert run_make_results(tmp_path).returncode == 0
    text = (tmp_path / "R.md").read_text()
    assert "| test | tts | 2.776 | 2.779 | 0.003 | - | text / frame |" in text
    assert "| test | m | 12.50 | 10.00-15.25 | 4.25 | 3 |" in text
    assert "| test | asr |" not in text.split("use its condition?", 1)[1]  # not measured


def test_make_results_names_a_malformed_timings_line(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "timings_t.tsv").write_text("2026\t1\tdata\t7\t./run.sh\nbroken line\n")
    result = run_make_results(tmp_path)
    assert result.returncode == 1
    assert "exp/timings_t.tsv:2: expected 5 tab-separated fields" in result.stderr


def test_make_results_names_uncommitted_changes_next_to_the_commit(tmp_path):
    spec = importlib.util.spec_from_file_location("make_results", MAKE_RESULTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q", str(tmp_path)], check=True)
    for name in ("train.yaml", "anneal.yaml", "untracked.txt"):
        (tmp_path / name).write_text("a\n")
    subprocess.run(git + ["add", "train.yaml", "anneal.yaml"], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    assert module.project_commit(tmp_path) == head  # untracked files do not count
    (tmp_path / "train.yaml").write_text("b\n")
    (tmp_path / "anneal.yaml").unlink()
    assert module.project_commit(tmp_path, max_names=1) == (
        f"{head} with uncommitted changes to anneal.yaml and 1 more"
    )
    assert module.project_commit(tmp_path) == (
        f"{head} with uncommitted changes to anneal.yaml, train.yaml"
    )
    # A staged rename is one change, named by its new path (git's -z output adds the old one).
    subprocess.run(git + ["mv", "train.yaml", "renamed.yaml"], cwd=tmp_path, check=True)
    assert module.project_commit(tmp_path) == (
        f"{head} with uncommitted changes to anneal.yaml, renamed.yaml"
    )
    assert module.project_commit(tmp_path.parent / "not-a-repo") == "unknown"
