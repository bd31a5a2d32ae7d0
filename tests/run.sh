#!/usr/bin/env bash
# The test command: the whole suite, unit and end-to-end, as CI runs it.
# The end-to-end tests start real HAProxy, sshd and Redis on loopback; the Debian
# packages are installed here when missing (with CI=true a missing server
# fails its test instead of skipping it).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for bin in /usr/sbin/haproxy:haproxy /usr/sbin/sshd:openssh-server /usr/bin/ssh:openssh-client /usr/bin/curl:curl /usr/bin/redis-server:redis-server /usr/bin/redis-cli:redis-tools /usr/bin/python3:python3 /usr/bin/script:bsdutils; do
    [ -x "${bin%%:*}" ] || need+=("${bin##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} for the real-server tests"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q || true
    $sudo apt-get install -y -q --no-install-recommends "${need[@]}" \
        || echo "warning: could not install ${need[*]}; the real-server tests will skip (or fail under CI=true)"
fi

# The book (docs/): mdbook from crates.io when it is missing, then a build, so
# a page that mdbook cannot read fails here. Internal links are checked by the
# e2e test `links`. Only the `search` feature: `serve` and `watch` are for
# writing the book, not for building it.
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"
if ! command -v mdbook >/dev/null; then
    echo "installing mdbook from crates.io to build the book"
    cargo install mdbook --version 0.5.4 --locked --no-default-features --features search
fi
mdbook build docs

cargo build --release --bin pitcrew
cargo test --workspace --release
