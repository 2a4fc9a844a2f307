#!/usr/bin/env bash
# The stages of an OpusLM-style speech LM recipe (DESIGN.md section 7). A recipe's run.sh sets
# corpus options and calls this script from the recipe directory, which holds path.sh, cmd.sh,
# conf/, local/data.sh and the links speechlm.sh and utils/.
#
# Stage  what                     reads                                   writes
#  1  data preparation            (corpus)                                data/<set>/{wav.scp,text,utt2spk,spk2utt}
#                                                                         data/<text set>/text (text only)
#  2  audio formatting            data/<set>/                             dump/raw/<set>/{wav/*.wav,wav.scp,utt2dur,...}
#                                 resample to --fs, 16-bit wav; train set: drop utterances shorter than
#                                 --min_wav_duration or longer than --max_wav_duration
#  3  tokenizer training          dump/raw/<train_set>/, --tokenizer_config  exp/tokenizers/{text,semantic,codec}/
#                                 a section with `pretrained: DIR` is used as is instead of trained
#  4  tokenization                dump/raw/<set>/, data/<text set>/,      dump/tokens/<set>/{speech.scp,text.scp,
#                                 exp/tokenizers/                          utt2num_frames,utt2num_tokens,utt2spk}
#  5  vocabulary + manifests      exp/tokenizers/, dump/tokens/           data/token_list.json,
#                                                                         exp/manifests/<task>_<set>/data.json
#  6  base text LM (optional)     --base_lm_config, textlm manifests      exp/base_lm_<tag>/
#  7  pre-training                --train_config, manifests               exp/speechlm_<tag>/
#  8  annealing (optional)        --anneal_config, exp/speechlm_<tag>/    exp/speechlm_<tag>_anneal/
#  9  inference                   --decode_config, the last model,        <model>/decode_{asr,tts}_<test set>/
#                                 dump/raw/<test set>/                     {text | wav.scp, wav/}
# 10  scoring                     decode dirs, dump/raw/<test set>/       <decode dir>/score.json, <model>/RESULTS.md
# 11  packing                     the last model, tokenizers,             <model>/packed/
#                                 --decode_config                          (stage 9 decodes with it,
#                                                                          so it packs if needed)
#
# Every stage can run alone (--stage N --stop_stage N), checks that its inputs exist (and says which
# stage makes them) and skips work whose `.done` marker records the same inputs (file contents and
# options); delete a marker, or change an input, to redo that work.
set -euo pipefail

log() {
  echo "$(date '+%Y-%m-%dT%H:%M:%S') (speechlm.sh:${BASH_LINENO[0]}) $*" >&2
}
die() {
  log "ERROR: $*"
  exit 1
}

# General
stage=1
stop_stage=11
nj=$(nproc)
ngpu=0
python=python
# Data
train_set=train
valid_set=valid
test_sets="test"
text_train_set=""     # text-only training set (textlm task); empty: none
text_test_sets=""     # text-only held-out sets (textlm manifests for perplexity)
local_data_opts=""    # options for local/data.sh (word-split)
fs=16000
min_wav_duration=0.5  # seconds; training set only
max_wav_duration=20
# Tokenizers, tasks, model
tokenizer_config=conf/tokenizer.yaml
train_tasks="asr tts" # tasks made from every speech set
tts_prompt_frames=150 # TTS speaker prompt length (frames of the token dumps; 150 = 3 s at 50 Hz)
base_lm_config=""     # stage 6; empty: the base LM comes from --train_config
train_config=conf/train.yaml
anneal_config=""      # stage 8; empty: no annealing
tag=""                # experiment name; default: the train config's file name
# Inference
decode_config=conf/decode.yaml   # task -> decoding settings, packed with the model (stage 9/11)
inference_tasks="asr tts"
inference_args=""     # more options for opuslm.bin.infer, e.g. "--batch_size 16" (word-split)

help_message="Usage: $0 [options]   (from a recipe directory; the stages are in the header of
$(readlink -f "$0"))
Options (default):
  --stage (${stage}) --stop_stage (${stop_stage})    stages to run
  --nj (${nj}) --ngpu (${ngpu})    parallel jobs; GPUs for training (torchrun when > 1)
  --train_set (${train_set}) --valid_set (${valid_set}) --test_sets ('${test_sets}')
  --text_train_set --text_test_sets    text-only sets for the textlm task
  --local_data_opts    options for local/data.sh
  --fs (${fs}) --min_wav_duration (${min_wav_duration}) --max_wav_duration (${max_wav_duration})
  --tokenizer_config (${tokenizer_config}) --train_tasks ('${train_tasks}')
  --tts_prompt_frames (${tts_prompt_frames})
  --base_lm_config --train_config (${train_config}) --anneal_config --tag
  --decode_config (${decode_config}) --inference_tasks ('${inference_tasks}') --inference_args"

invocation="$0 $*"
. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
log "${invocation}"

template_dir=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
conf_args="${template_dir}/scripts/conf_args.py"
[ -n "${tag}" ] || tag=$(basename "${train_config}" .yaml)
base_lm_dir="exp/base_lm_${tag}"
pretrain_dir="exp/speechlm_${tag}"
anneal_dir="exp/speechlm_${tag}_anneal"
read -r -a test_set_list <<<"${test_sets}"
read -r -a text_test_set_list <<<"${text_test_sets}"
speech_sets=("${train_set}" "${valid_set}" "${test_set_list[@]}")
text_sets=(${text_train_set:+"${text_train_set}"} "${text_test_set_list[@]}")
token_list=data/token_list.json

# ------------------------------------------------------------------------------------- helpers
# require <stage> <path>...: inputs of this stage that stage <stage> makes.
require() {
  local from=$1
  shift
  for path in "$@"; do
    [ -e "${path}" ] || die "missing ${path}: run stage ${from} first (--stage ${from})"
  done
}

# fingerprint <input>...: one checksum of the inputs (file contents, or the words themselves).
fingerprint() {
  for input in "$@"; do
    if [ -f "${input}" ]; then md5sum <"${input}"; else echo "${input}"; fi
  done | md5sum | cut -d' ' -f1
}

# is_done <dir> <input>...: the work in <dir> was finished from exactly these inputs. If not, the
# fingerprint taken now is what mark_done records: an input edited while the work runs must not
# pass for the one it ran with.
is_done() {
  local dir=$1
  shift
  pending_fingerprint=$(fingerprint "$@")
  if [ -f "${dir}/.done" ] && [ "$(cat "${dir}/.done")" = "${pending_fingerprint}" ]; then
    log "${dir}: done already (remove ${dir}/.done to redo)"
    return 0
  fi
  return 1
}

# mark_done <dir>: the work of the last is_done check is finished.
mark_done() {
  echo "${pending_fingerprint}" >"$1/.done"
}

# conf_section <file> <section>: the section's options, one array element each, in $opts.
conf_section() {
  mapfile -d '' opts < <("${python}" "${conf_args}" "$1" "$2")
}

conf_value() {
  "${python}" "${conf_args}" --value "$1" "$2"
}

# pretrained_tokenizer <text|semantic|codec>: the `pretrained: DIR` of the config section, if any.
pretrained_tokenizer() {
  local dir
  dir=$(conf_value "${tokenizer_config}" "$1.pretrained")
  [ -z "${dir}" ] || [ -d "${dir}" ] ||
    die "${tokenizer_config}: $1.pretrained: ${dir} is not a directory (see the recipe's README)"
  echo "${dir}"
}

# find_tokenizers: set text_dir, semantic_dir, codec_dir (pretrained, or trained by stage 3) and
# tokenizer_inputs (what dumps made with them depend on).
find_tokenizers() {
  local kind dir
  tokenizer_inputs=()
  for kind in text semantic codec; do
    dir=$(pretrained_tokenizer "${kind}")
    if [ -z "${dir}" ]; then
      dir="exp/tokenizers/${kind}"
      require 3 "${dir}/.done"
      tokenizer_inputs+=("${dir}/.done")
    else
      tokenizer_inputs+=("${dir}")
    fi
    printf -v "${kind}_dir" '%s' "${dir}"
  done
}

# The directory of the last trained model: annealing if configured, else pre-training.
model_dir() {
  if [ -n "${anneal_config}" ]; then echo "${anneal_dir}"; else echo "${pretrain_dir}"; fi
}

# train_lm <config> <output_dir> [train options]: the trainer, under torchrun with --ngpu > 1.
train_lm() {
  local config=$1 output_dir=$2
  shift 2
  local launcher=("${python}" -m opuslm.bin.train)
  if [ "${ngpu}" -gt 1 ]; then
    launcher=("${python}" -m torch.distributed.run --standalone --nproc_per_node "${ngpu}"
      -m opuslm.bin.train)
  fi
  # A finished run whose inputs changed would "resume" at its last step and train nothing.
  [ ! -f "${output_dir}/.done" ] || die "${output_dir} holds a run finished from other inputs" \
    "(config, token list or initial model changed): remove it or choose another --tag"
  mkdir -p "${output_dir}"
  log "training ${output_dir} (log: ${output_dir}/train.log)"
  local gpus=()
  [ "${ngpu}" -gt 0 ] && gpus=(--gpus-per-task "${ngpu}")
  # --resume continues an interrupted run from its latest checkpoint (a new one starts at step 0).
  ${cuda_cmd} ${gpus[@]+"${gpus[@]}"} "${output_dir}/train.log" \
    "${launcher[@]}" --config "${config}" --output_dir "${output_dir}" --resume "$@"
}

# ------------------------------------------------------------------------------------- stages
stage_1() {
  local set
  [ -x local/data.sh ] || die "local/data.sh is missing or not executable"
  # shellcheck disable=SC2086  # the options are meant to be word-split
  local/data.sh ${local_data_opts}
  for set in "${speech_sets[@]}"; do
    require 1 "data/${set}/wav.scp" "data/${set}/text" "data/${set}/utt2spk"
  done
  for set in ${text_sets[@]+"${text_sets[@]}"}; do
    require 1 "data/${set}/text"
  done
}

# format_set <set> <filter>: dump/raw/<set>; filter=yes drops too short / too long utterances.
format_set() {
  local set=$1 filter=$2 src="data/$1" dst="dump/raw/$1"
  require 1 "${src}/wav.scp" "${src}/text" "${src}/utt2spk"
  local inputs=("${src}/wav.scp" "${src}/text" "${src}/utt2spk" "fs=${fs}")
  [ "${filter}" = yes ] && inputs+=("durations ${min_wav_duration} ${max_wav_duration}")
  is_done "${dst}" "${inputs[@]}" && return 0
  # Split the utterance list (wav.scp, or segments when recordings are cut) into <= nj parts.
  local list="${src}/wav.scp" scp="${dst}/split/part.JOB" segments=()
  if [ -f "${src}/segments" ]; then
    list="${src}/segments"
    scp="${src}/wav.scp"
    segments=(--segments "${dst}/split/part.JOB")
  fi
  mkdir -p "${dst}/split" "${dst}/logs"
  rm -f "${dst}/split/"*
  awk -v n="${nj}" -v prefix="${dst}/split/part." '{ print > (prefix ((NR - 1) % n + 1)) }' \
    "${list}"
  local jobs
  jobs=$(find "${dst}/split" -name 'part.*' | wc -l)
  log "formatting ${src} -> ${dst} (${jobs} jobs, ${fs} Hz, log: ${dst}/logs/format.*.log)"
  ${train_cmd} JOB=1:"${jobs}" "${dst}/logs/format.JOB.log" \
    "${template_dir}/scripts/format_wav_scp.sh" --fs "${fs}" ${segments[@]+"${segments[@]}"} \
    "${scp}" "${dst}/wav" "${dst}/split/out.JOB"
  cat "${dst}/split/"out.*.wav.scp | sort >"${dst}/wav.scp"
  cat "${dst}/split/"out.*.utt2dur | sort >"${dst}/utt2dur"
  local total converted
  total=$(wc -l <"${list}")
  converted=$(wc -l <"${dst}/wav.scp")
  [ "${converted}" -eq "${total}" ] ||
    log "WARNING: ${src}: $((total - converted)) of ${total} utterances failed to convert" \
      "(see ${dst}/logs/format.*.log)"
  cp "${src}/text" "${src}/utt2spk" "${dst}/"
  if [ "${filter}" = yes ]; then
    awk -v lo="${min_wav_duration}" -v hi="${max_wav_duration}" \
      '$2 >= lo && $2 <= hi { print $1 }' "${dst}/utt2dur" >"${dst}/keep"
    local short long file
    short=$(awk -v lo="${min_wav_duration}" '$2 < lo' "${dst}/utt2dur" | wc -l)
    long=$(awk -v hi="${max_wav_duration}" '$2 > hi' "${dst}/utt2dur" | wc -l)
    log "${dst}: dropped ${short} utterances < ${min_wav_duration} s and ${long}" \
      "> ${max_wav_duration} s; kept $(wc -l <"${dst}/keep")"
    for file in wav.scp utt2dur; do
      utils/filter_scp.sh "${dst}/keep" "${dst}/${file}" >"${dst}/${file}.tmp"
      mv "${dst}/${file}.tmp" "${dst}/${file}"
    done
  fi
  utils/fix_data_dir.sh "${dst}"
  utils/validate_data_dir.sh "${dst}"
  mark_done "${dst}"
}

stage_2() {
  format_set "${train_set}" yes
  local set
  for set in "${valid_set}" "${test_set_list[@]}"; do
    format_set "${set}" no
  done
}

stage_3() {
  local train="dump/raw/${train_set}"
  require 2 "${train}/wav.scp" "${train}/text"
  mkdir -p exp/tokenizers
  local opts=()
  local pretrained
  pretrained=$(pretrained_tokenizer text)
  if [ -n "${pretrained}" ]; then
    log "text tokenizer: the base LM's, from ${pretrained}"
  else
    # The text-only training set is text the model will read: the tokenizer should see it too.
    local texts=("${train}/text" ${text_train_set:+"data/${text_train_set}/text"})
    conf_section "${tokenizer_config}" text
    if ! is_done exp/tokenizers/text "${texts[@]}" "${opts[*]}"; then
      log "training the text tokenizer on ${texts[*]}"
      "${python}" -m opuslm.bin.train_text_tokenizer --text "${texts[@]}" \
        --output_dir exp/tokenizers/text "${opts[@]}"
      mark_done exp/tokenizers/text
    fi
  fi
  local kind
  for kind in semantic codec; do
    pretrained=$(pretrained_tokenizer "${kind}")
    if [ -n "${pretrained}" ]; then
      log "${kind} tokenizer: pretrained, from ${pretrained}"
      continue
    fi
    conf_section "${tokenizer_config}" "${kind}"
    is_done "exp/tokenizers/${kind}" "${train}/wav.scp" "${opts[*]}" && continue
    log "training the ${kind} tokenizer on ${train}"
    "${python}" -m "opuslm.bin.train_${kind}" --data_dir "${train}" \
      --output_dir "exp/tokenizers/${kind}" "${opts[@]}"
    mark_done "exp/tokenizers/${kind}"
  done
}

stage_4() {
  local text_dir semantic_dir codec_dir tokenizer_inputs set
  find_tokenizers
  for set in "${speech_sets[@]}"; do
    local src="dump/raw/${set}" dst="dump/tokens/${set}"
    require 2 "${src}/wav.scp" "${src}/text"
    is_done "${dst}" "${src}/wav.scp" "${src}/text" "${tokenizer_inputs[@]}" && continue
    log "tokenizing ${src} -> ${dst}"
    "${python}" -m opuslm.bin.tokenize_audio --data_dir "${src}" --semantic_dir "${semantic_dir}" \
      --codec_dir "${codec_dir}" --output_dir "${dst}" --nj "${nj}"
    "${python}" -m opuslm.bin.tokenize_text --text "${src}/text" --tokenizer_dir "${text_dir}" \
      --output_dir "${dst}" --nj "${nj}"
    cp "${src}/utt2spk" "${dst}/utt2spk"
    mark_done "${dst}"
  done
  for set in ${text_sets[@]+"${text_sets[@]}"}; do
    local dst="dump/tokens/${set}"
    require 1 "data/${set}/text"
    is_done "${dst}" "data/${set}/text" "${tokenizer_inputs[@]}" && continue
    log "tokenizing data/${set}/text -> ${dst}"
    "${python}" -m opuslm.bin.tokenize_text --text "data/${set}/text" \
      --tokenizer_dir "${text_dir}" --output_dir "${dst}" --nj "${nj}" --add_special_tokens
    mark_done "${dst}"
  done
}

# make_manifest <task> <set> <entry options...>: exp/manifests/<task>_<set>/data.json.
make_manifest() {
  local task=$1 set=$2
  shift 2
  local dir="exp/manifests/${task}_${set}"
  mkdir -p "${dir}"
  is_done "${dir}" "${token_list}" "dump/tokens/${set}/.done" "$@" && return 0
  "${python}" -m opuslm.bin.make_manifest --task "${task}" --dataset "${set}" \
    --token_list "${token_list}" "$@" --output "${dir}/data.json"
  mark_done "${dir}"
}

stage_5() {
  local text_dir semantic_dir codec_dir tokenizer_inputs base_model set task
  find_tokenizers
  # An inherited text tokenizer is the base LM's: the text block then has its embedding rows.
  base_model=$(pretrained_tokenizer text)
  if ! is_done data "${tokenizer_inputs[@]}"; then
    "${python}" -m opuslm.bin.make_token_list --text_tokenizer_dir "${text_dir}" \
      ${base_model:+--base_model_dir "${base_model}"} --semantic_dir "${semantic_dir}" \
      --codec_dir "${codec_dir}" --output "${token_list}"
    mark_done data
  fi
  for set in "${speech_sets[@]}"; do
    require 4 "dump/tokens/${set}/speech.scp" "dump/tokens/${set}/text.scp"
    for task in ${train_tasks}; do
      local prompt=()
      [ "${task}" = tts ] && prompt=(--prompt_frames "${tts_prompt_frames}")
      make_manifest "${task}" "${set}" --speech "dump/tokens/${set}/speech.scp" \
        --text "dump/tokens/${set}/text.scp" --utt2spk "dump/tokens/${set}/utt2spk" \
        ${prompt[@]+"${prompt[@]}"}
    done
  done
  for set in ${text_sets[@]+"${text_sets[@]}"}; do
    require 4 "dump/tokens/${set}/text.scp"
    make_manifest textlm "${set}" --text "dump/tokens/${set}/text.scp"
  done
}

stage_6() {
  if [ -z "${base_lm_config}" ]; then
    log "no --base_lm_config: the base LM comes from ${train_config}"
    return 0
  fi
  require 5 "${token_list}"
  is_done "${base_lm_dir}" "${base_lm_config}" "${token_list}" && return 0
  train_lm "${base_lm_config}" "${base_lm_dir}"
  mark_done "${base_lm_dir}"
}

stage_7() {
  require 5 "${token_list}"
  local init=()
  if [ -n "${base_lm_config}" ]; then
    require 6 "${base_lm_dir}/.done"
    init=(--init_from "${base_lm_dir}")
  fi
  is_done "${pretrain_dir}" "${train_config}" "${token_list}" ${init[@]+"${init[@]}"} && return 0
  train_lm "${train_config}" "${pretrain_dir}" ${init[@]+"${init[@]}"}
  mark_done "${pretrain_dir}"
}

stage_8() {
  if [ -z "${anneal_config}" ]; then
    log "no --anneal_config: no annealing"
    return 0
  fi
  require 7 "${pretrain_dir}/.done"
  is_done "${anneal_dir}" "${anneal_config}" "${pretrain_dir}/.done" && return 0
  train_lm "${anneal_config}" "${anneal_dir}" --init_from "${pretrain_dir}"
  mark_done "${anneal_dir}"
}

# pack_model: <model>/packed, the self-contained directory that inference loads, with the decoding
# defaults of --decode_config and a training utterance as the default TTS voice. Stage 9 needs it,
# so it packs when stage 11 has not yet; whichever runs second finds it done.
pack_model() {
  local model text_dir semantic_dir codec_dir tokenizer_inputs prompt_wav
  model=$(model_dir)
  require "$([ -n "${anneal_config}" ] && echo 8 || echo 7)" "${model}/.done"
  require 2 "dump/raw/${train_set}/wav.scp"
  find_tokenizers
  prompt_wav=$(head -n 1 "dump/raw/${train_set}/wav.scp" | cut -d' ' -f2-)
  local inputs=("${model}/.done" "${decode_config}" "${prompt_wav}" "${tokenizer_inputs[@]}")
  mkdir -p "${model}/packed"
  is_done "${model}/packed" "${inputs[@]}" && return 0
  "${python}" -m opuslm.bin.pack --checkpoint "${model}" --text_tokenizer_dir "${text_dir}" \
    --semantic_dir "${semantic_dir}" --codec_dir "${codec_dir}" --output_dir "${model}/packed" \
    --default_prompt_wav "${prompt_wav}" --decode_config "${decode_config}"
  mark_done "${model}/packed"
}

# tts_prompts <data dir>: uttid -> wav of the next utterance of the same speaker (cyclic), so a
# prompt never holds the words it is asked to say.
tts_prompts() {
  awk 'NR == FNR { wav[$1] = substr($0, length($1) + 2); next }
       { for (i = 2; i <= NF; i++) print $i, wav[$(i == NF ? 2 : i + 1)] }' \
    "$1/wav.scp" "$1/spk2utt" | sort
}

stage_9() {
  local model set task
  model=$(model_dir)
  pack_model
  for set in "${test_set_list[@]}"; do
    require 2 "dump/raw/${set}/wav.scp"
    for task in ${inference_tasks}; do
      local dir="${model}/decode_${task}_${set}" inputs=()
      mkdir -p "${dir}"
      case "${task}" in
        asr) inputs=(--wav_scp "dump/raw/${set}/wav.scp") ;;
        tts)
          tts_prompts "dump/raw/${set}" >"${dir}/prompt.scp"
          inputs=(--text "dump/raw/${set}/text" --prompt_scp "${dir}/prompt.scp")
          ;;
        *) die "--inference_tasks: no inference for task ${task} (asr, tts)" ;;
      esac
      is_done "${dir}" "${model}/packed/.done" "${inputs[@]}" "${inference_args}" && continue
      log "decoding ${task} ${set} -> ${dir}"
      # shellcheck disable=SC2086  # inference_args is meant to be word-split
      "${python}" -m opuslm.bin.infer --model_dir "${model}/packed" --task "${task}" \
        "${inputs[@]}" --output_dir "${dir}" --nj "${nj}" ${inference_args}
      mark_done "${dir}"
    done
  done
}

stage_10() {
  local model set task
  model=$(model_dir)
  for set in "${test_set_list[@]}"; do
    for task in ${inference_tasks}; do
      local dir="${model}/decode_${task}_${set}" ref="dump/raw/${set}"
      require 9 "${dir}/.done"
      case "${task}" in
        asr)
          "${python}" -m opuslm.bin.score_asr --ref "${ref}/text" --hyp "${dir}/text" \
            --output_dir "${dir}"
          ;;
        tts)
          "${python}" -m opuslm.bin.score_tts --ref_text "${ref}/text" \
            --ref_wav_scp "${ref}/wav.scp" --syn_wav_scp "${dir}/wav.scp" --output_dir "${dir}"
          ;;
      esac
    done
  done
  "${python}" -m opuslm.bin.results "${model}"
}

stage_11() {
  pack_model
  log "packed model: $(model_dir)/packed (opuslm.OpusLM.from_pretrained)"
}

stage_titles=("" "data preparation" "audio formatting" "tokenizer training" "tokenization"
  "vocabulary + manifests" "base text LM" "pre-training" "annealing" "inference" "scoring"
  "packing")

[ "${stage}" -ge 1 ] && [ "${stop_stage}" -le 11 ] && [ "${stage}" -le "${stop_stage}" ] ||
  die "need 1 <= --stage (${stage}) <= --stop_stage (${stop_stage}) <= 11"
timings=()
for n in $(seq "${stage}" "${stop_stage}"); do
  log "Stage ${n}: ${stage_titles[n]}"
  started=${SECONDS}
  "stage_${n}"
  timings+=("$(printf 'stage %2d %-24s %6d s' "${n}" "${stage_titles[n]}" $((SECONDS - started)))")
done
log "wall time per stage:"
printf '  %s\n' "${timings[@]}" >&2
log "finished stages ${stage}-${stop_stage}"
