"""The Kaldi-style shell utilities under utils/, run as subprocesses on directories with spaces."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parent.parent / "utils"
# `python3` in the scripts must be this interpreter (the project's venv).
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
ENV.pop("OPUSLM_PYTHON", None)

FAKE_SBATCH = """#!/usr/bin/env bash
# Runs the array tasks of `sbatch --wait --array=A-B[%M] --output=... script` one after another.
printf '%s\\n' "$@" >"$FAKE_SBATCH_ARGS"
if [[ -n "${FAKE_SBATCH_REFUSE:-}" ]]; then
  exit 1
fi
for arg in "$@"; do
  case "$arg" in --array=*) array=${arg#--array=} ;; --output=*) output=${arg#--output=} ;; esac
done
range=${array%%%*}
status=0
for ((task = ${range%-*}; task <= ${range#*-}; task++)); do
  SLURM_ARRAY_TASK_ID=$task bash "${!#}" >"${output//%a/$task}" 2>&1 || status=$?
done
exit "$status"
"""


def run(script: str, *args, check: bool = True, env: dict | None = None, **kwargs):
    result = subprocess.run(
        [str(UTILS / script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env or ENV,
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stderr}")
    return result


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A working directory whose path contains a space."""
    path = tmp_path / "my work"
    path.mkdir()
    return path


SPEAKER_UTTS = {"A": ["A-1", "A-2"], "B": ["B-1", "B-2", "B-3"], "C": ["C-1"]}


def make_data_dir(path: Path, speakers: dict[str, list[str]] = SPEAKER_UTTS) -> Path:
    """A valid data directory: every table, audio paths that exist (with spaces)."""
    utts = sorted((u, s) for s, us in speakers.items() for u in us)
    for uttid, _ in utts:
        write(path / "wav" / f"{uttid}.wav", ["RIFF"])
    write(path / "wav.scp", [f"{u} {path / 'wav' / u}.wav" for u, _ in utts])
    write(path / "text", [f"{u} words of {u}" for u, _ in utts])
    write(path / "utt2spk", [f"{u} {s}" for u, s in utts])
    write(path / "spk2utt", [f"{s} {' '.join(us)}" for s, us in sorted(speakers.items())])
    write(path / "utt2dur", [f"{u} 1.5" for u, _ in utts])
    write(path / "spk2gender", [f"{s} f" for s in sorted(speakers)])
    return path


def option_tool(root: Path):
    """A script with three options that sources parse_options.sh and echoes them, and its
    runner: tool(*args) -> CompletedProcess."""
    script = write(
        root / "tool.sh",
        [
            "#!/usr/bin/env bash",
            "set -euo pipefail",
            "max_frames=10",
            "use_gpu=false",
            'tag=""',
            'help_message="Usage: tool.sh [--max-frames N] <in>"',
            f'. "{UTILS}/parse_options.sh"',
            'echo "max_frames=$max_frames use_gpu=$use_gpu tag=$tag args=$#:$*"',
        ],
    )

    def tool(*args):
        return subprocess.run(
            ["bash", str(script), *args], capture_output=True, text=True, cwd=root
        )

    return tool


def test_parse_options(root):
    tool = option_tool(root)
    out = tool("--max-frames", "5 0", "--use_gpu", "true", "x", "--max-frames").stdout
    assert out == "max_frames=5 0 use_gpu=true tag= args=2:x --max-frames\n"
    out = tool("--max_frames=7", "--", "--y").stdout
    assert out == "max_frames=7 use_gpu=false tag= args=1:--y\n"
    helped = tool("--help")
    assert (helped.returncode, helped.stdout) == (0, "Usage: tool.sh [--max-frames N] <in>\n")
    unknown = tool("--max-frame", "3")
    assert unknown.returncode == 1 and "unknown option --max-frame" in unknown.stderr
    assert "takes true or false, not 'yes'" in tool("--use-gpu", "yes").stderr
    assert "--max-frames needs a value" in tool("--max-frames").stderr


def test_parse_options_config_files(root):
    """--config FILE: name=value lines applied before the command line (which wins), parsed
    rather than sourced, with errors naming the file and line."""
    tool = option_tool(root)
    conf = write(
        root / "a.conf",
        [
            "# defaults for this corpus",
            "max_frames=20",
            "  use-gpu=true   ",
            "tag='two words $(touch pwned)'",
            "",
        ],
    )
    later = write(root / "b.conf", ['--tag="from b"'])
    out = tool("--config", str(conf), "x").stdout
    assert out == "max_frames=20 use_gpu=true tag=two words $(touch pwned) args=1:x\n"
    assert not (root / "pwned").exists()  # parsed, never run
    # The command line wins wherever --config stands; later files override earlier ones.
    out = tool("--max_frames", "5", f"--config={conf}", "--config", str(later)).stdout
    assert out == "max_frames=5 use_gpu=true tag=from b args=0:\n"
    # A --config word that is another option's value, or after the options, is not read.
    out = tool("--tag", "--config", "y", "--config", str(conf)).stdout
    assert out == "max_frames=10 use_gpu=false tag=--config args=3:y --config " + f"{conf}\n"
    bad = write(root / "bad.conf", ["max_frames=3", "maxframes=4"])
    result = tool("--config", str(bad))
    assert result.returncode == 1 and "unknown option --maxframes" in result.stderr
    write(root / "junk.conf", ["max_frames 3"])
    result = tool("--config", str(root / "junk.conf"))
    assert result.returncode == 1 and "junk.conf:1: expected name=value" in result.stderr
    write(root / "flag.conf", ["use_gpu=yes"])
    assert "takes true or false, not 'yes'" in tool("--config", str(root / "flag.conf")).stderr
    missing = tool("--config", str(root / "nope.conf"))
    assert missing.returncode == 1 and "nope.conf: no such readable file" in missing.stderr


def test_run_substitutes_job_logs_and_keeps_operators(root):
    log_dir = root / "log dir"
    result = run(
        "run.sh", "JOB=1:3", log_dir / "x.JOB.log",
        "echo", "job JOB", "$HOME", "|", "tr", "a-z", "A-Z", ">", root / "out JOB.txt",
    )  # fmt: skip
    assert result.stderr == ""
    for job in (1, 2, 3):
        assert lines_of(root / f"out {job}.txt") == [f"JOB {job} $HOME"]
        log = lines_of(log_dir / f"x.{job}.log")
        quoted_output = str(root / f"out {job}.txt").replace(" ", "\\ ")  # as printf %q does
        assert log[0] == rf"# echo job\ {job} \$HOME | tr a-z A-Z > {quoted_output}"
        assert log[1].startswith("# Started at ") and log[2] == "#"
        assert re.fullmatch(r"# Accounting: time=\d+ threads=1", log[3])
        assert log[4].startswith("# Ended (code 0) at ")
    run("run.sh", root / "single.log", "echo", "no JOB array")
    assert lines_of(root / "single.log")[3] == "no JOB array"


def test_run_reports_failed_jobs_and_their_logs(root):
    log = root / "log dir" / "f.JOB.log"
    command = "echo try $0; exit $(( $0 % 2 ))"
    result = run(
        "run.sh", "--max-jobs-run", 2, "JOB=1:4", log, "bash", "-c", command, "JOB", check=False
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-3:] == [
        f"{UTILS}/run.sh: 2 / 4 jobs failed; see:",
        f"  {root}/log dir/f.1.log",
        f"  {root}/log dir/f.3.log",
    ]
    assert lines_of(root / "log dir" / "f.3.log")[3] == "try 3"
    assert lines_of(root / "log dir" / "f.3.log")[-1].startswith("# Ended (code 1) at ")
    shared = run("run.sh", "JOB=1:2", root / "one.log", "true", check=False)
    assert shared.returncode == 1 and "must contain JOB" in shared.stderr


def test_run_limits_and_uses_parallelism(root):
    (root / "running").mkdir()
    # Each job counts the jobs running beside it.
    count = "touch running/$0; ls running | wc -l > count.$0; sleep 0.05; rm running/$0"
    job = ["bash", "-c", count, "JOB"]
    run("run.sh", "--max-jobs-run", 1, "JOB=1:3", "log/JOB.log", *job, cwd=root)
    assert [lines_of(root / f"count.{j}") for j in (1, 2, 3)] == [["1"]] * 3
    # A barrier that only opens when all three jobs run at once.
    barrier = (
        "touch here.$0; for i in $(seq 100); do [ $(ls here.* | wc -l) = 3 ] && exit; "
        "sleep 0.05; done; exit 1"
    )
    job = ["bash", "-c", barrier, "JOB"]
    run("run.sh", "--max-jobs-run", 3, "JOB=1:3", "log/b.JOB.log", *job, cwd=root)


def test_run_shares_the_cores_among_jobs_running_at_once(root):
    """Unless the caller set OMP_NUM_THREADS, jobs side by side get nproc / (jobs at once)
    threads each: two torch processes with a thread per core each ran 11x slower."""
    bin_dir = root / "fake bin"
    write(bin_dir / "nproc", ["#!/usr/bin/env bash", "echo 8"]).chmod(0o755)
    env = {k: v for k, v in ENV.items() if k != "OMP_NUM_THREADS"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    job = ["bash", "-c", 'echo "threads=${OMP_NUM_THREADS:-unset}" > out.$0', "JOB"]

    def threads(*options, env=env):
        for out in root.glob("out.*"):
            out.unlink()
        run("run.sh", *options, "log/JOB.log", *job, cwd=root, env=env)
        return sorted(p.read_text().strip() for p in root.glob("out.*"))

    assert threads("JOB=1:2") == ["threads=4"] * 2  # 8 cores, 2 at once
    assert threads("JOB=1:3") == ["threads=2"] * 3  # 8 // 3
    assert threads("--max-jobs-run", 2, "JOB=1:5") == ["threads=4"] * 5
    assert threads("JOB=1:1") == ["threads=unset"]  # alone: the library's own default
    assert threads("--max-jobs-run", 9, "JOB=1:9") == ["threads=1"] * 9  # never 0
    assert threads("JOB=1:2", env={**env, "OMP_NUM_THREADS": "3"}) == ["threads=3"] * 2


def fake_sbatch_env(root: Path) -> dict:
    bin_dir = root / "fake bin"
    sbatch = write(bin_dir / "sbatch", FAKE_SBATCH.splitlines())
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    return {
        **ENV,
        "PATH": f"{bin_dir}{os.pathsep}{ENV['PATH']}",
        "FAKE_SBATCH_ARGS": str(root / "args"),
    }


def test_slurm_submits_an_array_and_reports_failures(root):
    env = fake_sbatch_env(root)
    log = root / "exp log" / "tok.JOB.log"
    command = "echo task $0 > out.$0; exit $(( $0 == 2 ))"
    result = run(
        "slurm.sh", "--partition", "gpu", "--time", "1:00:00", "--gpus-per-task", 1, "--mem", "4G",
        "--cpus-per-task", 2, "--max-jobs-run", 2, "JOB=1:3", log, "bash", "-c", command, "JOB",
        check=False, env=env, cwd=root,
    )  # fmt: skip
    queue = root / "exp log" / "q"
    assert lines_of(root / "args") == [
        "--wait",
        "--array=1-3%2",
        "--job-name=tok",
        f"--output={queue}/tok.%a.out",
        "--partition=gpu",
        "--time=1:00:00",
        "--gpus-per-task=1",
        "--mem=4G",
        "--cpus-per-task=2",
        f"{queue}/tok.sh",
    ]
    assert [lines_of(root / f"out.{task}") for task in (1, 2, 3)] == [
        ["task 1"],
        ["task 2"],
        ["task 3"],
    ]
    assert lines_of(root / "exp log" / "tok.3.log")[-1].startswith("# Ended (code 0) at ")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-2:] == [
        f"{UTILS}/run.sh: 1 / 3 jobs failed; see:",
        f"  {root}/exp log/tok.2.log",
    ]
    run("slurm.sh", "JOB=1:2", log, "true", env=env, cwd=root)
    assert "--partition=gpu" not in lines_of(root / "args")
    # Logs of that successful run must not hide a submission that ran nothing.
    refuse = {**env, "FAKE_SBATCH_REFUSE": "1"}
    refused = run("slurm.sh", "JOB=1:2", log, "true", check=False, env=refuse)
    assert refused.returncode == 1 and "2 / 2 jobs failed" in refused.stderr


def test_slurm_without_a_job_array(root):
    env = fake_sbatch_env(root)
    run("slurm.sh", root / "exp" / "train.log", "echo", "one job", env=env)
    assert lines_of(root / "args")[:3] == ["--wait", "--array=1-1", "--job-name=train"]
    assert lines_of(root / "exp" / "train.log")[3] == "one job"
    assert (root / "exp" / "q" / "train.sh").exists()


def test_split_scp_balances_lines_and_keeps_speakers_together(root):
    table = write(root / "in table", [f"u{i:02d} x" for i in range(1, 11)])
    outputs = [root / "parts" / f"p {k}" for k in (1, 2, 3)]
    run("split_scp.sh", table, *outputs)
    assert [len(lines_of(p)) for p in outputs] == [4, 3, 3]
    assert sum((lines_of(p) for p in outputs), []) == lines_of(table)

    utt2spk = write(
        root / "utt2spk", [f"a{i} A" for i in (1, 2)] + [f"b{i} B" for i in range(1, 6)] + ["c1 C"]
    )
    run("split_scp.sh", "--utt2spk", utt2spk, utt2spk, *outputs)
    assert [[line.split()[0] for line in lines_of(p)] for p in outputs] == [
        ["a1", "a2"],
        ["b1", "b2", "b3", "b4", "b5"],
        ["c1"],
    ]
    too_many = run(
        "split_scp.sh", "--utt2spk", utt2spk, utt2spk, *outputs, root / "p4", check=False
    )
    assert too_many.returncode == 1 and "cannot split 3 speakers into 4 parts" in too_many.stderr
    scattered = write(root / "scattered", ["a1 A", "b1 B", "a2 A"])
    result = run("split_scp.sh", "--utt2spk", scattered, scattered, *outputs[:2], check=False)
    assert "line 3: the utterances of speaker A are not consecutive" in result.stderr


def test_split_data_filters_every_table(root):
    data = make_data_dir(root / "train set")
    run("split_data.sh", data, 2)
    first, second = data / "split2" / "1", data / "split2" / "2"
    assert lines_of(first / "utt2spk") == ["A-1 A", "A-2 A", "B-1 B", "B-2 B", "B-3 B"]
    assert lines_of(second / "text") == ["C-1 words of C-1"]
    assert lines_of(second / "spk2utt") == ["C C-1"]
    assert lines_of(second / "spk2gender") == ["C f"]
    assert lines_of(second / "wav.scp") == [f"C-1 {data}/wav/C-1.wav"]
    assert sorted(p.name for p in first.iterdir()) == sorted(
        ["wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "spk2gender"]
    )
    run("split_data.sh", "--per-utt", "true", data, 3)
    parts = [lines_of(data / "split3" / str(k) / "utt2spk") for k in (1, 2, 3)]
    assert [len(p) for p in parts] == [2, 2, 2]
    assert lines_of(data / "split3" / "2" / "spk2utt") == ["B B-1 B-2"]
    assert [p.name for p in data.iterdir() if p.name.startswith(".")] == []


def test_subset_data_dir_selections(root):
    data = make_data_dir(root / "src data")

    def subset(*args) -> list[str]:
        dest = root / "dest data"
        run("subset_data_dir.sh", *args[:-1], data, *args[-1:], dest)
        return [line.split()[0] for line in lines_of(dest / "utt2spk")]

    assert subset("--first", 2, "") == ["A-1", "A-2"]
    assert subset("--last", 2, "") == ["B-3", "C-1"]
    utt_list = write(root / "ids", ["C-1 anything", "A-2", "missing"])
    assert subset("--utt-list", utt_list, "") == ["A-2", "C-1"]
    assert subset("--spk-list", write(root / "spks", ["B"]), "") == ["B-1", "B-2", "B-3"]
    assert lines_of(root / "dest data" / "spk2gender") == ["B f"]
    assert run("validate_data_dir.sh", root / "dest data").returncode == 0
    chosen = subset("--seed", 3, 4)
    assert (
        len(chosen) == 4
        and chosen == sorted(chosen)
        and set(chosen) < {"A-1", "A-2", "B-1", "B-2", "B-3", "C-1"}
    )
    assert subset("--seed", 3, 4) == chosen
    assert any(subset("--seed", seed, 4) != chosen for seed in (4, 5))
    too_many = run("subset_data_dir.sh", data, 7, root / "x", check=False)
    assert too_many.returncode == 1 and "asked for '7' utterances; " in too_many.stderr


def test_random_subset_of_a_directory_larger_than_a_pipe_buffer(root):
    # 5,000 utterances: more shuffled lines than a pipe holds, so a `sort | head` would die of
    # SIGPIPE under pipefail.
    write(
        root / "big" / "utt2spk",
        [f"spk{i // 10:03d}-utt{i:04d} spk{i // 10:03d}" for i in range(5000)],
    )
    run("subset_data_dir.sh", root / "big", 10, root / "small")
    assert len(lines_of(root / "small" / "utt2spk")) == 10


def test_subset_with_segments_keeps_the_recordings_of_kept_segments(root):
    data = make_data_dir(root / "seg data")
    write(data / "wav.scp", ["recA /a.wav", "recB /b.wav"])
    segments = [
        "A-1 recA 0 1",
        "A-2 recA 1 2",
        "B-1 recB 0 1",
        "B-2 recB 1 2",
        "B-3 recB 2 3",
        "C-1 recB 3 4",
    ]
    write(data / "segments", segments)
    run("subset_data_dir.sh", "--first", 2, data, root / "out")
    assert lines_of(root / "out" / "segments") == segments[:2]
    assert lines_of(root / "out" / "wav.scp") == ["recA /a.wav"]


def test_combine_data(root):
    first = make_data_dir(root / "part one", {"A": ["A-1"], "C": ["C-1"]})
    second = make_data_dir(root / "part two", {"B": ["B-1", "B-2"]})
    (second / "utt2dur").unlink()
    result = run("combine_data.sh", root / "all", first, second)
    assert f"warning: skipping utt2dur, missing from: {second}" in result.stderr
    assert lines_of(root / "all" / "utt2spk") == ["A-1 A", "B-1 B", "B-2 B", "C-1 C"]
    assert lines_of(root / "all" / "spk2utt") == ["A A-1", "B B-1 B-2", "C C-1"]
    assert lines_of(root / "all" / "spk2gender") == ["A f", "B f", "C f"]
    assert not (root / "all" / "utt2dur").exists()
    duplicate = make_data_dir(root / "part three", {"B": ["B-2"]})
    clash = run("combine_data.sh", root / "bad", first, second, duplicate, check=False)
    assert clash.returncode == 1
    assert f"utterance 'B-2' is in both '{second}' and '{duplicate}'" in clash.stderr
    itself = run("combine_data.sh", first, first, second, check=False)
    assert itself.returncode == 1 and "<dest-data> is also a source" in itself.stderr


def test_filter_scp_and_speaker_map_conversions(root):
    table = write(root / "in table", ["u3 s2", "u1 s1", "u2 s1", "u4 s10"])
    ids = write(root / "id list", ["u1", "u4 extra"])
    assert run("filter_scp.sh", ids, table).stdout == "u1 s1\nu4 s10\n"
    assert (
        run("filter_scp.sh", "--exclude", ids, input=table.read_text()).stdout == "u3 s2\nu2 s1\n"
    )
    assert (
        run("filter_scp.sh", "-f", 2, write(root / "spk", ["s1"]), table).stdout == "u1 s1\nu2 s1\n"
    )
    assert (
        run("filter_scp.sh", "--exclude", write(root / "none", []), table).stdout
        == table.read_text()
    )
    spk2utt = run("utt2spk_to_spk2utt.sh", table).stdout
    assert spk2utt == "s1 u1 u2\ns10 u4\ns2 u3\n"
    assert run("spk2utt_to_utt2spk.sh", input=spk2utt).stdout == "u1 s1\nu2 s1\nu3 s2\nu4 s10\n"
    bad = run("utt2spk_to_spk2utt.sh", write(root / "bad", ["u1"]), check=False)
    assert bad.returncode == 1 and 'line 1: expected "utt spk"' in bad.stderr


def test_validate_and_fix_wrappers_call_the_python_rules(root):
    data = make_data_dir(root / "data dir")
    write(data / "text", ["A-1 hi", "A-2", "B-1 b", "B-2 b", "B-3 b"])
    result = run("validate_data_dir.sh", data, check=False)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{data}/text:2: empty transcript for 'A-2'",
        f"{data}/text: no entry for utterance 'C-1' (listed in wav.scp:6)",
    ]
    fixed = run("fix_data_dir.sh", data)
    assert f"{data}/text: dropped 1 of 5 lines" in fixed.stdout
    assert lines_of(data / "spk2utt") == ["A A-1", "B B-1 B-2 B-3"]
    assert (data / ".backup" / "utt2spk").exists()
    fake_python = write(root / "fake python", ["#!/usr/bin/env bash", 'echo "fake: $*"'])
    fake_python.chmod(0o755)
    env = {**ENV, "OPUSLM_PYTHON": str(fake_python)}
    assert run("fix_data_dir.sh", "d", env=env).stdout == "fake: -m opuslm.bin.fix_data_dir d\n"
    assert run("validate_data_dir.sh", check=False).returncode == 1


@pytest.mark.parametrize("script", sorted(p.name for p in UTILS.glob("*.sh")))
def test_every_script_is_strict_bash_with_a_usage_message(script):
    lines = (UTILS / script).read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    if script == "parse_options.sh":  # sourced: it must not change the caller's shell options
        result = run(script, check=False)
        assert result.returncode == 1 and "Usage:" in result.stderr
        return
    assert "set -euo pipefail" in lines
    if script in ("validate_data_dir.sh", "fix_data_dir.sh"):  # no python start for the usage
        result = run(script, check=False)
        assert result.returncode == 1 and "Usage:" in result.stderr
    else:
        assert "Usage:" in run(script, "--help").stdout
