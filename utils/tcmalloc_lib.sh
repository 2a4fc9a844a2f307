#!/usr/bin/env bash
# Print the path of the tcmalloc library to preload (Debian: libtcmalloc-minimal4); exit 1 if none
# is installed. Used by the recipes' path.sh, `make install` and benchmarks/bench_malloc.sh.
set -euo pipefail
if [ $# -gt 0 ]; then
  echo "Usage: $0  (prints the tcmalloc library's path; exit status 1 if it is not installed)"
  [ "$1" = --help ] && exit 0
  exit 2
fi
for lib in /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4; do
  if [ -e "${lib}" ]; then
    echo "${lib}"
    exit 0
  fi
done
exit 1
