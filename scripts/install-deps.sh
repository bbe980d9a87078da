#!/usr/bin/env bash
# Installs what building and testing Tally needs, only when it is missing:
#   libclang-dev  (bindgen, for the rocksdb crate's C++ bindings)
#   g++, make     (RocksDB's C++)
#   python3 + cryptography (independent check of the transaction test vectors)
#   cargo-nextest (test runner)
# Prints what it installs; does nothing when everything is present.
set -euo pipefail

need_apt=()
have_libclang() {
    # libclang itself (what bindgen loads), not libclang-cpp, which a bare clang install brings.
    local f
    for f in /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*-linux-gnu/libclang*.so*; do
        case "$f" in
            *libclang-cpp*) ;;
            *) [ -e "$f" ] && return 0 ;;
        esac
    done
    return 1
}
have_libclang || need_apt+=(libclang-dev)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
for pkg in "$@"; do
    # Extra packages a target asks for, given as "command:package".
    cmd=${pkg%%:*}; deb=${pkg#*:}
    command -v "$cmd" >/dev/null || need_apt+=("$deb")
done

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "install-deps: installing ${need_apt[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import cryptography' 2>/dev/null; then
    echo "install-deps: installing the python cryptography package"
    python3 -m pip install --quiet cryptography
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "install-deps: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
