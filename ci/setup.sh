#!/usr/bin/env bash
# Sets up a Debian bookworm machine to build and test Tern: the Rust
# toolchain and targets pinned in rust-toolchain.toml (and the PC kernel's nightly,
# boards/pc/kernel-toolchain), QEMU >= 9 (from the
# bookworm-backports suite of the machine's own Debian mirror when the
# installed QEMU is older or missing), and the image tools. Idempotent:
# whatever is already there is skipped, so a second run changes nothing.
set -euo pipefail

log() { echo "setup: $*" >&2; }

# Runs a command as root (directly, or through sudo when not root).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        log "need root for: $*"
        return 1
    fi
}

# The Rust toolchain and targets named in rust-toolchain.toml.
setup_rust() {
    if ! command -v rustup >/dev/null; then
        log "rustup is required: see https://rustup.rs"
        return 1
    fi
    local targets missing=() installed
    targets=$(sed -n 's/^targets *= *\[\(.*\)\]/\1/p' rust-toolchain.toml | tr -d '",')
    # Installs the pinned toolchain with its components and targets if needed
    # (rustup >= 1.28 takes `toolchain install` with no name from the file;
    # older ones install it on `rustup show`).
    rustup toolchain install >/dev/null 2>&1 || rustup show >/dev/null
    installed=$(rustup target list --installed)
    for target in $targets; do
        grep -qx "$target" <<<"$installed" || missing+=("$target")
    done
    if ((${#missing[@]})); then
        log "adding rust targets ${missing[*]}"
        rustup target add "${missing[@]}"
    fi
    log "rust: $(rustc --version), targets:$targets"
    # The PC kernel's pinned nightly: its hard-float target is a custom one,
    # built with -Zbuild-std, so it needs the standard library's sources.
    local nightly
    nightly=$(tr -d '[:space:]' <boards/pc/kernel-toolchain)
    if ! rustup component list --toolchain "$nightly" --installed 2>/dev/null | grep -q '^rust-src'; then
        log "installing $nightly with rust-src (the PC kernel's toolchain)"
        rustup toolchain install "$nightly" --profile minimal --component rust-src
    fi
    log "pc kernel: $(rustup run "$nightly" rustc --version)"
}

# The major version of an installed QEMU program, or 0.
qemu_major() {
    local version
    version=$("$1" --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -n 1)
    echo "${version:-0}"
}

# Whether a Debian package is installed.
installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Prints the URIs and Signed-By of the machine's Debian source for suite $1,
# as "URI|KEYRING" lines, from deb822 .sources files and one-line .list files.
debian_sources() {
    local suite=$1 etc=${APT_ETC:-/etc/apt}
    local files=()
    for file in "$etc"/sources.list.d/*.sources; do
        if [[ -f $file ]]; then files+=("$file"); fi
    done
    if ((${#files[@]})); then
        awk -v suite="$suite" '
            function flush() {
                if (deb && has_suite) {
                    n = split(uris, list, " ")
                    for (i = 1; i <= n; i++) print list[i] "|" signed
                }
                deb = 0; has_suite = 0; uris = ""; signed = ""; enabled = 1
            }
            BEGIN { flush() }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has_suite = 1 }
            tolower($1) == "uris:" { $1 = ""; uris = $0 }
            tolower($1) == "signed-by:" { signed = $2 }
            tolower($1) == "enabled:" && tolower($2) == "no" { deb = 0 }
            END { flush() }
        ' "${files[@]}"
    fi
    for file in "$etc"/sources.list "$etc"/sources.list.d/*.list; do
        [[ -f $file ]] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -n 's/^[ \t]*deb[ \t]\+\(\[[^]]*\][ \t]\+\)\?\([^ \t]\+\)[ \t]\+\([^ \t]\+\).*/\2 \3/p' "$file" |
            while read -r uri dist; do
                if [[ $dist == "$suite" ]]; then echo "$uri|"; fi
            done
    done
    return 0
}

# Adds "<codename>-backports" next to the existing Debian source (same
# mirror and keyring) unless some source already provides it.
add_backports() {
    local codename=$1 etc=${APT_ETC:-/etc/apt}
    if [[ -n $(debian_sources "$codename-backports") ]]; then
        log "apt: $codename-backports already configured"
        return 0
    fi
    local source uri keyring
    source=$(debian_sources "$codename" | head -n 1)
    if [[ -z $source ]]; then
        log "no apt source for $codename found in $etc: cannot derive the mirror for $codename-backports"
        return 1
    fi
    uri=${source%%|*}
    keyring=${source#*|}
    log "apt: adding $codename-backports from $uri"
    {
        echo "Types: deb"
        echo "URIs: $uri"
        echo "Suites: $codename-backports"
        echo "Components: main"
        if [[ -n $keyring ]]; then echo "Signed-By: $keyring"; fi
    } | as_root tee "$etc/sources.list.d/$codename-backports.sources" >/dev/null
}

setup_packages() {
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    export DEBIAN_FRONTEND=noninteractive
    local updated=0
    apt_update() {
        if ((!updated)); then
            as_root apt-get update -q
            updated=1
        fi
    }

    local qemu_ok=1
    for program in qemu-system-aarch64 qemu-system-x86_64; do
        (($(qemu_major "$program") >= 9)) || qemu_ok=0
    done
    command -v qemu-aarch64 >/dev/null || qemu_ok=0
    if ((qemu_ok)); then
        log "qemu: $(qemu-system-aarch64 --version | head -n 1)"
    else
        if [[ -z $codename ]]; then
            log "QEMU >= 9 is missing and /etc/os-release names no Debian codename: install QEMU >= 9 by hand"
            return 1
        fi
        add_backports "$codename"
        apt_update
        log "apt: installing QEMU from $codename-backports"
        as_root apt-get install -y -q -t "$codename-backports" qemu-system-arm qemu-system-x86 qemu-user
    fi

    local missing=()
    # Image tools, the aarch64 Linux linker with its C library (crt files),
    # ip/tc/ping for the network tests, dnsmasq (the binary alone, no
    # service) as the LAN lab's DHCP server, OVMF (UEFI firmware) for the
    # PC's UEFI boot test, the headless browser and its WebDriver for the
    # controller's UI test, and clang with lld for the Wasm tasks written in
    # C (and their native reference builds).
    for package in dosfstools mtools grub-pc-bin grub-efi-amd64-bin grub-common xorriso gcc-aarch64-linux-gnu libc6-dev-arm64-cross iproute2 iputils-ping dnsmasq-base ovmf chromium chromium-driver clang-19 lld-19; do
        installed "$package" || missing+=("$package")
    done
    if ((${#missing[@]})); then
        apt_update
        log "apt: installing ${missing[*]}"
        as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        log "apt: image, cross-link, network, browser and Wasm C tools and OVMF already installed"
    fi
}

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    setup_rust
    setup_packages
}

# Sourcing the file (for its functions) does not run the set-up.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
