#!/usr/bin/env bash
# .ci/get-python.sh VERSION...      e.g.  bash .ci/get-python.sh 3.11 3.14
#
# Make `pythonVERSION` answer on the PATH, on a Debian 12 (amd64) machine with
# root, the kind pysmtpd's CI runs on.  Prints one line per version, saying
# which interpreter answers; does nothing else when it already answers.
#
# Where a version comes from:
#   * pyenv, when pyenv has it installed (3.11, 3.12 and 3.13 on the CI
#     machine).  pyenv's shims run only the versions named in `pyenv global`,
#     so the version is added there.
#   * the host's own apt, when its suites have the version (3.11 on Debian
#     12): python3.11 with its venv module and its test package.
#   * otherwise Debian's archive: Debian 12 has no 3.12 and later, so the
#     packages come from Debian unstable, which needs a newer glibc than the
#     host's.  They are downloaded through an apt of their own (the host's
#     package database is not touched), unpacked under $PYSMTPD_PYTHONS
#     (/opt/pysmtpd-pythons), and the interpreter is patched to load that
#     tree's own loader and libraries.  CPython's `test` package comes too:
#     the conformance gate runs CPython's test_smtpd.py, which imports it.
#     `pythonX.Y` in /usr/local/bin points at the result.
set -euo pipefail

prefix="${PYSMTPD_PYTHONS:-/opt/pysmtpd-pythons}"
bindir=/usr/local/bin
suite=unstable

answers() {   # answers VERSION: pythonVERSION runs, with CPython's test package (the
             # conformance gate needs test.support and test.mock_socket)
  "python$1" -c 'import ssl, sqlite3, venv, ensurepip, test.support, test.mock_socket' >/dev/null 2>&1
}

report() {    # report VERSION WHERE
  printf 'python%s: %s (%s)\n' "$1" "$("python$1" -c 'import sys; print(sys.executable)')" "$2"
}

from_pyenv() {   # from_pyenv VERSION: expose pyenv's newest X.Y.Z; fails if it has none
  command -v pyenv >/dev/null 2>&1 || return 1
  local full
  full="$(pyenv versions --bare --skip-aliases 2>/dev/null \
          | grep -E "^${1//./\\.}\.[0-9]+$" | sort -V | tail -n 1)" || true
  [[ -n "$full" ]] || return 1
  local global
  global="$(pyenv global | paste -sd ' ')"
  case " $global " in
    *" $full "*) ;;
    *) pyenv global $global "$full" ;;   # word splitting wanted: one name per word
  esac
  pyenv rehash
  report "$1" "pyenv $full"
}

has_candidates() {   # has_candidates PACKAGE...: the host's apt can install them all
  local package
  for package in "$@"; do
    # Not grep -q: under pipefail, apt-cache's SIGPIPE would count as a failure.
    apt-cache policy "$package" 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null || return 1
  done
}

from_host_apt() {   # from_host_apt VERSION: fails if the host's suites lack it
  local packages=("python$1" "python$1-venv" "libpython$1-testsuite")
  command -v apt-get >/dev/null 2>&1 || return 1
  has_candidates "${packages[@]}" || { apt-get update -qq && has_candidates "${packages[@]}"; } \
    || return 1
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  answers "$1" || return 1
  report "$1" "the host's apt"
}

debian_mirror() {   # the archive the host's apt already uses
  local uri
  uri="$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null)" || true
  [[ -n "$uri" ]] || uri="$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)" || true
  [[ -n "$uri" ]] || { echo "get-python.sh: no Debian archive in the apt sources" >&2; return 1; }
  printf '%s\n' "$uri"
}

from_debian() {   # from_debian VERSION
  local version="$1" tree="$prefix/$1"
  local python="$tree/usr/bin/python$1" libs="$tree/usr/lib/x86_64-linux-gnu"
  if [[ ! -f "$tree/.complete" ]]; then
    [[ "$(dpkg --print-architecture)" == amd64 ]] \
      || { echo "get-python.sh: only amd64 is supported" >&2; return 1; }
    command -v patchelf >/dev/null || {
      apt-get update -qq && apt-get install -y -qq --no-install-recommends patchelf >/dev/null; }

    # An apt of our own: its sources, lists, status and cache live under $prefix.
    local apt="$prefix/apt"
    mkdir -p "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/parts"
    : > "$apt/status"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
      "$(debian_mirror)" "$suite" > "$apt/sources.list"
    local options=(
      -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
      -o "Dir::Etc::PreferencesParts=$apt/parts" -o "Dir::State=$apt/state"
      -o "Dir::State::status=$apt/status" -o "Dir::Cache=$apt/cache"
      -o APT::Install-Recommends=false -o Debug::NoLocking=1 -o APT::Sandbox::User=root
      -qq)
    apt-get "${options[@]}" update
    rm -f "$apt/cache/archives/"*.deb
    apt-get "${options[@]}" install -y --download-only \
      "python$version" "python$version-venv" "python$version-dev" \
      "libpython$version-testsuite" >/dev/null

    # Unpack beside the final place and move it there only when it works, so
    # that an interrupted run leaves nothing half-made behind.
    local staging="$tree.partial"
    rm -rf "$staging" && mkdir -p "$staging"
    local deb
    for deb in "$apt/cache/archives/"*.deb; do dpkg-deb -x "$deb" "$staging"; done
    rm -rf "$apt/cache" "$apt/state/lists"   # keep only the unpacked tree

    # The paths written into the binary are the final ones.
    patchelf --set-interpreter "$libs/ld-linux-x86-64.so.2" \
      --force-rpath --set-rpath "$libs" "$staging/usr/bin/python$version"
    # Debian's ensurepip takes pip's wheel from /usr/share/python-wheels, which
    # the host doesn't have for this version: point it at the tree's own.
    local sysconfigdata
    for sysconfigdata in "$staging/usr/lib/python$version/"_sysconfigdata_*.py; do
      [[ -L "$sysconfigdata" ]] && continue
      sed -i "s|'WHEEL_PKG_DIR': '[^']*'|'WHEEL_PKG_DIR': '$tree/usr/share/python-wheels'|" \
        "$sysconfigdata"
    done
    # Debian's pyconfig.h includes a multiarch header by a system path, which
    # is not the tree's: make the include relative, for C extensions.
    if [[ -f "$staging/usr/include/python$version/pyconfig.h" ]]; then
      printf '#include "../x86_64-linux-gnu/python%s/pyconfig.h"\n' "$version" \
        > "$staging/usr/include/python$version/pyconfig.h"
    fi
    find "$staging/usr/lib" -name '*.a' -delete   # static libraries: unused, 45 MB

    rm -rf "$tree" && mv "$staging" "$tree"
    "$python" -m compileall -q "$tree/usr/lib/python$version" >/dev/null 2>&1 || true
    touch "$tree/.complete"
  fi
  mkdir -p "$bindir"
  ln -sfn "$python" "$bindir/python$version"
  answers "$version" \
    || { echo "get-python.sh: python$version from Debian does not work" >&2; return 1; }
  report "$version" "Debian $suite"
}

[[ $# -gt 0 ]] || { echo "usage: get-python.sh VERSION..." >&2; exit 2; }
for version in "$@"; do
  [[ "$version" =~ ^3\.[0-9]+$ ]] || { echo "get-python.sh: not a version: $version" >&2; exit 2; }
  if answers "$version"; then
    report "$version" "already there"
  else
    from_pyenv "$version" || from_host_apt "$version" || from_debian "$version"
  fi
done
