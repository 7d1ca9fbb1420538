# Shared by scripts/*: run as root or through sudo, install missing Debian packages.
# shellcheck shell=bash

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_apt PKG...: installs the packages that are not installed yet (apt-get update once, only if needed).
ensure_apt() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing: ${missing[*]}" >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# The Debian packages sinkd needs to build: libsystemd (the CSystemd target) and pkg-config to find it.
BUILD_PACKAGES=(libsystemd-dev zlib1g-dev pkg-config)

# ensure_pip MODULE=REQUIREMENT...: pip-installs each requirement whose Python module does not
# import yet (e.g. moto=moto[server]). Uses the python3 on PATH (and its pip).
ensure_pip() {
    local missing=()
    for pair in "$@"; do
        python3 -c "import ${pair%%=*}" 2>/dev/null || missing+=("${pair#*=}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing (pip): ${missing[*]}" >&2
        python3 -m pip install --quiet "${missing[@]}" 2>/dev/null \
            || python3 -m pip install --quiet --break-system-packages "${missing[@]}"
    fi
}
