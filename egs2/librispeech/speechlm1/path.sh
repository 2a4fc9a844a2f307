# Sourced by run.sh, speechlm.sh and local/*.sh: the project's Python environment and C-locale
# sorting. The project root is found through the recipe's `utils` link, so a recipe directory
# made anywhere by setup.sh works.
MAIN_ROOT=$(dirname "$(readlink -f "$(dirname "${BASH_SOURCE[0]}")/utils")")
if [ -x "${MAIN_ROOT}/.venv/bin/python" ]; then
  export VIRTUAL_ENV="${MAIN_ROOT}/.venv"
  export PATH="${VIRTUAL_ENV}/bin:${PATH}"
fi
# Kaldi data directories are sorted bytewise; every sort and join in the recipe must agree.
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
# tcmalloc for the recipe's processes, where installed (Debian: libtcmalloc-minimal4; `make
# install` adds it): glibc's malloc maps and unmaps the large, changing-shape tensors of CPU
# training at every step, and the demo's stage-7 steps run 1.2x faster without that (BENCHMARKS.md).
# The steps that start one short process per utterance (flite, sox) drop it: it costs each ~3 ms.
# OPUSLM_TCMALLOC=0, or an LD_PRELOAD of your own, leaves malloc alone. OPUSLM_TCMALLOC_LIB names
# the preload set here, so those steps drop only this one.
if [ "${OPUSLM_TCMALLOC:-1}" = 1 ] && [ -z "${LD_PRELOAD:-}" ] &&
  OPUSLM_TCMALLOC_LIB=$("${MAIN_ROOT}/utils/tcmalloc_lib.sh"); then
  export LD_PRELOAD="${OPUSLM_TCMALLOC_LIB}" OPUSLM_TCMALLOC_LIB
fi
