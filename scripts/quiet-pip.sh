#!/usr/bin/env bash
# Run a pip command (given with -q) without pip's "Location '...' is ignored" warnings, which
# name package-index folders that do not exist on this machine and say nothing about the install.
# Everything else pip prints is kept, and so is its exit status.
"$@" 2>&1 | grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$"
exit "${PIPESTATUS[0]}"
