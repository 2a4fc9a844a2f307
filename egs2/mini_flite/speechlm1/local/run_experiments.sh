#!/usr/bin/env bash
# Issue 8 experiments (EXPERIMENTS.md): train stage-7 variants side by side from the same stage-6
# base LM on the recipe's token dumps, then transcribe the test set greedily from its token dumps
# (opuslm.bin.decode_asr_dumps: no audio, no codec, so it also runs on a GPU machine without the
# audio libraries). Rows of conf/exp/experiments.tsv: name, config, overrides.
#   local/run_experiments.sh [--jobs N] [--base_lm DIR] [--python PY] [--out DIR]
#                            [--decode_args "decode_asr_dumps options"] name...
# --decode_args: e.g. the demo's joint CTC/LM beam, "--ctc_weight 0.7 --beam_size 8 --max_len_ratio
# 0.9" (default: greedy, the LM alone, as the first sweeps decoded).
# Needs stages 1-6 of the demo preset (dumps, manifests, token list, text tokenizer, base LM).
# Scoring (needs jiwer): local/experiments_table.py --score.
set -euo pipefail

jobs=2
base_lm=exp/base_lm_demo
python=${PYTHON:-python3}
out=exp/experiments
decode_args=""
table=${EXPERIMENTS_TABLE:-conf/exp/experiments.tsv}
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs=$2; shift 2 ;;
    --base_lm) base_lm=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --decode_args) decode_args=$2; shift 2 ;;
    --*) echo "$0: unknown option $1" >&2; exit 1 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--jobs N] [--base_lm DIR] name... (names: ${table})" >&2; exit 1; }
for f in exp/manifests/asr_test/data.json exp/tokenizers/text; do
  [ -e "${f}" ] || { echo "$0: missing ${f}: run ./run.sh --stop_stage 6 first" >&2; exit 1; }
done

run_one() {
  local name=$1 config overrides dir init
  IFS=$'\t' read -r _ config overrides < <(awk -F'\t' -v n="${name}" '$1 == n' "${table}")
  [ -n "${config}" ] || { echo "$0: no experiment ${name} in ${table}" >&2; return 1; }
  dir=${out}/${name}
  mkdir -p "${dir}"
  init=(--init_from "${base_lm}")
  if [[ " ${overrides} " == *" --init_from none "* ]]; then
    init=()
    overrides=${overrides//--init_from none/}
  fi
  local started=${SECONDS}
  # shellcheck disable=SC2086  # overrides are meant to be word-split
  "${python}" -m opuslm.bin.train --config "${config}" --output_dir "${dir}" --resume \
    ${init[@]+"${init[@]}"} train.progress_bar=false ${overrides} >"${dir}/train.log" 2>&1
  echo "$((SECONDS - started))" >"${dir}/train_seconds"
  # shellcheck disable=SC2086  # decode_args are meant to be word-split
  "${python}" -m opuslm.bin.decode_asr_dumps --checkpoint "${dir}" \
    --manifest exp/manifests/asr_test/data.json --text_tokenizer_dir exp/tokenizers/text \
    --output "${dir}/asr_test/text" --batch_size 50 ${decode_args} >"${dir}/decode.log" 2>&1
  echo "[$(date +%T)] ${name}: trained in $(cat "${dir}/train_seconds") s, decoded"
}

pids=()
for name in "$@"; do
  while [ "$(jobs -rp | wc -l)" -ge "${jobs}" ]; do sleep 2; done
  run_one "${name}" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "${pid}" || status=1; done
exit ${status}
