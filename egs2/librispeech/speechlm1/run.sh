#!/usr/bin/env bash
# LibriSpeech (960 h): the OpusLM paper-scale setup. A SmolLM2 base LM from a local Hugging Face
# directory is continually pre-trained on ASR + TTS, then annealed; 9 streams per frame (semantic
# + 8 codec codebooks, 50 Hz). The stages are in speechlm.sh (see its header).
#   ./run.sh [--model 360m|1.7b] [--tokenizers espnet|builtin] [speechlm.sh options]
#   --model       SmolLM2-360M (default) or SmolLM2-1.7B: conf/{train,anneal}_smollm2_<model>.yaml
#   --tokenizers  espnet (default): XEUS layer 18 + k-means 5000 and ESPnet DAC 16 kHz 8 x 1024,
#                 through the [espnet] extra (tools/install_espnet.sh);
#                 builtin: MFCC k-means + the log-mel RVQ codec, no extra dependencies
# Local model directories (nothing is downloaded): see README.md and the conf/ files.
set -euo pipefail

model=360m
tokenizers=espnet
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=${2:?--model needs a value: 360m or 1.7b}; shift 2 ;;
    --tokenizers) tokenizers=${2:?--tokenizers needs a value: espnet or builtin}; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
for file in "conf/train_smollm2_${model}.yaml" "conf/tokenizer_${tokenizers}.yaml"; do
  [ -f "${file}" ] || { echo "run.sh: ${file} does not exist (--model 360m|1.7b, --tokenizers espnet|builtin)" >&2; exit 1; }
done

./speechlm.sh \
  --ngpu 8 \
  --train_set train_960 --valid_set dev_clean --test_sets "test_clean test_other" \
  --fs 16000 --min_wav_duration 0.5 --max_wav_duration 36 \
  --tokenizer_config "conf/tokenizer_${tokenizers}.yaml" --tts_prompt_frames 150 \
  --train_config "conf/train_smollm2_${model}.yaml" \
  --anneal_config "conf/anneal_smollm2_${model}.yaml" \
  --decode_config conf/decode.yaml \
  --tag "smollm2_${model}_${tokenizers}" \
  ${args[@]+"${args[@]}"}
