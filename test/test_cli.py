"""The `opuslm` console command maps one-to-one onto the opuslm.bin modules."""

import pkgutil
import subprocess
import sys

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
