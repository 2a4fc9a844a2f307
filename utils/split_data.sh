#!/usr/bin/env bash
# Split a data directory into N parts, <data>/split<N>/1 .. <data>/split<N>/N, for parallel jobs.
set -euo pipefail

per_utt=false
help_message="Usage: $0 [--per-utt true] <data> <num-parts>
Creates <data>/split<N>/<1..N>/, each a data directory with every table filtered to its part.
A speaker's utterances stay in one part unless --per-utt true (then parts are balanced by
utterance count). Any previous <data>/split<N> is replaced."
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if (($# != 2)) || [[ ! "$2" =~ ^[1-9][0-9]*$ ]]; then
  printf '%s\n' "$help_message" >&2
  exit 1
fi
data=$1
num_parts=$2
utils=$(dirname "${BASH_SOURCE[0]}")
[[ -f "$data/utt2spk" ]] || { echo "$0: no such file: $data/utt2spk" >&2; exit 1; }

# Built next to the final place, then renamed, so a failed split never leaves a partial one.
split_dir="$data/split$num_parts"
building=$(mktemp -d "$data/.split$num_parts.XXXXXX")
trap 'rm -rf "$building"' EXIT
lists=()
for ((part = 1; part <= num_parts; part++)); do
  lists+=("$building/$part.utts")
done
if [[ "$per_utt" == true ]]; then
  "$utils/split_scp.sh" "$data/utt2spk" "${lists[@]}"
else
  "$utils/split_scp.sh" --utt2spk "$data/utt2spk" "$data/utt2spk" "${lists[@]}"
fi
for ((part = 1; part <= num_parts; part++)); do
  if ! messages=$("$utils/subset_data_dir.sh" --utt-list "$building/$part.utts" "$data" \
    "$building/$part" 2>&1); then
    echo "$messages" >&2
    exit 1
  fi
  rm "$building/$part.utts"
done
rm -rf "$split_dir"
mv "$building" "$split_dir"
echo "$0: split $data into $num_parts parts in $split_dir" >&2
