#!/usr/bin/env bash
# Dump the audio of one wav.scp part as <fs> Hz, 16-bit, mono wav files, with sox (stage 2).
#
# usage: format_wav_scp.sh [--fs 16000] [--segments FILE] <wav.scp> <wav_dir> <out_prefix>
#   reads    <wav.scp>  lines `uttid path` or `uttid cmd |` (the command writes a wav to stdout);
#                       with --segments, wav.scp lists recordings and FILE holds the
#                       `uttid recording start end` lines to cut (end -1 = to the end)
#   writes   <wav_dir>/<uttid>.wav, <out_prefix>.wav.scp and <out_prefix>.utt2dur (seconds)
# A wav already in <wav_dir> is kept (re-runs only convert what is missing). An utterance sox
# cannot convert is reported on stderr and left out; the stage drops it from the data dir.
set -euo pipefail
# Two short sox processes per utterance: path.sh's tcmalloc preload (for the Python processes)
# would add ~3 ms of start-up to each. A preload of the user's own stays.
if [ -n "${OPUSLM_TCMALLOC_LIB:-}" ] && [ "${LD_PRELOAD:-}" = "${OPUSLM_TCMALLOC_LIB}" ]; then
  unset LD_PRELOAD
fi

fs=16000
segments=""
while [ $# -gt 3 ]; do
  case "$1" in
    --fs) fs=$2; shift 2 ;;
    --segments) segments=$2; shift 2 ;;
    *) echo "format_wav_scp.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -eq 3 ] || { echo "usage: format_wav_scp.sh [--fs N] [--segments F] <wav.scp> <wav_dir> <out_prefix>" >&2; exit 2; }
wav_scp=$1
wav_dir=$2
out_prefix=$3
mkdir -p "${wav_dir}"
wav_dir=$(cd "${wav_dir}" && pwd)

# convert <uttid> <rxfilename> [start end]: one utterance to <wav_dir>/<uttid>.wav.
convert() {
  local uttid=$1 source=$2 out="${wav_dir}/$1.wav" trim=()
  if [ $# -eq 4 ]; then
    trim=(trim "$3")
    [ "$4" = "-1" ] || trim+=("=$4")
  fi
  if [ ! -s "${out}" ]; then
    local tmp="${wav_dir}/.${uttid}.tmp.wav"
    if [[ "${source}" == *"|" ]]; then
      bash -c "${source%|}" </dev/null | sox -q -t wav - -r "${fs}" -b 16 -c 1 -e signed-integer "${tmp}" \
        ${trim[@]+"${trim[@]}"} || { rm -f "${tmp}"; return 1; }
    else
      sox -q "${source}" -r "${fs}" -b 16 -c 1 -e signed-integer "${tmp}" \
        ${trim[@]+"${trim[@]}"} </dev/null || { rm -f "${tmp}"; return 1; }
    fi
    mv "${tmp}" "${out}"
  fi
  printf '%s %s\n' "${uttid}" "${out}" >&3
  printf '%s %s\n' "${uttid}" "$(soxi -D "${out}" </dev/null)" >&4
}

failed=0
exec 3>"${out_prefix}.wav.scp.tmp" 4>"${out_prefix}.utt2dur.tmp"
if [ -z "${segments}" ]; then
  while read -r uttid source; do
    [ -n "${uttid}" ] || continue
    convert "${uttid}" "${source}" \
      || { echo "format_wav_scp.sh: ${uttid}: sox could not convert ${source}" >&2; failed=$((failed + 1)); }
  done < "${wav_scp}"
else
  declare -A recordings
  while read -r recording source; do
    recordings[${recording}]=${source}
  done < "${wav_scp}"
  while read -r uttid recording start end; do
    [ -n "${uttid}" ] || continue
    source=${recordings[${recording}]:-}
    if [ -z "${source}" ] || ! convert "${uttid}" "${source}" "${start}" "${end}"; then
      echo "format_wav_scp.sh: ${uttid}: cannot cut ${start}-${end} from recording ${recording}" >&2
      failed=$((failed + 1))
    fi
  done < "${segments}"
fi
exec 3>&- 4>&-
mv "${out_prefix}.wav.scp.tmp" "${out_prefix}.wav.scp"
mv "${out_prefix}.utt2dur.tmp" "${out_prefix}.utt2dur"
echo "format_wav_scp.sh: ${failed} utterances failed" >&2
