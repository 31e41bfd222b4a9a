#!/usr/bin/env bash
# Install the Debian 12 packages nidag needs to build, test and fuzz.
#
# Idempotent: each package is checked with dpkg-query and only the missing
# ones are installed. When everything is present it prints one line and does
# nothing else (no apt-get update, no root needed). Installing needs root,
# either directly or through sudo.
set -euo pipefail

# Package -> why nidag needs it (README.md lists the same).
PACKAGES=(
  build-essential     # gcc, make, libc headers
  cmake               # the build
  pkg-config          # finds xxhash, lmdb, openblas, lapacke, cmocka
  clang               # libFuzzer targets (NIDAG_FUZZ=ON)
  libclang-rt-14-dev  # clang's sanitizer and libFuzzer runtimes
  libxxhash-dev       # XXH3-128 content keys and checksums
  liblmdb-dev         # the result cache store
  libzstd-dev         # cache value compression
  libnifti2-dev       # NIfTI-1/NIfTI-2 image I/O (nifti_clib)
  libopenblas-dev     # BLAS for models and connectivity
  liblapacke-dev      # LAPACK C interface for decompositions
  libcmocka-dev       # unit-test framework
  mricron-data        # real atlases (AAL, HarvardOxford, Brodmann, AICHA, JHU) for the neuro tests and the demo
  gnuplot-nox         # the demo's plot of the strategies (strategies.svg)
)

is_installed() {
  local status
  status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) || return 1
  [[ "$status" == "installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} required packages are already installed"
  exit 0
fi

echo "setup: missing packages: ${missing[*]}"

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup: error: installing packages needs root, and sudo is not available." >&2
  echo "setup: run as root: apt-get install --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# env keeps DEBIAN_FRONTEND even where sudo resets the environment.
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"

# Check that apt really delivered every package.
still=()
for pkg in "${missing[@]}"; do
  is_installed "$pkg" || still+=("$pkg")
done
if ((${#still[@]} > 0)); then
  echo "setup: error: still missing after apt-get install: ${still[*]}" >&2
  exit 1
fi
echo "setup: installed ${#missing[@]} package(s): ${missing[*]}"
