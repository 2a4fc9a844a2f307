"""One module per recipe step, each runnable as `python -m opuslm.bin.<name>`.

Every module defines `main(argv: list[str] | None = None) -> int` and a one-line module
docstring, which `opuslm --help` shows, and ends with `run(main)`.

A step that decodes or trains imports torch and transformers: about a million Python objects
that live as long as the process. Python's cyclic garbage collector would walk them again and
again while they load, and once more at exit, for nothing: a quarter to a third of a short
decoding or scoring step on a 2-core CPU (BENCHMARKS.md, "Start-up of a recipe step"). So a
process started as a step (`python -m opuslm.bin.<name>`, or the `opuslm` command) collects
nothing while it imports; then `gc.freeze` moves what was imported out of every later
collection, and collection resumes. Before exit (`run`, `step_finished`) everything is frozen
again: the process is about to free it all anyway. Importing these modules from other code
changes nothing.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

_step_process = False  # this process was started as a step
_paused_at_start = False  # and its collection is off until `resume_collection`


def started_as_step() -> None:
    """Collect no garbage until `resume_collection`: called before a step's imports, by this
    package under `python -m` and by a launcher that imports the step itself (`opuslm`)."""
    global _step_process, _paused_at_start
    _step_process = True
    if gc.isenabled():
        gc.disable()
        _paused_at_start = True


# Python sets argv[0] to "-m" while it finds the module of `python -m opuslm.bin.<name>`, that
# is, while it imports this package, before the step's own imports.
if sys.argv[:1] == ["-m"]:
    started_as_step()


def _freeze_and_collect() -> None:
    """What is in memory now stays for the process's life: out of every later collection."""
    gc.freeze()
    gc.enable()


def resume_collection() -> None:
    """Freeze what a step process has imported so far, then collect again (once)."""
    global _paused_at_start
    if _paused_at_start:
        _freeze_and_collect()
        _paused_at_start = False


@contextmanager
def collection_paused() -> Iterator[None]:
    """Around a step's late imports (those it makes only once it knows it needs them): no
    collection inside, then what was imported is frozen. Does nothing outside a step process."""
    if not (_step_process and gc.isenabled()):
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        _freeze_and_collect()


def step_finished() -> None:
    """Before a step process exits: what main built (a model, its tokenizers) is freed at exit
    anyway, so spare the exit's collection the walk over it."""
    if _step_process:
        gc.freeze()


def run(main: Callable[[], int | None]) -> NoReturn:
    """A step's entry point: resume collection (see the module docstring), exit with main()."""
    resume_collection()
    status = main()
    step_finished()
    sys.exit(status)
