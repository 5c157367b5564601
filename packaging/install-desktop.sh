#!/usr/bin/env bash
# Registers Handles Studio with the desktop for the current user: menu entry, icon, .handles MIME type.
# Run after `make run` has created .venv (the launcher points at this checkout's environment).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/scalable/apps"
mime="${XDG_DATA_HOME:-$HOME/.local/share}/mime"
mkdir -p "$apps" "$icons" "$mime/packages"
sed "s|^Exec=.*|Exec=$here/.venv/bin/handles-studio %F|" "$here/packaging/handles-studio.desktop" > "$apps/handles-studio.desktop"
cp "$here/resources/icons/handles-studio.svg" "$icons/handles-studio.svg"
cp "$here/packaging/handles-studio-mime.xml" "$mime/packages/handles-studio.xml"
command -v update-mime-database >/dev/null && update-mime-database "$mime" || true
command -v update-desktop-database >/dev/null && update-desktop-database "$apps" || true
echo "Installed the Handles Studio desktop entry into $apps"
