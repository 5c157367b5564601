#!/usr/bin/env bash
# Runs a command with an X display: the current one, or a virtual one (Xvfb) when there is none.
# GL widgets need a real GL context; Qt's offscreen platform has none.
set -euo pipefail
if [ -n "${DISPLAY:-}" ] && command -v xdpyinfo >/dev/null 2>&1 && xdpyinfo >/dev/null 2>&1; then
  exec "$@"
fi
if command -v xvfb-run >/dev/null 2>&1; then
  exec xvfb-run -a -s "-screen 0 1600x1000x24 +extension GLX +render -noreset" "$@"
fi
echo "with-display: no display and no xvfb-run; GL tests will be skipped (install xvfb)" >&2
exec "$@"
