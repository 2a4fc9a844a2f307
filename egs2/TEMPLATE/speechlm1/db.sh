# Sourced by local/data.sh: where the corpora are on this machine. Leave empty what you lack;
# a recipe that needs an empty entry stops and says which one to set.
LIBRISPEECH=${LIBRISPEECH:-}
# Text for the mini_flite corpus (Debian's `fortunes` package; any plain-text files work).
FORTUNES=${FORTUNES:-/usr/share/games/fortunes}
