#!/usr/bin/env bash
# Installs the optional ESPnet extra (codec and SSL models) into the active Python environment
# without touching its torch.
#
# Why not `pip install espnet`: espnet pins setuptools<74 (torch 2.13 needs setuptools>=77.0.3)
# and an unconstrained resolver may replace a CPU torch with a multi-GB CUDA build. So espnet is
# installed with --no-deps, then its runtime requirements (read from the installed wheel's
# metadata) are installed with torch held at the version already present.
#
# Usage:  tools/install_espnet.sh                 # uses `python` on PATH (an activated venv)
#         PYTHON=/path/to/venv/bin/python tools/install_espnet.sh
#         ESPNET_VERSION=202511 tools/install_espnet.sh
# PIP may name a pip executable instead of PYTHON (its interpreter is then used for the checks).
set -euo pipefail

log() { echo "[install_espnet] $*"; }

ESPNET_VERSION=${ESPNET_VERSION:-202511}
if [ -n "${PIP:-}" ]; then
    PYTHON=${PYTHON:-$(dirname "$(command -v "${PIP}")")/python}
else
    PYTHON=${PYTHON:-python}
fi
pip_install() { "${PYTHON}" -m pip install --disable-pip-version-check "$@"; }

torch_before=$("${PYTHON}" -c 'import torch; print(torch.__version__)') || {
    log "error: torch is not importable by ${PYTHON}; install torch first (see tools/requirements-cpu.txt)"
    exit 1
}
log "python: ${PYTHON}; torch ${torch_before} (kept unchanged)"

workdir=$(mktemp -d)
trap 'rm -rf "${workdir}"' EXIT
# The constraint holds torch where it is for every resolver run below.
echo "torch==${torch_before}" >"${workdir}/constraints.txt"

log "installing espnet==${ESPNET_VERSION} without dependencies"
pip_install --no-deps "espnet==${ESPNET_VERSION}"

# Runtime requirements from the wheel's metadata (no extras), with three overrides:
#   torch                 already installed, held by the constraint
#   setuptools<74         conflicts with torch >= 2.13 -> setuptools>=77.0.3,<81
#   sentencepiece==0.2.0  an exact pin for no API reason; any 0.2.x keeps the installed one
#   importlib-metadata<5  a backport for Python < 3.10; an old copy shadows the stdlib for others
"${PYTHON}" - >"${workdir}/requirements.txt" <<'EOF'
import importlib.metadata as md
import re

overrides = {
    "torch": None,
    "setuptools": "setuptools>=77.0.3,<81",
    "sentencepiece": "sentencepiece>=0.2.0,<0.3",
    "importlib-metadata": None,
}
for requirement in md.requires("espnet") or []:
    if "extra ==" in requirement:
        continue
    name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip()
    key = name.lower().replace("_", "-")
    if key in overrides:
        if overrides[key]:
            print(overrides[key])
        continue
    print(requirement)
EOF
log "runtime requirements: $(tr '\n' ' ' <"${workdir}/requirements.txt")"
pip_install -c "${workdir}/constraints.txt" -r "${workdir}/requirements.txt"

# espnet2's gan_codec and SSL frontends import torchaudio (for its Spectrogram/MelSpectrogram
# transforms), which espnet does not declare. PyPI's Linux torchaudio wheels are built against a
# CUDA torch: their C++ extension fails to load beside a CPU torch. torchaudio imports as pure
# Python when its extension libraries are absent, and the transforms need nothing else, so in
# that case the libraries are removed (torchaudio's own I/O, alignment and RNN-T ops then fail).
if ! "${PYTHON}" -c 'import torchaudio' 2>/dev/null; then
    log "installing torchaudio without dependencies"
    pip_install --no-deps torchaudio
    if ! "${PYTHON}" -c 'import torchaudio' 2>"${workdir}/torchaudio.err"; then
        ta_lib=$("${PYTHON}" -c 'import importlib.util as u, pathlib as p; print(p.Path(u.find_spec("torchaudio").origin).parent / "lib")')
        log "torchaudio's C++ extension does not load with torch ${torch_before}:"
        tail -n 1 "${workdir}/torchaudio.err"
        log "removing ${ta_lib}/*.so: torchaudio runs as pure Python (transforms only)"
        rm -f "${ta_lib}"/*.so
        "${PYTHON}" -c 'import torchaudio.transforms'
    fi
fi

torch_after=$("${PYTHON}" -c 'import torch; print(torch.__version__)')
if [ "${torch_after}" != "${torch_before}" ]; then
    log "error: torch changed from ${torch_before} to ${torch_after}; reinstall torch==${torch_before}"
    exit 1
fi
"${PYTHON}" -c 'import espnet, espnet2.tasks.gan_codec; print("espnet", espnet.__version__)'
log "done: espnet ${ESPNET_VERSION} installed, torch ${torch_after} unchanged"
