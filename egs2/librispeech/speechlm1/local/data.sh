#!/usr/bin/env bash
# Stage 1 of librispeech: Kaldi data directories from the corpus in its standard layout.
#   reads  ${LIBRISPEECH}/<subset>/<speaker>/<chapter>/{*.flac,<speaker>-<chapter>.trans.txt}
#   writes data/<subset, '-' as '_'>/{wav.scp,text,utt2spk,spk2utt}   e.g. data/train_clean_100
#          data/train_960/ (the train-* subsets combined)
# Set LIBRISPEECH in db.sh to the directory that holds train-clean-100/, dev-clean/, ...
set -euo pipefail

log() {
  echo "$(date '+%Y-%m-%dT%H:%M:%S') (local/data.sh:${BASH_LINENO[0]}) $*" >&2
}

subsets="train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other"
combined_train_set=train_960  # the train-* subsets combined, when there are several

. ./path.sh
. ./db.sh
. utils/parse_options.sh

if [ -z "${LIBRISPEECH:-}" ]; then
  echo "local/data.sh: LIBRISPEECH is empty: set it in db.sh to the directory that holds train-clean-100/, dev-clean/, ..." >&2
  exit 1
fi
if [ ! -d "${LIBRISPEECH}" ] || [ -z "$(ls -A "${LIBRISPEECH}")" ]; then
  echo "local/data.sh: LIBRISPEECH=${LIBRISPEECH} is missing or empty: set it in db.sh to the directory that holds train-clean-100/, dev-clean/, ..." >&2
  exit 1
fi

log "preparing ${subsets} from ${LIBRISPEECH}"
# shellcheck disable=SC2086  # subsets is a word list
python -m opuslm.bin.prepare_librispeech --corpus_root "${LIBRISPEECH}" --output_dir data \
  --subsets ${subsets}
train_dirs=()
for subset in ${subsets}; do
  utils/validate_data_dir.sh "data/${subset//-/_}"
  [[ "${subset}" == train-* ]] && train_dirs+=("data/${subset//-/_}")
done
# The training subsets together: data/train_960 when all three are prepared.
if [ "${#train_dirs[@]}" -gt 1 ]; then
  utils/combine_data.sh "data/${combined_train_set}" "${train_dirs[@]}"
  utils/validate_data_dir.sh "data/${combined_train_set}"
fi
log "done"
