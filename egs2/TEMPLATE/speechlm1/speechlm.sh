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
#                                                                         exp/manifests/<task>_<set>/data.json,
#                                 dump/raw/<train_set>/text, data/<text   data/lexicon.txt (the words ASR decoding's
#                                 train set>/text                          lexicon_penalty knows) and data/word_lm.counts
#                                                                         (its word LM's trigrams; both packed in stage 9/11)
#                                 --tts_align true: dump/raw/<set>/       exp/aligner/, dump/align/<set>/align.scp
#  6  base text LM (optional)     --base_lm_config, textlm manifests      exp/base_lm_<tag>/, its text LM in
#                                                                          Hugging Face format: exp/base_lm_<tag>/hf/
#  7  pre-training                --train_config, manifests               exp/speechlm_<tag>/
#  8  annealing (optional)        --anneal_config, exp/speechlm_<tag>/    exp/speechlm_<tag>_anneal/
#                                 --annealing_study true: also the same     exp/speechlm_<tag>_constlr/
#                                 run at the anneal config's constant LR
#  9  inference                   --decode_config, the last model         <model>/decode_{asr,tts}_<test set>/
#                                 (with --annealing_study: the pre-trained, {text | wav.scp, wav/}
#                                 constant-LR and annealed models),
#                                 dump/raw/<test set>/
# 10  scoring                     decode dirs, dump/raw/<test set>/,      <decode dir>/score.json, <model>/RESULTS.md,
#                                 data/<text test set>/text,              <model>/score_text_<text set>/,
#                                 exp/base_lm_<tag>/hf                     exp/base_lm_<tag>/score_text_<text set>/,
#                                 exp/manifests/{asr,tts}_<test set>/     <model>/copy_synthesis_<test set>/,
#                                                                          exp/judge_ref_transcripts/<test set>.json,
#                                                                          <model>/condition_gain/<task>_<test set>.json
# 11  packing                     the last model, tokenizers,             <model>/packed/
#                                 --decode_config                          (stage 9 decodes with it,
#                                                                          so it packs if needed)
#
# Every stage can run alone (--stage N --stop_stage N), checks that its inputs exist (and says which
# stage makes them) and skips work whose `.done` marker records the same inputs (file contents and
# options); delete a marker, or change an input, to redo that work.
#
# The wall time of every stage is appended to exp/timings_<tag>.tsv; after stage 10 or 11,
# scripts/make_results.py writes the recipe's summary (--results_md, default exp/RESULTS_<tag>.md):
# ASR, TTS judge-WER next to reference and copy synthesis, text perplexity of the base LM and of
# OpusLM, the annealing study, the stage timings and the commands that ran them.
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
tts_align=false       # true: stage 5 aligns each TTS transcript to its speech and the TTS target
                      # interleaves it; decode such a model with `interleave_text: true`
base_lm_config=""     # stage 6; empty: the base LM comes from --train_config
train_config=conf/train.yaml
anneal_config=""      # stage 8; empty: no annealing
annealing_study=false # true: stage 8 also continues pre-training at the anneal config's constant
                      # LR; stages 9-10 decode and score pre-trained, constant-LR and annealed
study_tts_utts=0      # the study's TTS on the first N test utterances only (0: all)
tag=""                # experiment name; default: the train config's file name
# Inference
decode_config=conf/decode.yaml   # task -> decoding settings, packed with the model (stage 9/11)
inference_tasks="asr tts"
inference_args=""     # more options for opuslm.bin.infer, e.g. "--batch_size 16" (word-split)
copy_synthesis=true   # stage 10: score codec copy synthesis of the test sets with the TTS judge
results_md=""         # the recipe's summary; default exp/RESULTS_<tag>.md

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
  --tts_prompt_frames (${tts_prompt_frames}) --tts_align (${tts_align})
  --base_lm_config --train_config (${train_config}) --anneal_config --tag
  --annealing_study (${annealing_study}) --study_tts_utts (${study_tts_utts})
  --decode_config (${decode_config}) --inference_tasks ('${inference_tasks}') --inference_args
  --copy_synthesis (${copy_synthesis}) --results_md (exp/RESULTS_<tag>.md)
  --config FILE    option defaults as name=value lines (e.g. nj=8): every option given on the
                   command line (a run.sh preset's too) wins over them"

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
constlr_dir="exp/speechlm_${tag}_constlr"
[ -n "${results_md}" ] || results_md="exp/RESULTS_${tag}.md"
case "${annealing_study}" in
  true) [ -n "${anneal_config}" ] || die "--annealing_study true needs --anneal_config" ;;
  false) ;;
  *) die "--annealing_study must be true or false, got '${annealing_study}'" ;;
esac
read -r -a test_set_list <<<"${test_sets}"
read -r -a text_test_set_list <<<"${text_test_sets}"
speech_sets=("${train_set}" "${valid_set}" "${test_set_list[@]}")
text_sets=(${text_train_set:+"${text_train_set}"} "${text_test_set_list[@]}")
token_list=data/token_list.json
lexicon=data/lexicon.txt
word_lm=data/word_lm.counts

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
# pass for the one it ran with. The marker is <dir>/.done, or <dir>/${marker} where a caller sets
# a local `marker` (scoring keeps its own beside the decoding's).
is_done() {
  local dir=$1 name=${marker:-.done}
  shift
  pending_fingerprint=$(fingerprint "$@")
  if [ -f "${dir}/${name}" ] && [ "$(cat "${dir}/${name}")" = "${pending_fingerprint}" ]; then
    log "${dir}: done already (remove ${dir}/${name} to redo)"
    return 0
  fi
  return 1
}

# mark_done <dir>: the work of the last is_done check is finished.
mark_done() {
  echo "${pending_fingerprint}" >"$1/${marker:-.done}"
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

# The models stages 9-10 decode and score: the last one, or the annealing study's three.
decoded_models() {
  if [ "${annealing_study}" = true ]; then
    echo "${pretrain_dir} ${constlr_dir} ${anneal_dir}"
  else
    model_dir
  fi
}

# decode_jobs: one line "model task set max_utts" per decoding of stage 9, scored by stage 10
# (max_utts 0: the whole set). The study's TTS may be cut to --study_tts_utts utterances; the last
# model then also decodes the whole set, for its own results.
decode_jobs() {
  local model set task
  for model in $(decoded_models); do
    for set in "${test_set_list[@]}"; do
      for task in ${inference_tasks}; do
        if [ "${task}" = tts ] && [ "${annealing_study}" = true ] && [ "${study_tts_utts}" -gt 0 ]
        then
          [ "${model}" = "$(model_dir)" ] && echo "${model} ${task} ${set} 0"
          echo "${model} ${task} ${set} ${study_tts_utts}"
        else
          echo "${model} ${task} ${set} 0"
        fi
      done
    done
  done
}

# decode_dir <model> <task> <set> <max_utts>
decode_dir() {
  echo "$1/decode_$2_$3$([ "$4" -gt 0 ] && echo "_first$4")"
}

# base_lm_hf: the base LM in Hugging Face format (stage 6's export, or a train config's
# `model.base` directory), or nothing when there is none.
base_lm_hf() {
  if [ -n "${base_lm_config}" ]; then
    require 6 "${base_lm_dir}/hf/.done"
    echo "${base_lm_dir}/hf"
    return 0
  fi
  local base
  base=$(conf_value "${train_config}" model.base 2>/dev/null) || base=""
  if [ -n "${base}" ] && [ -d "${base}" ]; then echo "${base}"; fi
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

# align_tts <set>: dump/align/<set>/align.scp, the start frame of each transcript token
# (opuslm.bin.align_text, options from the tokenizer config's `align` section). The training set's
# call trains the aligner (exp/aligner) unless it is done with the same inputs and options.
align_tts() {
  local set=$1 train=()
  local raw="dump/raw/${set}" tokens="dump/tokens/${set}"
  require 2 "${raw}/wav.scp"
  conf_section "${tokenizer_config}" align
  if [ "${set}" = "${train_set}" ]; then
    mkdir -p exp/aligner
    if ! is_done exp/aligner "${raw}/wav.scp" "${tokens}/.done" "${token_list}" "${opts[*]}"; then
      rm -f exp/aligner/phonetic_encoder.safetensors
      train=(--train_aligner --token_list "${token_list}")
    fi
  fi
  log "aligning the transcripts of ${tokens} to their speech"
  "${python}" -m opuslm.bin.align_text --aligner_dir exp/aligner --data_dir "${raw}" \
    --token_dir "${tokens}" --output_dir "dump/align/${set}" \
    ${train[@]+"${train[@]}"} ${opts[@]+"${opts[@]}"}
  [ ${#train[@]} -eq 0 ] || mark_done exp/aligner
}

stage_5() {
  local text_dir semantic_dir codec_dir tokenizer_inputs base_model set task
  find_tokenizers
  # The words of the text the model reads (as the text tokenizer's training text, stage 3).
  local texts=("dump/raw/${train_set}/text" ${text_train_set:+"data/${text_train_set}/text"})
  require 2 "${texts[0]}"
  # (a run from before the word LM has the lexicon marker but not the counts)
  if [ ! -f "${word_lm}" ] || ! marker=.lexicon_done is_done data "${texts[@]}"; then
    "${python}" -m opuslm.bin.make_lexicon --text "${texts[@]}" --output "${lexicon}" \
      --word_lm "${word_lm}"
    marker=.lexicon_done mark_done data
  fi
  # An inherited text tokenizer is the base LM's: the text block then has its embedding rows.
  base_model=$(pretrained_tokenizer text)
  if ! is_done data "${tokenizer_inputs[@]}"; then
    "${python}" -m opuslm.bin.make_token_list --text_tokenizer_dir "${text_dir}" \
      ${base_model:+--base_model_dir "${base_model}"} --semantic_dir "${semantic_dir}" \
      --codec_dir "${codec_dir}" --output "${token_list}"
    mark_done data
  fi
  local aligned=false
  if [ "${tts_align}" = true ] && [[ " ${train_tasks} " == *" tts "* ]]; then
    aligned=true
    align_tts "${train_set}"  # trains the aligner first
  fi
  for set in "${speech_sets[@]}"; do
    require 4 "dump/tokens/${set}/speech.scp" "dump/tokens/${set}/text.scp"
    for task in ${train_tasks}; do
      local prompt=()
      [ "${task}" = tts ] && prompt=(--prompt_frames "${tts_prompt_frames}")
      if [ "${task}" = tts ] && [ "${aligned}" = true ]; then
        [ "${set}" = "${train_set}" ] || align_tts "${set}"
        prompt+=(--align "dump/align/${set}/align.scp")
      fi
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
  if ! is_done "${base_lm_dir}" "${base_lm_config}" "${token_list}"; then
    train_lm "${base_lm_config}" "${base_lm_dir}"
    mark_done "${base_lm_dir}"
  fi
  # The text LM alone, as a plain Hugging Face model: stage 10 scores its perplexity.
  local text_dir semantic_dir codec_dir tokenizer_inputs
  find_tokenizers
  is_done "${base_lm_dir}/hf" "${base_lm_dir}/.done" "${tokenizer_inputs[@]}" && return 0
  "${python}" -m opuslm.bin.export_hf --checkpoint "${base_lm_dir}" \
    --output_dir "${base_lm_dir}/hf" --text_tokenizer_dir "${text_dir}"
  mark_done "${base_lm_dir}/hf"
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
  if ! is_done "${anneal_dir}" "${anneal_config}" "${pretrain_dir}/.done"; then
    train_lm "${anneal_config}" "${anneal_dir}" --init_from "${pretrain_dir}"
    mark_done "${anneal_dir}"
  fi
  [ "${annealing_study}" = true ] || return 0
  # The study's control: the annealing run (same data, steps and seed) with its learning rate
  # held at the start value, the rate pre-training ended at.
  local constant=(--schedule.type constant)
  is_done "${constlr_dir}" "${anneal_config}" "${pretrain_dir}/.done" "${constant[*]}" && return 0
  train_lm "${anneal_config}" "${constlr_dir}" --init_from "${pretrain_dir}" "${constant[@]}"
  mark_done "${constlr_dir}"
}

# pack_model [model]: <model>/packed (default: the last model), the self-contained directory that inference loads, with the decoding
# defaults of --decode_config and a training utterance as the default TTS voice. Stage 9 needs it,
# so it packs when stage 11 has not yet; whichever runs second finds it done.
pack_model() {
  local model=${1:-$(model_dir)} text_dir semantic_dir codec_dir tokenizer_inputs prompt_wav
  require "$([ "${model}" = "${pretrain_dir}" ] && echo 7 || echo 8)" "${model}/.done"
  require 2 "dump/raw/${train_set}/wav.scp"
  find_tokenizers
  prompt_wav=$(head -n 1 "dump/raw/${train_set}/wav.scp" | cut -d' ' -f2-)
  local inputs=("${model}/.done" "${decode_config}" "${prompt_wav}" "${tokenizer_inputs[@]}")
  local with_lexicon=()
  [ -f "${lexicon}" ] && with_lexicon=(--lexicon "${lexicon}") && inputs+=("${lexicon}")
  [ -f "${word_lm}" ] && with_lexicon+=(--word_lm "${word_lm}") && inputs+=("${word_lm}")
  mkdir -p "${model}/packed"
  is_done "${model}/packed" "${inputs[@]}" && return 0
  "${python}" -m opuslm.bin.pack --checkpoint "${model}" --text_tokenizer_dir "${text_dir}" \
    --semantic_dir "${semantic_dir}" --codec_dir "${codec_dir}" --output_dir "${model}/packed" \
    --default_prompt_wav "${prompt_wav}" --decode_config "${decode_config}" \
    ${with_lexicon[@]+"${with_lexicon[@]}"}
  mark_done "${model}/packed"
}

# tts_prompts <data dir>: uttid -> wav of the next utterance of the same speaker (cyclic), so a
# prompt never holds the words it is asked to say.
tts_prompts() {
  awk 'NR == FNR { wav[$1] = substr($0, length($1) + 2); next }
       { for (i = 2; i <= NF; i++) print $i, wav[$(i == NF ? 2 : i + 1)] }' \
    "$1/wav.scp" "$1/spk2utt" | sort
}

# decode <model> <task> <set> <max_utts>: one decoding of stage 9.
decode() {
  local model=$1 task=$2 set=$3 max_utts=$4 dir inputs=()
  dir=$(decode_dir "$@")
  require 2 "dump/raw/${set}/wav.scp"
  mkdir -p "${dir}"
  case "${task}" in
    asr) inputs=(--wav_scp "dump/raw/${set}/wav.scp") ;;
    tts)
      local text="dump/raw/${set}/text"
      if [ "${max_utts}" -gt 0 ]; then
        head -n "${max_utts}" "${text}" >"${dir}/ref_text"
        text="${dir}/ref_text"
      fi
      tts_prompts "dump/raw/${set}" >"${dir}/prompt.scp"
      inputs=(--text "${text}" --prompt_scp "${dir}/prompt.scp")
      ;;
    *) die "--inference_tasks: no inference for task ${task} (asr, tts)" ;;
  esac
  is_done "${dir}" "${model}/packed/.done" "${inputs[@]}" "${inference_args}" && return 0
  log "decoding ${task} ${set} -> ${dir}"
  # shellcheck disable=SC2086  # inference_args is meant to be word-split
  "${python}" -m opuslm.bin.infer --model_dir "${model}/packed" --task "${task}" \
    "${inputs[@]}" --output_dir "${dir}" --nj "${nj}" ${inference_args}
  mark_done "${dir}"
}

stage_9() {
  local jobs job model task set max_utts packed=" "
  mapfile -t jobs < <(decode_jobs)
  for job in "${jobs[@]}"; do
    read -r model task set max_utts <<<"${job}"
    if [[ "${packed}" != *" ${model} "* ]]; then
      pack_model "${model}"
      packed+="${model} "
    fi
    decode "${model}" "${task}" "${set}" "${max_utts}"
  done
}

# score <model> <task> <set> <max_utts>: score.json of one decoding.
score() {
  local task=$2 set=$3 max_utts=$4 dir ref="dump/raw/$3" marker=.scored
  dir=$(decode_dir "$@")
  require 9 "${dir}/.done"
  local ref_text="${ref}/text"
  [ "${max_utts}" -gt 0 ] && ref_text="${dir}/ref_text"
  is_done "${dir}" "${dir}/.done" "${ref_text}" "${ref}/wav.scp" && return 0
  case "${task}" in
    asr)
      "${python}" -m opuslm.bin.score_asr --ref "${ref_text}" --hyp "${dir}/text" \
        --output_dir "${dir}"
      ;;
    tts)
      # The judge's transcripts of the reference audio are kept per test set (keyed by the
      # judge and the audio) and reused for every model and subset scored on it.
      "${python}" -m opuslm.bin.score_tts --ref_text "${ref_text}" \
        --ref_wav_scp "${ref}/wav.scp" --syn_wav_scp "${dir}/wav.scp" --output_dir "${dir}" \
        --nj "${nj}" --ref_judge_cache "exp/judge_ref_transcripts/${set}.json"
      ;;
  esac
  mark_done "${dir}"
}

# score_text_sets: perplexity of every decoded model and of the base LM on the text test sets,
# with the same text tokenizer on both sides.
score_text_sets() {
  local text_dir semantic_dir codec_dir tokenizer_inputs base_hf set model dir marker=.scored
  find_tokenizers
  base_hf=$(base_lm_hf)
  [ -n "${base_hf}" ] || log "no base LM in Hugging Face format: its perplexity is not scored"
  for set in ${text_test_set_list[@]+"${text_test_set_list[@]}"}; do
    require 1 "data/${set}/text"
    local text=(--text "data/${set}/text" --text_format kaldi --test_set "${set}")
    for model in $(decoded_models); do
      dir="${model}/score_text_${set}"
      is_done "${dir}" "${model}/packed/.done" "data/${set}/text" && continue
      "${python}" -m opuslm.bin.score_text --model_dir "${model}/packed" "${text[@]}" \
        --output_dir "${dir}"
      mark_done "${dir}"
    done
    [ -n "${base_hf}" ] || continue
    dir="${base_lm_dir}/score_text_${set}"
    is_done "${dir}" "${base_hf}" "${base_hf}/config.json" "${tokenizer_inputs[@]}" \
      "data/${set}/text" && continue
    "${python}" -m opuslm.bin.score_text --hf_model_dir "${base_hf}" \
      --text_tokenizer_dir "${text_dir}" "${text[@]}" --output_dir "${dir}"
    mark_done "${dir}"
  done
}

# score_copy_synthesis: the TTS judge on the test audio passed through the codec alone, the
# ceiling of what TTS can reach with these tokens (in the last model's directory, with its TTS).
score_copy_synthesis() {
  local text_dir semantic_dir codec_dir tokenizer_inputs set dir
  find_tokenizers
  for set in "${test_set_list[@]}"; do
    dir="$(model_dir)/copy_synthesis_${set}"
    mkdir -p "${dir}"
    is_done "${dir}" "dump/raw/${set}/wav.scp" "dump/raw/${set}/text" "${tokenizer_inputs[@]}" &&
      continue
    log "codec copy synthesis of ${set} -> ${dir}"
    # The judge's WER on the original audio is score_tts's ref WER: not judged twice.
    "${python}" -m opuslm.bin.copy_synthesis --data_dir "dump/raw/${set}" \
      --codec_dir "${codec_dir}" --output_dir "${dir}" --skip_original --nj "${nj}"
    mark_done "${dir}"
  done
}

# score_condition_gain: how much the last model uses its condition (opuslm.bin.condition_gain):
# the teacher-forced CE of each test utterance with its own transcript (TTS) or speech (ASR)
# against another's. A TTS judge-WER near 100% with a gain near 0 is a model that ignores the text.
score_condition_gain() {
  local model set task manifest dir marker
  model=$(model_dir)
  dir="${model}/condition_gain"
  mkdir -p "${dir}"
  for set in "${test_set_list[@]}"; do
    for task in ${inference_tasks}; do
      manifest="exp/manifests/${task}_${set}/data.json"
      [ -f "${manifest}" ] || continue
      marker=".done_${task}_${set}"
      is_done "${dir}" "${model}/.done" "${manifest}" && continue
      "${python}" -m opuslm.bin.condition_gain --checkpoint "${model}" --manifest "${manifest}" \
        --output "${dir}/${task}_${set}.json"
      mark_done "${dir}"
    done
  done
}

stage_10() {
  local jobs job model task set max_utts
  mapfile -t jobs < <(decode_jobs)
  for job in "${jobs[@]}"; do
    read -r model task set max_utts <<<"${job}"
    score "${model}" "${task}" "${set}" "${max_utts}"
  done
  score_text_sets
  if [ "${copy_synthesis}" = true ] && [[ " ${inference_tasks} " == *" tts "* ]]; then
    score_copy_synthesis
  fi
  score_condition_gain
  for model in $(decoded_models); do
    "${python}" -m opuslm.bin.results "${model}" >/dev/null
  done
  log "results per model: $(decoded_models | sed 's|\([^ ]*\)|\1/RESULTS.md|g')"
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
# Wall times also go to a file, so the summary has every stage even when they ran in several
# invocations: date, stage, title, seconds, command (tab-separated).
timings_tsv="exp/timings_${tag}.tsv"
mkdir -p exp
timings=()
for n in $(seq "${stage}" "${stop_stage}"); do
  log "Stage ${n}: ${stage_titles[n]}"
  started=${SECONDS}
  "stage_${n}"
  seconds=$((SECONDS - started))
  timings+=("$(printf 'stage %2d %-24s %6d s' "${n}" "${stage_titles[n]}" "${seconds}")")
  printf '%s\t%d\t%s\t%d\t%s\n' "$(date '+%Y-%m-%dT%H:%M:%S')" "${n}" "${stage_titles[n]}" \
    "${seconds}" "${invocation}" >>"${timings_tsv}"
done
log "wall time per stage:"
printf '  %s\n' "${timings[@]}" >&2
log "finished stages ${stage}-${stop_stage}"
if [ "${stop_stage}" -ge 10 ]; then
  study=()
  [ "${annealing_study}" = true ] && study=(--pretrain_dir "${pretrain_dir}"
    --constlr_dir "${constlr_dir}" --anneal_dir "${anneal_dir}" --study_tts_utts "${study_tts_utts}")
  "${python}" "${template_dir}/scripts/make_results.py" --tag "${tag}" --model_dir "$(model_dir)" \
    --base_lm_dir "${base_lm_dir}" --test_sets "${test_sets}" --text_test_sets "${text_test_sets}" \
    --timings "${timings_tsv}" --output "${results_md}" ${study[@]+"${study[@]}"}
fi
