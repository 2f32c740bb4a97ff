#!/usr/bin/env bash
# Installs the Debian packages pianosynth needs, when they are missing:
#   fluidsynth + fluid-soundfont-gm  renders the reference audio (FluidR3_GM, "Yamaha Grand Piano")
#   musescore-general-soundfont      a second grand piano, a baseline of `pianosynth evaluate`
#   python3-venv                     Debian's python3 cannot make a virtualenv without it
#   EXTRA_DEBIAN_PACKAGES            more, e.g. chromium for the listening-page browser test
# Runs apt-get as root, or through sudo when that needs no password; otherwise it prints the one
# command the user should run, and fails.
# With the argument "venv", only python3-venv (what `make demo` needs: rendering uses no FluidSynth).
set -euo pipefail
PYTHON=${PYTHON:-python3}
need=()
if [ "${1:-all}" != venv ]; then
  command -v fluidsynth >/dev/null 2>&1 || need+=(fluidsynth)
  [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
  [ -f /usr/share/sounds/sf3/MuseScore_General.sf3 ] || need+=(musescore-general-soundfont)
fi
"$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
for pkg in ${EXTRA_DEBIAN_PACKAGES:-}; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "pianosynth needs Debian packages that are missing: run 'sudo apt-get install ${need[*]}' and try again" >&2
  exit 1
fi
echo "installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
