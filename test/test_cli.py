"""The `opuslm` console command maps one-to-one onto the opuslm.bin modules, and both start a
step the same way (no garbage collection while it imports: opuslm/bin/__init__.py)."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import opuslm.bin
from opuslm import cli


def test_subcommands_are_the_bin_modules():
    modules = {
        m.name for m in pkgutil.iter_modules(opuslm.bin.__path__) if not m.name.startswith("_")
    }
    assert set(cli.subcommands()) == modules


def test_help_lists_subcommands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.subcommands():
        assert f"  {name}" in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["no_such_step"]) == 2
    assert "unknown command 'no_such_step'" in capsys.readouterr().err


def test_console_script_installed():
    exe = sys.executable.replace("python", "opuslm")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: opuslm <command>")


def test_every_step_ends_with_run_main():
    """`run` is what turns garbage collection back on in a step process (opuslm/bin/__init__.py)."""
    for info in pkgutil.iter_modules(opuslm.bin.__path__):
        path = Path(opuslm.bin.__path__[0], f"{info.name}.py")
        last = ast.parse(path.read_text(encoding="utf-8")).body[-1]
        assert ast.unparse(last) == "if __name__ == '__main__':\n    run(main)", path


def python(code: str) -> list[str]:
    """The words a fresh interpreter prints running `code`."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_a_step_process_collects_nothing_while_it_imports():
    # What `python -m opuslm.bin.<name>` sees: argv[0] is "-m" while the package is imported.
    words = python(
        "import sys; sys.argv = ['-m']\n"
        "import gc, opuslm.bin, opuslm.bin.score_text\n"
        "print(gc.isenabled(), gc.get_freeze_count())\n"
        "opuslm.bin.resume_collection()\n"
        "frozen = gc.get_freeze_count()\n"
        "print(gc.isenabled(), frozen > 0)\n"
        "with opuslm.bin.collection_paused():\n"
        "    print(gc.isenabled())\n"
        "    import opuslm.packing\n"
        "print(gc.isenabled(), gc.get_freeze_count() > frozen)\n"
        "garbage = [[] for _ in range(1000)]\n"
        "frozen = gc.get_freeze_count()\n"
        "opuslm.bin.step_finished()\n"
        "print(gc.get_freeze_count() > frozen)\n"
    )
    assert words == ["False", "0", "True", "True", "False", "True", "True", "True"]


def test_importing_a_step_elsewhere_leaves_collection_alone():
    words = python(
        "import gc, opuslm.bin, opuslm.bin.infer\n"
        "with opuslm.bin.collection_paused():\n"
        "    print(gc.isenabled())\n"
        "opuslm.bin.resume_collection()\n"
        "opuslm.bin.step_finished()\n"
        "print(gc.isenabled(), gc.get_freeze_count())\n"
    )
    assert words == ["True", "True", "0"]


def test_a_step_process_exits_with_the_status_of_main(tmp_path):
    missing = str(tmp_path / "no_such_dir")
    module = subprocess.run(
        [sys.executable, "-m", "opuslm.bin.validate_data_dir", missing],
        capture_output=True,
        text=True,
    )
    assert module.returncode == 1, module.stderr
    exe = sys.executable.replace("python", "opuslm")
    command = subprocess.run([exe, "validate_data_dir", missing], capture_output=True, text=True)
    assert command.returncode == 1, command.stderr
    assert command.stderr == module.stderr


def test_steps_that_run_no_model_start_without_torch():
    # torch and transformers cost seconds of every process's start: the data steps and the
    # pocketsphinx scoring steps never need them (the Hugging Face judges import them).
    words = python(
        "import sys\n"
        "import opuslm.bin.make_manifest, opuslm.bin.make_token_list, opuslm.bin.score_asr\n"
        "import opuslm.bin.score_tts, opuslm.bin.copy_synthesis, opuslm.eval.tts_scoring\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
        "import opuslm.eval.hf_judges\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    assert words == ["False", "False", "True", "True"]
