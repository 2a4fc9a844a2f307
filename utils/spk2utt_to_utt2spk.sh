#!/usr/bin/env bash
# Convert spk2utt (`spk utt1 utt2 ...`) into utt2spk (`utt spk`), sorted by utterance id.
set -euo pipefail

usage="Usage: $0 [<spk2utt>] > <utt2spk>
One line per utterance, sorted by utterance id."
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
awk '{ for (i = 2; i <= NF; i++) print $i, $1 }' "${1:--}" | LC_ALL=C sort -k1,1
