#!/usr/bin/env bash
# Stage-7 training steps of the demo preset under glibc's malloc, jemalloc and tcmalloc
# (LD_PRELOAD), one after the other on free cores, same batches (same seed, no curriculum: the
# mixed ASR/TTS/text batches), twice each: positions/s, wall time, user/sys CPU time.
#   benchmarks/bench_malloc.sh <recipe dir of a finished `make demo`> [steps (default 80)]
# Needs the Debian packages libtcmalloc-minimal4 and libjemalloc2.
set -euo pipefail
recipe=$(cd "$1" && pwd)
steps=${2:-80}
out=$(mktemp -d)
cd "${recipe}"
OPUSLM_TCMALLOC=0 . ./path.sh
for round in 1 2; do
  for alloc in glibc jemalloc tcmalloc; do
    case ${alloc} in
      glibc) preload="" ;;
      jemalloc) preload=$(ls /usr/lib/*-linux-gnu/libjemalloc.so.2) ;;
      tcmalloc) preload=$(utils/tcmalloc_lib.sh) ;;
    esac
    rm -rf "${out:?}/${alloc}"
    LD_PRELOAD=${preload} /usr/bin/time -f "${alloc} round ${round}: wall %e s, user %U s, sys %S s" \
      python -m opuslm.bin.train --config conf/demo/train.yaml --output_dir "${out}/${alloc}" \
      --init_from exp/base_lm_demo schedule.max_steps="${steps}" schedule.warmup_steps=5 \
      'data.curriculum=[]' train.valid_interval=100000 train.save_interval=100000 \
      train.progress_bar=false 2>&1 | grep -E "round|finished at" | sed 's/.*INFO opuslm.train: //'
  done
done
rm -rf "${out}"
