#!/usr/bin/env bash
# Split a table into N contiguous parts of nearly equal size, like Kaldi's split_scp.pl.
set -euo pipefail

utt2spk=""
help_message="Usage: $0 [--utt2spk <utt2spk>] <table> <out1> <out2> ... <outN>
Writes consecutive lines of <table> to each output, in order. Without --utt2spk, part k gets
lines floor((k-1)*L/N)+1 .. floor(k*L/N) rounded as Kaldi does (the first L mod N parts get one
more line). With --utt2spk, a speaker's utterances (which must be consecutive in <table>) never
span two parts and the parts are balanced by line count. No output is ever empty: fewer lines
(or speakers) than outputs is an error."
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if (($# < 2)); then
  printf '%s\n' "$help_message" >&2
  exit 1
fi
table=$1
shift
[[ -f "$table" ]] || { echo "$0: no such file: $table" >&2; exit 1; }
[[ -z "$utt2spk" || -f "$utt2spk" ]] || { echo "$0: no such file: $utt2spk" >&2; exit 1; }
for output in "$@"; do
  mkdir -p "$(dirname "$output")"
done

# Lines are grouped (one group per speaker, or per line), and group g starting after s lines goes
# to part floor(s*N/L), nudged so that parts stay in order and none is left empty.
outputs=$(printf '%s\n' "$@")
OUTPUTS=$outputs UTT2SPK=$utt2spk TABLE=$table awk '
  BEGIN {
    num_parts = split(ENVIRON["OUTPUTS"], outputs, "\n")
    by_speaker = ENVIRON["UTT2SPK"] != ""
    if (by_speaker) while ((getline line < ENVIRON["UTT2SPK"]) > 0) { split(line, f); speaker[f[1]] = f[2] }
  }
  function fail(message) { print ENVIRON["TABLE"] ": " message > "/dev/stderr"; failed = 1; exit 1 }
  NF == 0 { fail("line " NR " is empty") }
  {
    group = $1
    if (by_speaker) {
      if (!($1 in speaker)) fail("line " NR ": utterance " $1 " is not in utt2spk")
      group = speaker[$1]
    }
    if (NR == 1 || group != previous) {
      if (group in seen) fail("line " NR ": the utterances of speaker " group " are not consecutive (sort the data directory)")
      seen[group]
      num_groups++
      group_start[num_groups] = NR - 1
    }
    group_size[num_groups]++
    lines[NR] = $0
    previous = group
  }
  END {
    if (failed) exit 1
    what = by_speaker ? "speakers" : "lines"
    if (num_groups < num_parts) fail("cannot split " num_groups " " what " into " num_parts " parts")
    line = 0
    part = 1
    for (g = 1; g <= num_groups; g++) {
      wanted = int(group_start[g] * num_parts / NR) + 1
      lowest = num_parts - num_groups + g
      if (wanted < lowest) wanted = lowest
      if (wanted > part + 1) wanted = part + 1
      if (wanted > part) {
        close(outputs[part])
        part = wanted
      }
      for (i = 0; i < group_size[g]; i++) print lines[++line] > outputs[part]
    }
  }
' "$table"
