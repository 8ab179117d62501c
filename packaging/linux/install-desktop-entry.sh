#!/usr/bin/env sh
# Adds localr1 to the desktop's application launcher (per user, no root needed).
# Run after installing the `localr1` command (pipx install . / uv tool install .).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
install -Dm644 "$here/localr1.desktop" "$data/applications/localr1.desktop"
install -Dm644 "$here/localr1.svg" "$data/icons/hicolor/scalable/apps/localr1.svg"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q "$data/icons/hicolor" || true
command -v localr1 >/dev/null 2>&1 || echo "note: localr1 is not on PATH; the launcher entry runs 'localr1 chat'" >&2
echo "installed $data/applications/localr1.desktop"
