# Sourced by local/data.sh: where the corpus is on this machine.
# The directory that holds train-clean-100/, dev-clean/, test-clean/, ... (from openslr.org/12).
LIBRISPEECH=${LIBRISPEECH:-}
