"""Data-directory rules (opuslm.data.datadir): table I/O, validation messages, fixing."""

from pathlib import Path

import pytest

from opuslm.bin import fix_data_dir as fix_cli
from opuslm.bin import validate_data_dir as validate_cli
from opuslm.data import (
    DataDirError,
    Problem,
    fix_data_dir,
    read_table,
    validate_data_dir,
    write_table,
)

UTTS = ("spkA-u1", "spkA-u2", "spkB-u1", "spkB-u2")


def write(directory: Path, name: str, lines: list[str]) -> None:
    (directory / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A valid directory: 4 utterances of 2 speakers, 3 audio files and one pipe entry."""
    data = tmp_path / "data dir"
    (data / "wav").mkdir(parents=True)
    for uttid in UTTS[:3]:
        (data / "wav" / f"{uttid}.wav").write_bytes(b"RIFF")
    wav_lines = [f"{uttid} {data / 'wav' / uttid}.wav" for uttid in UTTS[:3]]
    # A pipe that would leave a trace if validation ever ran it.
    write(data, "wav.scp", [*wav_lines, f"spkB-u2 touch '{tmp_path / 'ran'}' |"])
    write(data, "text", ["spkA-u1 HELLO WORLD", "spkA-u2 GOOD DAY", "spkB-u1 YES", "spkB-u2 NO"])
    write(data, "utt2spk", [f"{u} {u[:4]}" for u in UTTS])
    write(data, "spk2utt", ["spkA spkA-u1 spkA-u2", "spkB spkB-u1 spkB-u2"])
    write(data, "utt2dur", [f"{u} 1.5" for u in UTTS])
    return data


def test_valid_directory_has_no_problems_and_pipes_are_not_run(data_dir):
    assert validate_data_dir(data_dir) == []
    assert not (data_dir.parent / "ran").exists()


def replace_line(data: Path, name: str, line: int, new: str | None) -> None:
    lines = lines_of(data / name)
    if new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    write(data, name, lines)


def use_segments(data: Path) -> None:
    write(data, "wav.scp", [f"recA {data / 'wav' / 'spkA-u1.wav'}", "recB sox x.flac -t wav - |"])
    write(
        data,
        "segments",
        ["spkA-u1 recA 0.0 1.0", "spkA-u2 recA 1.0 1.0", "spkB-u1 recX 0 2", "spkB-u2 recB 0.5 -1"],
    )


BAD_CASES = {
    "unsorted": (
        lambda d: write(d, "text", ["spkA-u2 GOOD DAY", "spkA-u1 HI", "spkB-u1 YES", "spkB-u2 NO"]),
        [("text", 2, "not sorted: 'spkA-u1' comes after 'spkA-u2'")],
    ),
    "duplicate id": (
        lambda d: write(d, "utt2spk", [f"{u} {u[:4]}" for u in (UTTS[0], *UTTS)]),
        [("utt2spk", 2, "duplicate id 'spkA-u1' (first on line 1)")],
    ),
    "whitespace in id": (
        lambda d: replace_line(d, "text", 1, "spkA\u00a0u1 HELLO"),
        [
            ("text", 1, "id 'spkA\\xa0u1' contains whitespace"),
            ("text", None, "no entry for utterance 'spkA-u1' (listed in wav.scp:1)"),
        ],
    ),
    "non-UTF-8 id": (
        lambda d: (d / "utt2dur").write_bytes(b"spkA-u1 1\nspkA\xff-u2 1\nspkB-u1 1\nspkB-u2 1\n"),
        [
            ("utt2dur", 2, "not valid UTF-8 (byte 0xff at column 5)"),
            ("utt2dur", None, "no entry for utterance 'spkA-u2' (listed in wav.scp:2)"),
        ],
    ),
    "utterance missing from one file": (
        lambda d: replace_line(d, "text", 3, None),
        [("text", None, "no entry for utterance 'spkB-u1' (listed in wav.scp:3)")],
    ),
    "empty transcript": (
        lambda d: replace_line(d, "text", 2, "spkA-u2"),
        [("text", 2, "empty transcript for 'spkA-u2'")],
    ),
    "missing audio file": (
        lambda d: (d / "wav" / "spkA-u2.wav").unlink(),
        [("wav.scp", 2, "audio file not found: ")],
    ),
    "speaker disagrees with utt2spk": (
        lambda d: write(d, "spk2utt", ["spkA spkA-u1", "spkB spkA-u2 spkB-u1 spkB-u2"]),
        [("spk2utt", 2, "'spkA-u2' is listed under speaker 'spkB' but utt2spk says 'spkA'")],
    ),
    "utterance missing from spk2utt": (
        lambda d: replace_line(d, "spk2utt", 2, "spkB spkB-u1"),
        [("spk2utt", None, "utterance 'spkB-u2' of speaker 'spkB' (utt2spk line 4) is missing")],
    ),
    "bad segments": (
        use_segments,
        [
            ("segments", 2, "segment 'spkA-u2': end 1.0 <= start 1.0"),
            ("segments", 3, "segment 'spkB-u1' refers to unknown recording 'recX'"),
        ],
    ),
    "required file missing": (
        lambda d: (d / "text").unlink(),
        [("text", None, "required file is missing")],
    ),
    "non-positive duration": (
        lambda d: replace_line(d, "utt2dur", 1, "spkA-u1 0"),
        [("utt2dur", 1, "duration '0' of 'spkA-u1' is not a positive number")],
    ),
    "windows line ending": (
        lambda d: replace_line(d, "text", 1, "spkA-u1 HELLO\r"),
        [("text", 1, "Windows line ending (CR LF)")],
    ),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_each_rule_reports_file_line_and_message(data_dir, case):
    break_it, expected = BAD_CASES[case]
    break_it(data_dir)
    problems = validate_data_dir(data_dir)
    assert [(p.file, p.line) for p in problems] == [(f, line) for f, line, _ in expected]
    for problem, (_, _, message) in zip(problems, expected):
        assert message in problem.message


def test_problem_format_names_the_path():
    assert Problem("text", 3, "bad").format("data/train") == "data/train/text:3: bad"
    assert str(Problem("spk2utt", None, "missing")) == "spk2utt: missing"


def test_validate_cli_prints_every_problem_and_exits_1(data_dir, capsys):
    replace_line(data_dir, "text", 2, "spkA-u2")
    (data_dir / "wav" / "spkA-u1.wav").unlink()
    assert validate_cli.main([str(data_dir)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{data_dir}/wav.scp:1: audio file not found: {data_dir}/wav/spkA-u1.wav",
        f"{data_dir}/text:2: empty transcript for 'spkA-u2'",
    ]
    assert validate_cli.main(["--no_audio_check", "--require", "text", str(data_dir)]) == 1
    assert validate_cli.main([str(data_dir / "nonexistent")]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_read_table_keeps_file_order_and_value_spacing(tmp_path):
    write(tmp_path, "t", ["b x  y", "a", "c\tz"])
    assert read_table(tmp_path / "t") == {"b": "x  y", "a": "", "c": "z"}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"a 1\nb 2\na 3\n", r"t:3: duplicate id 'a' \(first on line 1\)"),
        (b"a 1\n\xc3( 2\n", r"t:2: not valid UTF-8"),
        (b"a 1\n\nb 2\n", r"t:2: empty line"),
        (b" a 1\n", r"t:1: line starts with whitespace"),
    ],
)
def test_read_table_errors_name_file_and_line(tmp_path, content, message):
    (tmp_path / "t").write_bytes(content)
    with pytest.raises(DataDirError, match=message):
        read_table(tmp_path / "t")


def test_write_table_round_trips_and_rejects_bad_ids(tmp_path):
    table = {"u1": "hello  world", "u0": ""}
    write_table(tmp_path / "text", table)
    assert (tmp_path / "text").read_text() == "u1 hello  world\nu0\n"
    assert read_table(tmp_path / "text") == table
    with pytest.raises(DataDirError, match="'a b' is empty or contains whitespace"):
        write_table(tmp_path / "text", {"a b": "x"})
    assert read_table(tmp_path / "text") == table
    assert [p.name for p in tmp_path.iterdir()] == ["text"]


def test_fix_drops_inconsistent_utterances_sorts_and_keeps_backups(data_dir, capsys):
    write(data_dir, "wav.scp", [f"{u} /x/{u}.wav" for u in ("spkB-u2", *UTTS[:3], "spkA-u3")])
    text = ["spkA-u1 HI", "spkA-u2", "spkA-u3 OK", "spkB-u1 YES", "spkB-u2 NO", "spkC-u1 EXTRA"]
    write(data_dir, "text", text)
    utt2spk = [f"{u} {u[:4]}" for u in ("spkA-u1", "spkA-u1", "spkA-u2", "spkA-u3")]
    write(data_dir, "utt2spk", utt2spk + ["spkB-u1 spkB", "spkB-u2 spkB", "spkC-u1 spkC"])
    write(data_dir, "spk2utt", ["spkA spkA-u1"])
    durations = ["spkA-u1 1.0", "spkA-u1 2.0", "spkA-u2 1", "spkA-u3 1", "spkB-u1 1", "spkB-u2 1"]
    write(data_dir, "utt2dur", durations)
    original_text = (data_dir / "text").read_bytes()

    dropped = fix_data_dir(data_dir)

    # spkA-u1: conflicting durations; spkA-u2: empty transcript; spkC-u1: no audio, no duration.
    assert dropped == {"wav.scp": 2, "text": 3, "utt2spk": 4, "utt2dur": 3, "spk2utt": 0}
    kept = ["spkA-u3", "spkB-u1", "spkB-u2"]
    assert lines_of(data_dir / "wav.scp") == [f"{u} /x/{u}.wav" for u in kept]
    assert lines_of(data_dir / "text") == ["spkA-u3 OK", "spkB-u1 YES", "spkB-u2 NO"]
    assert lines_of(data_dir / "utt2spk") == ["spkA-u3 spkA", "spkB-u1 spkB", "spkB-u2 spkB"]
    assert lines_of(data_dir / "spk2utt") == ["spkA spkA-u3", "spkB spkB-u1 spkB-u2"]
    assert lines_of(data_dir / "utt2dur") == ["spkA-u3 1", "spkB-u1 1", "spkB-u2 1"]
    assert (data_dir / ".backup" / "text").read_bytes() == original_text
    assert validate_data_dir(data_dir, check_audio_exists=False) == []
    out = capsys.readouterr().out
    assert f"{data_dir}/text: dropped 3 of 6 lines" in out
    assert f"{data_dir}: kept 3 utterances" in out

    backups = sorted(p.name for p in (data_dir / ".backup").iterdir())
    assert fix_data_dir(data_dir, verbose=False) == dict.fromkeys(dropped, 0)
    assert sorted(p.name for p in (data_dir / ".backup").iterdir()) == backups

    replace_line(data_dir, "text", 1, "spkA-u3")
    assert fix_cli.main([str(data_dir)]) == 0
    assert (data_dir / ".backup" / "text").read_bytes() == original_text
    assert lines_of(data_dir / ".backup" / "text.~1~")[0] == "spkA-u3"
    assert lines_of(data_dir / "spk2utt") == ["spkB spkB-u1 spkB-u2"]


def test_fix_with_segments_keeps_referenced_recordings(data_dir):
    use_segments(data_dir)
    write(data_dir, "wav.scp", [*lines_of(data_dir / "wav.scp"), "recC /unused.wav"])
    dropped = fix_data_dir(data_dir, verbose=False)
    assert dropped["segments"] == 2 and dropped["wav.scp"] == 1
    assert lines_of(data_dir / "segments") == ["spkA-u1 recA 0.0 1.0", "spkB-u2 recB 0.5 -1"]
    assert [line.split()[0] for line in lines_of(data_dir / "wav.scp")] == ["recA", "recB"]
    assert lines_of(data_dir / "text") == ["spkA-u1 HELLO WORLD", "spkB-u2 NO"]


def test_fix_needs_utt2spk(data_dir):
    (data_dir / "utt2spk").unlink()
    with pytest.raises(DataDirError, match="utt2spk: missing"):
        fix_data_dir(data_dir)
