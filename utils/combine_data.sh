#!/usr/bin/env bash
# Combine data directories into one (utterance ids must be unique across the sources).
set -euo pipefail

help_message="Usage: $0 <dest-data> <src-data1> [<src-data2> ...]
Concatenates and sorts each table present in every source (a table missing from some sources is
skipped with a warning) and rebuilds spk2utt. An utterance id in two sources is an error naming
both; recordings or speakers shared by sources must have identical lines."
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if (($# < 2)); then
  printf '%s\n' "$help_message" >&2
  exit 1
fi
dest=$1
shift
utils=$(dirname "${BASH_SOURCE[0]}")
fail() {
  echo "$0: $1" >&2
  exit 1
}
with_segments=0
for src in "$@"; do
  [[ -f "$src/utt2spk" ]] || fail "no such file: $src/utt2spk"
  [[ ! -f "$src/segments" ]] || with_segments=$((with_segments + 1))
done
if ((with_segments > 0 && with_segments < $#)); then
  fail "some sources have segments and others not (their wav.scp ids would mix recordings and utterances)"
fi

# The table set of opuslm/data/datadir.py (spk2utt is rebuilt instead).
tables=(utt2spk wav.scp segments text feats.scp reco2dur reco2file_and_channel spk2gender)
for src in "$@"; do
  for path in "$src"/utt2*; do
    if [[ -f "$path" ]]; then
      tables+=("$(basename "$path")")
    fi
  done
done
mkdir -p "$dest"
for src in "$@"; do
  [[ "$(cd "$src" && pwd -P)" != "$(cd "$dest" && pwd -P)" ]] || fail "<dest-data> is also a source: $src"
done
combined=$(mktemp "$dest/.combine.XXXXXX")
trap 'rm -f "$combined"' EXIT
sources=$(printf '%s\n' "$@")
declare -A done_tables=()
for name in "${tables[@]}"; do
  [[ -z "${done_tables[$name]:-}" ]] || continue
  done_tables[$name]=1
  missing=()
  for src in "$@"; do
    [[ -f "$src/$name" ]] || missing+=("$src")
  done
  if ((${#missing[@]} == $#)); then
    continue
  elif ((${#missing[@]} > 0)); then
    echo "$0: warning: skipping $name, missing from: ${missing[*]}" >&2
    continue
  fi
  # An id seen in an earlier source: an error for utterances (utt2spk is combined first), a
  # repeat to drop for an identical recording or speaker line, an error otherwise.
  SOURCES=$sources TABLE=$name awk '
    BEGIN {
      num_sources = split(ENVIRON["SOURCES"], sources, "\n")
      for (i = 1; i <= num_sources; i++) {
        file = sources[i] "/" ENVIRON["TABLE"]
        while ((getline line < file) > 0) {
          split(line, fields)
          id = fields[1]
          if (!(id in source)) { source[id] = sources[i]; first[id] = line; print line; continue }
          if (ENVIRON["TABLE"] == "utt2spk") what = "utterance \047" id "\047 is in both"
          else if (line != first[id]) what = ENVIRON["TABLE"] ": \047" id "\047 differs between"
          else continue
          print what " \047" source[id] "\047 and \047" sources[i] "\047" > "/dev/stderr"
          exit 1
        }
      }
    }' | LC_ALL=C sort -k1,1 >"$combined" || fail "cannot combine $name"
  mv "$combined" "$dest/$name"
done
"$utils/utt2spk_to_spk2utt.sh" "$dest/utt2spk" >"$dest/spk2utt"
echo "$0: combined $(wc -l <"$dest/utt2spk") utterances from $# directories into $dest" >&2
