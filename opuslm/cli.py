"""The `opuslm` console command: `opuslm <name> ...` runs `python -m opuslm.bin.<name> ...`.

Subcommands are discovered from the modules in `opuslm.bin`, so there is exactly one
implementation of each step and nothing to keep in sync here.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import opuslm.bin


def subcommands() -> dict[str, str]:
    """Name -> first docstring line of every `opuslm.bin` module (read without importing it)."""
    found = {}
    for info in pkgutil.iter_modules(opuslm.bin.__path__):
        if info.name.startswith("_"):
            continue
        source = Path(opuslm.bin.__path__[0], f"{info.name}.py").read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(source)) or ""
        found[info.name] = doc.strip().splitlines()[0] if doc.strip() else ""
    return dict(sorted(found.items()))


def usage() -> str:
    commands = subcommands()
    width = max((len(n) for n in commands), default=0)
    lines = [
        "usage: opuslm <command> [options]   (same as: python -m opuslm.bin.<command> [options])",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {doc}" for name, doc in commands.items()]
    lines += ["", "Run 'opuslm <command> --help' for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in subcommands():
        print(f"opuslm: unknown command {name!r}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    opuslm.bin.started_as_step()  # no garbage collection while it imports (opuslm/bin/__init__.py)
    module = importlib.import_module(f"opuslm.bin.{name}")
    opuslm.bin.resume_collection()
    status = int(module.main(rest) or 0)
    opuslm.bin.step_finished()
    return status


if __name__ == "__main__":
    sys.exit(main())
