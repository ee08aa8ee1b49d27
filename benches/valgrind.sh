# Sourced by the callgrind counters of benches/: installs valgrind if missing.
if ! command -v valgrind >/dev/null 2>&1; then
  echo "installing valgrind"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind
fi
