#!/usr/bin/env bash
# Make a new recipe directory wired to this template.
#   egs2/TEMPLATE/speechlm1/setup.sh egs2/<corpus>/speechlm1
# Creates links speechlm.sh -> the template's and utils -> the project's, copies of path.sh,
# cmd.sh, db.sh and conf/ to adapt, a run.sh that calls speechlm.sh, and a local/data.sh stub that
# says what to write. Links are relative, so the project can move as a whole.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 <new_recipe_dir>   e.g. $0 egs2/my_corpus/speechlm1" >&2
  exit 2
fi
target=$1
template=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
utils=$(readlink -f "${template}/../../../utils")

if [ -e "${target}" ] && [ -n "$(ls -A "${target}")" ]; then
  echo "setup.sh: ${target} exists and is not empty; choose a new directory" >&2
  exit 1
fi
mkdir -p "${target}/local"
target=$(readlink -f "${target}")

ln -s "$(realpath --relative-to="${target}" "${template}/speechlm.sh")" "${target}/speechlm.sh"
ln -s "$(realpath --relative-to="${target}" "${utils}")" "${target}/utils"
cp "${template}/path.sh" "${template}/cmd.sh" "${template}/db.sh" "${target}/"
cp -r "${template}/conf" "${target}/conf"

cat >"${target}/run.sh" <<'RUN'
#!/usr/bin/env bash
# <corpus>: what this recipe trains and on which data. The stages are in speechlm.sh (see its
# header); options after ./run.sh override the ones here, e.g. ./run.sh --stage 3 --stop_stage 5.
set -euo pipefail

./speechlm.sh \
  --train_set train --valid_set valid --test_sets test \
  --fs 16000 \
  --tokenizer_config conf/tokenizer.yaml \
  --train_config conf/train.yaml \
  --decode_config conf/decode.yaml \
  "$@"
RUN

cat >"${target}/local/data.sh" <<'DATA'
#!/usr/bin/env bash
# Stage 1: write Kaldi data directories for this corpus. TO WRITE for a new corpus:
#   data/<set>/wav.scp   `uttid path` (any format sox reads) or `uttid command |`
#   data/<set>/text      `uttid transcript`
#   data/<set>/utt2spk   `uttid speaker`; uttids start with their speaker id so both sort alike
#   data/<set>/spk2utt   from utt2spk: utils/utt2spk_to_spk2utt.sh data/<set>/utt2spk > ...
# for the sets that run.sh names (--train_set, --valid_set, --test_sets; text-only sets for the
# textlm task need only `text` and `utt2spk`), all sorted with LC_ALL=C. Read the corpus location
# from db.sh, stop with a one-line error when it is unset, and finish with
#   utils/validate_data_dir.sh data/<set>
# See egs2/librispeech/speechlm1/local/data.sh and egs2/mini_flite/speechlm1/local/data.sh.
set -euo pipefail
. ./path.sh
. ./db.sh
echo "local/data.sh: not written yet: see the comments at the top of ${BASH_SOURCE[0]}" >&2
exit 1
DATA
chmod +x "${target}/run.sh" "${target}/local/data.sh"
echo "setup.sh: created ${target}; next: write local/data.sh, set db.sh, adapt conf/, ./run.sh"
