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
# `--config FILE` (Kaldi's, repeatable) reads option values from FILE: `name=value` lines, `#`
# comments, a value optionally in matching single or double quotes. The file is parsed, not
# sourced, so nothing in it runs. Config files apply in order before every command-line option,
# wherever --config stands, so the command line wins; a script with its own `config` variable
# keeps `--config` as that option instead.
#
# No `set -euo pipefail` here on purpose: a sourced file would change the caller's shell options;
# the code works under them.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "Usage: . utils/parse_options.sh   (source it from a script; see the header)" >&2
  exit 1
fi

# Sets option $1 (its spelling on the command line) to $2, after the checks every option gets.
# Locals carry a _po_ prefix: a local named like an option would hide the caller's variable.
_parse_options_set() {
  local _po_name=${1//-/_}
  if [[ ! "$_po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [[ -z "${!_po_name+set}" ]]; then
    echo "$0: unknown option --$1 (see $0 --help)" >&2
    exit 1
  fi
  case "${!_po_name}" in
    true | false)
      if [[ "$2" != true && "$2" != false ]]; then
        echo "$0: option --$1 takes true or false, not '$2'" >&2
        exit 1
      fi
      ;;
  esac
  printf -v "$_po_name" '%s' "$2"
}

# Reads one --config file: name=value lines (see the header).
_parse_options_config() {
  local _po_file=$1 _po_line _po_number=0 _po_key _po_value
  if [[ ! -f "$_po_file" || ! -r "$_po_file" ]]; then
    echo "$0: --config $_po_file: no such readable file" >&2
    exit 1
  fi
  while IFS= read -r _po_line || [[ -n "$_po_line" ]]; do
    _po_number=$((_po_number + 1))
    _po_line="${_po_line#"${_po_line%%[![:space:]]*}"}"  # leading blanks
    _po_line="${_po_line%"${_po_line##*[![:space:]]}"}"  # trailing blanks
    [[ -z "$_po_line" || "$_po_line" == \#* ]] && continue
    if [[ ! "$_po_line" =~ ^(--)?([A-Za-z_][A-Za-z0-9_-]*)=(.*)$ ]]; then
      echo "$0: $_po_file:$_po_number: expected name=value, got '$_po_line'" >&2
      exit 1
    fi
    _po_key=${BASH_REMATCH[2]} _po_value=${BASH_REMATCH[3]}
    if [[ "$_po_value" =~ ^\'(.*)\'$ || "$_po_value" =~ ^\"(.*)\"$ ]]; then
      _po_value=${BASH_REMATCH[1]}
    fi
    _parse_options_set "$_po_key" "$_po_value"
  done <"$_po_file"
}

# The loop only collects: --config files are applied first, then the other options in order,
# so the command line wins over the files wherever --config stands.
_parse_options_files=()
_parse_options_given=()
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
      if [[ "$_parse_options_option" == config && -z "${config+set}" ]]; then
        _parse_options_files+=("$_parse_options_value")
      else
        _parse_options_given+=("$_parse_options_option" "$_parse_options_value")
      fi
      ;;
    *)
      break
      ;;
  esac
done
for _parse_options_value in ${_parse_options_files[@]+"${_parse_options_files[@]}"}; do
  _parse_options_config "$_parse_options_value"
done
for ((_parse_options_i = 0; _parse_options_i < ${#_parse_options_given[@]}; _parse_options_i += 2)); do
  _parse_options_set "${_parse_options_given[@]:_parse_options_i:2}"
done
unset _parse_options_option _parse_options_value _parse_options_files _parse_options_given \
  _parse_options_i
unset -f _parse_options_set _parse_options_config
