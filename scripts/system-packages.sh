#!/usr/bin/env bash
# Debian packages the report needs: Chromium (the report's browser test) and
# FluidSynth with the FluidR3 General MIDI soundfont (audio in the report).
# Installed only when missing, and only where we may (root); otherwise the
# report falls back to plain synthesis and the browser test is skipped.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v fluidsynth >/dev/null || need+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "note: install ${need[*]} (apt-get) for audio with a soundfont and the browser test" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
