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
