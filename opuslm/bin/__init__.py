"""One module per recipe step, each runnable as `python -m opuslm.bin.<name>`.

Every module defines `main(argv: list[str] | None = None) -> int` and a one-line module
docstring, which `opuslm --help` shows.
"""
