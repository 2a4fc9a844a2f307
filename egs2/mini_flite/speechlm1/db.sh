# Sourced by local/data.sh: where the corpus text is on this machine.
# Debian's `fortunes` package (make install); any plain-text files or directories of them work.
FORTUNES=${FORTUNES:-/usr/share/games/fortunes}
