#!/usr/bin/env bash
# Keep (or with --exclude, drop) the lines of a table whose id is in an id list.
set -euo pipefail

usage="Usage: $0 [--exclude] [-f <field>] <id-list> [<table>] > <output>
Prints the lines of <table> (default: stdin), in their order, whose <field>-th whitespace-separated
field (default 1) is the first field of some line of <id-list>; --exclude prints the others."

exclude=0
field=1
fail() {
  echo "$0: $1" >&2
  echo "$usage" >&2
  exit 1
}
while (($# > 0)); do
  case "$1" in
    --exclude)
      exclude=1
      shift
      ;;
    -f | --field)
      (($# >= 2)) && [[ "$2" =~ ^[1-9][0-9]*$ ]] || fail "$1 needs a field number"
      field=$2
      shift 2
      ;;
    --help | -h)
      echo "$usage"
      exit 0
      ;;
    -?*) fail "unknown option $1" ;;
    *) break ;;
  esac
done
(($# == 1 || $# == 2)) || fail "expected an id list and at most one table"
[[ -r "$1" ]] || fail "cannot read id list: $1"

# The id list is read through ENVIRON so that no path is taken for an awk assignment or escape.
ID_LIST=$1 awk -v exclude="$exclude" -v field="$field" '
  BEGIN { while ((getline line < ENVIRON["ID_LIST"]) > 0) { split(line, f); if (f[1] != "") keep[f[1]] } }
  { if ((($field) in keep) != exclude) print }
' "${2:--}"
