#!/usr/bin/env bash
# Copy a subset of the utterances of a data directory, with every table filtered to match.
set -euo pipefail

first=""
last=""
utt_list=""
spk_list=""
seed=0
help_message="Usage: $0 [options] <src-data> [<num-utts>] <dest-data>
Selects utterances of <src-data> (exactly one way):
  --first <n>          the first n (in sorted order)
  --last <n>           the last n
  --utt-list <file>    those whose id is the first field of a line of <file>
  --spk-list <file>    all those of the speakers listed in <file>
  <num-utts>           n at random, reproducibly for a given --seed <s> (default 0)
Writes to <dest-data> each table of <src-data> filtered: utterance tables by utterance, wav.scp
and reco2* by the recordings of the kept segments (when there are segments), spk2gender by the
kept speakers; spk2utt is rebuilt from utt2spk."
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

fail() {
  echo "$0: $1" >&2
  exit 1
}
case $# in
  2) src=$1 num_random="" dest=$2 ;;
  3) src=$1 num_random=$2 dest=$3 ;;
  *)
    printf '%s\n' "$help_message" >&2
    exit 1
    ;;
esac
utils=$(dirname "${BASH_SOURCE[0]}")
[[ -f "$src/utt2spk" ]] || fail "no such file: $src/utt2spk"
selections=0
for option in first last utt_list spk_list num_random; do
  [[ -z "${!option}" ]] || selections=$((selections + 1))
done
((selections == 1)) || fail "choose exactly one of --first, --last, --utt-list, --spk-list, <num-utts>"
[[ "$seed" =~ ^[0-9]+$ ]] || fail "--seed must be a non-negative integer"
num_utts=$(wc -l <"$src/utt2spk")
for option in first last num_random; do
  value=${!option}
  if [[ -n "$value" ]] && { [[ ! "$value" =~ ^[1-9][0-9]*$ ]] || ((value > num_utts)); }; then
    fail "asked for '$value' utterances; $src has $num_utts"
  fi
done
mkdir -p "$dest"
[[ "$(cd "$src" && pwd -P)" != "$(cd "$dest" && pwd -P)" ]] || fail "<dest-data> is <src-data>"

ids=$(mktemp)
trap 'rm -f "$ids"' EXIT
if [[ -n "$first" ]]; then
  head -n "$first" "$src/utt2spk" >"$ids"
elif [[ -n "$last" ]]; then
  tail -n "$last" "$src/utt2spk" >"$ids"
elif [[ -n "$utt_list" ]]; then
  cp "$utt_list" "$ids"
elif [[ -n "$spk_list" ]]; then
  "$utils/filter_scp.sh" -f 2 "$spk_list" "$src/utt2spk" >"$ids"
else
  # awk's generator treats seeds 0 and 1 alike, hence the + 1; the choice depends on the awk.
  awk -v seed="$seed" 'BEGIN { srand(seed + 1) } { printf "%.17f %s\n", rand(), $1 }' \
    "$src/utt2spk" \
    | LC_ALL=C sort -k1,1 | awk -v n="$num_random" 'NR <= n { print $2 }' >"$ids"
fi

# filter_into <id-list> <table name>...: each existing table of src, filtered, into dest.
filter_into() {
  local list=$1 name
  shift
  for name in "$@"; do
    if [[ -f "$src/$name" ]]; then
      "$utils/filter_scp.sh" "$list" "$src/$name" >"$dest/$name"
    fi
  done
}

# The table set of opuslm/data/datadir.py, with the same roles.
utterance_tables=(utt2spk text segments feats.scp)
for path in "$src"/utt2*; do
  if [[ -f "$path" && "$path" != "$src/utt2spk" ]]; then
    utterance_tables+=("$(basename "$path")")
  fi
done
recording_tables=(reco2dur reco2file_and_channel)
if [[ -f "$src/segments" ]]; then
  recording_tables+=(wav.scp)
else
  utterance_tables+=(wav.scp)
fi
filter_into "$ids" "${utterance_tables[@]}"
if [[ -f "$src/segments" ]]; then
  awk '{ print $2 }' "$dest/segments" >"$ids"
  filter_into "$ids" "${recording_tables[@]}"
fi
awk '{ print $2 }' "$dest/utt2spk" >"$ids"
filter_into "$ids" spk2gender
"$utils/utt2spk_to_spk2utt.sh" "$dest/utt2spk" >"$dest/spk2utt"
echo "$0: kept $(wc -l <"$dest/utt2spk") of $num_utts utterances in $dest" >&2
