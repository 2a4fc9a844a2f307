#!/usr/bin/env bash
# Make a data directory consistent; a thin wrapper, the rules live in opuslm/data/datadir.py.
set -euo pipefail

if (($# == 0)); then
  echo "Usage: $0 <data-dir>" >&2
  echo "Keeps the utterances valid in every table, sorts, rebuilds spk2utt; rewritten files are" >&2
  echo "first copied to <data-dir>/.backup/. Python: \$OPUSLM_PYTHON, else python3." >&2
  exit 1
fi
# The checkout's opuslm is importable even when the package is not installed.
repo=$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${OPUSLM_PYTHON:-python3}" -m opuslm.bin.fix_data_dir "$@"
