#!/bin/sh
# SPDX-License-Identifier: MIT
# install-config.sh FILE DIR: meson's install step for the configuration.
# Copies FILE into $DESTDIR/DIR with mode 0644 unless a file of that name is
# already there (an admin's edits survive a reinstall), and says which.
set -eu
src=$1
dir=${DESTDIR:-}$2
dest=$dir/$(basename "$src")
if [ -e "$dest" ]; then
    echo "Keeping $dest (already there; the defaults are in $src)"
    exit 0
fi
mkdir -p "$dir"
install -m 0644 "$src" "$dest"
echo "Installing $src to $dir"
