#!/usr/bin/env bash
# Builds target/debian/*.deb and target/generate-rpm/*.rpm.
# Needs cargo-deb and cargo-generate-rpm (see .ci/run for the versions CI installs).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked
bin=target/release/fb-openchannel
mkdir -p target/assets
"$bin" manpage | gzip -9n > target/assets/fb-openchannel.1.gz
"$bin" completions bash > target/assets/fb-openchannel.bash
"$bin" completions zsh > target/assets/_fb-openchannel
"$bin" completions fish > target/assets/fb-openchannel.fish

cargo deb --no-build --locked
cargo generate-rpm
ls -l target/debian/*.deb target/generate-rpm/*.rpm
