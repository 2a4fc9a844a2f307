#!/usr/bin/env bash
# Kaldi-style option parsing. Source it after setting every option's default (and help_message):
#
#   nj=4
#   max_frames=1000
#   help_message="Usage: $0 [options] <data-dir>"
#   . utils/parse_options.sh
#
# `--max-frames 500`, `--max_frames 500` and `--max-frames=500` set the existing variable
# max_frames; an option without such a variable is an error, and so is a value other than
# true/false for a variable that holds true or false. `--help` / `-h` prints $help_message and
# exits 0; `--` ends the options. Parsed options are removed from the caller's "$@".
#
# No `set -euo pipefail` here on purpose: a sourced file would change the caller's shell options;
# the code works under them.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "Usage: . utils/parse_options.sh   (source it from a script; see the header)" >&2
  exit 1
fi

while (($# > 0)); do
  case "$1" in
    --help | -h)
      printf '%s\n' "${help_message:-$0: no help message}"
      exit 0
      ;;
    --)
      shift
      break
      ;;
    --?*)
      _parse_options_option=${1#--}
      if [[ "$_parse_options_option" == *=* ]]; then
        _parse_options_value=${_parse_options_option#*=}
        _parse_options_option=${_parse_options_option%%=*}
        shift
      elif (($# >= 2)); then
        _parse_options_value=$2
        shift 2
      else
        echo "$0: option --$_parse_options_option needs a value" >&2
        exit 1
      fi
      _parse_options_name=${_parse_options_option//-/_}
      if [[ ! "$_parse_options_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] \
        || [[ -z "${!_parse_options_name+set}" ]]; then
        echo "$0: unknown option --$_parse_options_option (see $0 --help)" >&2
        exit 1
      fi
      case "${!_parse_options_name}" in
        true | false)
          if [[ "$_parse_options_value" != true && "$_parse_options_value" != false ]]; then
            echo "$0: option --$_parse_options_option takes true or false," \
              "not '$_parse_options_value'" >&2
            exit 1
          fi
          ;;
      esac
      printf -v "$_parse_options_name" '%s' "$_parse_options_value"
      ;;
    *)
      break
      ;;
  esac
done
unset _parse_options_option _parse_options_value _parse_options_name
