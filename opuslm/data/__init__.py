"""Data handling: Kaldi-style data directories, task manifests, datasets and batch samplers."""

from opuslm.data.datadir import (
    DataDirError,
    Problem,
    fix_data_dir,
    read_table,
    validate_data_dir,
    write_table,
)

__all__ = [
    "DataDirError",
    "Problem",
    "fix_data_dir",
    "read_table",
    "validate_data_dir",
    "write_table",
]
