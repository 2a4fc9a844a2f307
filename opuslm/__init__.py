"""opuslm: a recipe toolkit for OpusLM-style unified speech language models.

The heavy API object (`OpusLM`) is imported lazily so that `import opuslm` stays cheap for the
command-line tools that only need the data utilities.
"""

__version__ = "0.1.0"

__all__ = ["OpusLM", "__version__"]


def __getattr__(name: str):
    if name == "OpusLM":
        from opuslm.api import OpusLM

        return OpusLM
    raise AttributeError(f"module 'opuslm' has no attribute {name!r}")
