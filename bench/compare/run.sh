#!/bin/sh
# Side-by-side benchmark: a rolling patch of N local hosts by pitcrew (shell
# adapter), ansible-playbook (connection local) and a plain shell loop.
#
#   bench/compare/run.sh [N...]        default: 10 50 200
#
# Environment:
#   PITCREW_BIN            pitcrew binary (default: target/release/pitcrew in the repository)
#   PITCREW_BENCH_VENV     virtualenv for ansible-core (default: ~/.cache/pitcrew-bench/venv)
#   PITCREW_BENCH_ANSIBLE  pip requirement to install there (default: ansible-core)
#   PITCREW_BENCH_TOOLS    subset of shell,pitcrew,ansible (default: all three)
#   PITCREW_BENCH_MODES    subset of serial,batch (default: both)
#   PITCREW_BENCH_TIMEOUT  seconds allowed for one tool run (default: 3600)
#   PITCREW_BENCH_KEEP=1   keep the scratch directory (its path is printed)
#   TMPDIR                 where the scratch directory is made (default: /tmp)
#
# Nothing is written inside the repository. See bench/compare/README.md.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

# A relative PITCREW_BIN is taken from where run.sh was started.
bin=${PITCREW_BIN:-$root/target/release/pitcrew}
case $bin in
    /*) ;;
    */*) bin=$(pwd)/$bin ;;
    *) bin=$(command -v "$bin" || echo "$bin") ;;
esac

venv=${PITCREW_BENCH_VENV:-${HOME:?}/.cache/pitcrew-bench/venv}
tools=${PITCREW_BENCH_TOOLS:-shell,pitcrew,ansible}

for n in "$@"; do
    case $n in
        '' | *[!0-9]* | 0) echo "run.sh: N must be a positive integer, not '$n'" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || set -- 10 50 200

command -v python3 >/dev/null || { echo "run.sh: python3 is needed" >&2; exit 2; }

case ",$tools," in
    *,ansible,*)
        if [ ! -x "$venv/bin/ansible-playbook" ]; then
            echo "installing ${PITCREW_BENCH_ANSIBLE:-ansible-core} into $venv (needs PyPI) ..." >&2
            mkdir -p "$(dirname "$venv")"
            if ! { python3 -m venv "$venv" &&
                "$venv/bin/pip" install -q --disable-pip-version-check "${PITCREW_BENCH_ANSIBLE:-ansible-core}"; }
            then
                echo "run.sh: installing Ansible failed; its runs will be reported as failed" >&2
            fi
        fi
        ;;
esac

[ -x "$bin" ] || echo "run.sh: no pitcrew binary at $bin (cargo build --release, or set PITCREW_BIN); its runs will be reported as failed" >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/pitcrew-bench.XXXXXX")
cleanup() {
    if [ "${PITCREW_BENCH_KEEP:-0}" = 1 ]; then
        echo "scratch directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "scratch directory: $work" >&2

python3 "$here/compare.py" \
    --work "$work" \
    --pitcrew "$bin" \
    --playbook "$here/rolling.rhai" \
    --venv "$venv" \
    --tools "$tools" \
    --modes "${PITCREW_BENCH_MODES:-serial,batch}" \
    --timeout "${PITCREW_BENCH_TIMEOUT:-3600}" \
    "$@"
