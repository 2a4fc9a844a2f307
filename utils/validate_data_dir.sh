#!/usr/bin/env bash
# Check a data directory; a thin wrapper, the rules live in opuslm/data/datadir.py.
set -euo pipefail

if (($# == 0)); then
  echo "Usage: $0 [--no_audio_check] [--require <file,file,...>] <data-dir>" >&2
  echo "Prints every problem as 'file:line: message' and exits 1 if there is any." >&2
  echo "Python: \$OPUSLM_PYTHON, else python3 (see '$0 --help' for all options)." >&2
  exit 1
fi
# The checkout's opuslm is importable even when the package is not installed.
repo=$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${OPUSLM_PYTHON:-python3}" -m opuslm.bin.validate_data_dir "$@"
