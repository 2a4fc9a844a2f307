#!/usr/bin/env bash
# Convert utt2spk (`utt spk` lines) into spk2utt (`spk utt1 utt2 ...`).
set -euo pipefail

usage="Usage: $0 [<utt2spk>] > <spk2utt>
Speakers in C-locale order, each with its utterances in utt2spk order."
case "${1:-}" in
  --help | -h)
    echo "$usage"
    exit 0
    ;;
  -?*)
    echo "$usage" >&2
    exit 1
    ;;
esac
if (($# > 1)); then
  echo "$usage" >&2
  exit 1
fi
awk '
  NF != 2 { printf "%s: line %d: expected \"utt spk\", got \"%s\"\n", FILENAME, FNR, $0 > "/dev/stderr"; bad = 1; exit 1 }
  !($2 in utts) { utts[$2] = $2 }
  { utts[$2] = utts[$2] " " $1 }
  END { if (!bad) for (spk in utts) print utts[spk] }
' "${1:--}" | LC_ALL=C sort -k1,1
