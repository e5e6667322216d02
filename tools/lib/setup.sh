# Shared set-up for tools/test, tools/demo and benchmarks: sourced, not run.
# Installs what is missing (Debian 12, as root) and finds the repo.

set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="/opt/swift/usr/bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Debian packages the project needs at build and run time.
VNSNAP_APT_PACKAGES=(qemu-system-x86 qemu-utils libsodium-dev libzstd-dev pkg-config busybox-static cpio nftables conntrack iproute2 procps libsqlite3-dev zstd python3 python3-prometheus-client)

ensure_packages() {
    local missing=()
    for pkg in "${VNSNAP_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        [[ $(id -u) == 0 ]] || die "missing packages ${missing[*]}; run as root to install them"
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    command -v swift >/dev/null || die "swift not found (expected in /opt/swift/usr/bin)"
}

ensure_guest() {
    export VNSNAP_GUEST_DIR="${VNSNAP_GUEST_DIR:-$REPO/.guest}"
    "$REPO/tools/guest-build"
}
