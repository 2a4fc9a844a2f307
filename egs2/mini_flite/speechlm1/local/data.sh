#!/usr/bin/env bash
# Stage 1 of mini_flite: synthesise a multi-speaker English corpus with Debian's flite voices.
#   writes data/{train,valid,test}/{wav.scp,text,utt2spk,spk2utt,utt2dur} (speech, text-disjoint)
#          data/{text_train,text_test}/{text,utt2spk,spk2utt}           (text only: textlm, perplexity)
#          <wav_dir>/<voice>/<uttid>.wav                                 (kept between runs)
# The sentence cleaning, splitting and synthesis are in opuslm/bin/prepare_flite_corpus.py.
set -euo pipefail

log() {
  echo "$(date '+%Y-%m-%dT%H:%M:%S') (local/data.sh:${BASH_LINENO[0]}) $*" >&2
}

# Corpus size (the demo preset's; run.sh passes each preset's sizes).
num_train=4000
num_valid=100
num_test=100
num_text_test=500
num_text_train=-1     # -1: every sentence the speech and held-out sets do not use
voices="slt rms awb kal16"
text_source=""        # default: ${FORTUNES} from db.sh
wav_dir=downloads/flite
seed=0
nj=$(nproc)

. ./path.sh
. ./db.sh
. utils/parse_options.sh

command -v flite >/dev/null 2>&1 ||
  { echo "local/data.sh: flite not found: run 'make install' or 'apt-get install flite'" >&2; exit 1; }
text_source=${text_source:-${FORTUNES}}
[ -e "${text_source}" ] || {
  echo "local/data.sh: text source '${text_source}' not found: set FORTUNES in db.sh," \
    "pass --text_source FILE, or run 'make install' for Debian's fortunes" >&2
  exit 1
}

log "synthesising ${num_train}/${num_valid}/${num_test} train/valid/test utterances" \
  "(voices: ${voices}) from ${text_source} into ${wav_dir}"
# shellcheck disable=SC2086  # voices is a word list
python -m opuslm.bin.prepare_flite_corpus --output_dir data --wav_dir "${wav_dir}" \
  --text_source "${text_source}" --voices ${voices} --seed "${seed}" --nj "${nj}" \
  --num_train "${num_train}" --num_valid "${num_valid}" --num_test "${num_test}" \
  --num_text_test "${num_text_test}" --num_text_train "${num_text_train}"

for set in train valid test; do
  utils/validate_data_dir.sh "data/${set}"
done
for set in text_train text_test; do
  utils/validate_data_dir.sh --require text,utt2spk "data/${set}"
done
log "done: data/{train,valid,test,text_train,text_test}"
