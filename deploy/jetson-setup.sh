#!/usr/bin/env bash
# Prepare a Jetson for edgecl: power mode, clocks, swap, service user and systemd unit.
# Safe to run again: every step checks what is already there.
#
# Usage: sudo deploy/jetson-setup.sh [-m POWER_MODE] [-s SWAP_SIZE] [-f SWAP_FILE] [-C] [-U]
#   -m POWER_MODE  nvpmodel mode id (default 0, MAXN on most modules; list: nvpmodel -p --verbose)
#   -s SWAP_SIZE   swap file size with its unit, e.g. 8G or 4096M (default 8G; 0 skips). Fine-tuning on
#                  a Jetson is killed by the OOM killer without swap on 4-8 GB modules.
#   -f SWAP_FILE   swap file, an absolute path without blanks (default /swapfile)
#   -C             do not run jetson_clocks (keep dynamic clocks)
#   -U             do not install the systemd unit
set -euo pipefail

POWER_MODE=0
SWAP_SIZE=8G
SWAP_FILE=/swapfile
RUN_CLOCKS=1
INSTALL_UNIT=1
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SERVICE_USER=edgecl
VENV_DIR=/opt/edgecl/venv

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "jetson-setup: error: $*" >&2
    exit 2
}

log() {
    echo "jetson-setup: $*"
}

parse_args() {
    while getopts ":m:s:f:CUh" opt; do
        case "$opt" in
            m) POWER_MODE="$OPTARG" ;;
            s) SWAP_SIZE="$OPTARG" ;;
            f) SWAP_FILE="$OPTARG" ;;
            C) RUN_CLOCKS=0 ;;
            U) INSTALL_UNIT=0 ;;
            h) usage; exit 0 ;;
            :) die "option -$OPTARG needs a value" ;;
            *) die "unknown option -$OPTARG (see -h)" ;;
        esac
    done
    shift $((OPTIND - 1))
    # getopts stops at the first word that is no option: every option after it was ignored
    [[ $# -eq 0 ]] || die "unexpected argument '$1': every value follows its option (see -h)"
    [[ "$POWER_MODE" =~ ^[0-9]+$ ]] || die "power mode must be a number, got '$POWER_MODE'"
    # a unit is required: fallocate reads a bare number as bytes ('-s 4096' meant as MiB made a
    # 4 KiB file that mkswap refused)
    [[ "$SWAP_SIZE" =~ ^([0-9]+[KMG]|0+)$ ]] || die "swap size must look like 8G or 4096M (a unit: K, M or G; 0 skips), got '$SWAP_SIZE'"
    # /etc/fstab separates its fields by blanks: a path holding one writes a broken line
    [[ "$SWAP_FILE" =~ ^/[^[:space:]]*$ ]] || die "swap file must be an absolute path without blanks, got '$SWAP_FILE'"
}

check_platform() {
    [[ "$(id -u)" -eq 0 ]] || die "run as root (sudo $0)"
    [[ -f /etc/nv_tegra_release ]] || die "/etc/nv_tegra_release not found: this is not a Jetson (L4T)"
    log "L4T: $(head -n 1 /etc/nv_tegra_release)"
}

set_power_mode() {
    command -v nvpmodel >/dev/null || die "nvpmodel not found (is JetPack installed?)"
    local current
    current="$(nvpmodel -q 2>/dev/null | tail -n 1 || true)"
    if [[ "$current" == "$POWER_MODE" ]]; then
        log "power mode already $POWER_MODE"
        return
    fi
    log "setting power mode $POWER_MODE (was '${current:-unknown}')"
    # Some modes ask to reboot interactively; answer no, the new mode applies after the next boot.
    echo no | nvpmodel -m "$POWER_MODE" || die "nvpmodel -m $POWER_MODE failed (list modes: nvpmodel -p --verbose)"
}

lock_clocks() {
    if [[ "$RUN_CLOCKS" -eq 0 ]]; then
        log "leaving clocks dynamic (-C)"
        return
    fi
    command -v jetson_clocks >/dev/null || die "jetson_clocks not found (is JetPack installed?)"
    log "locking clocks at their maximum (jetson_clocks; lasts until reboot)"
    jetson_clocks
}

make_swap_file() {
    # Made beside its final name and moved there once formatted: a run stopped half-way (power
    # cut, Ctrl-C, a full disk) leaves no unformatted file that the next run would take as done.
    local tmp="$SWAP_FILE.edgecl-tmp"
    rm -f "$tmp"
    log "creating $SWAP_SIZE swap file $SWAP_FILE"
    fallocate -l "$SWAP_SIZE" "$tmp" || { rm -f "$tmp"; die "cannot create a $SWAP_SIZE file at $tmp (free space: df -h $(dirname "$SWAP_FILE"))"; }
    chmod 600 "$tmp"
    mkswap "$tmp" >/dev/null
    mv "$tmp" "$SWAP_FILE"
}

setup_swap() {
    if [[ "$SWAP_SIZE" =~ ^0+[KMG]?$ ]]; then
        log "no swap file requested"
        return
    fi
    # the active swap areas as the kernel names them (absolute, symlinks resolved)
    SWAP_FILE="$(realpath -m "$SWAP_FILE")"
    if swapon --show=NAME --noheadings | grep -qxF "$SWAP_FILE"; then
        log "swap file $SWAP_FILE already active"
    else
        if [[ ! -e "$SWAP_FILE" ]]; then
            make_swap_file
        fi
        # an existing file is never deleted here (a mistyped -f would name someone's file)
        swapon "$SWAP_FILE" || die "swapon $SWAP_FILE failed (see above); if it is not a swap file, remove it or give another path with -f"
    fi
    if ! swap_in_fstab "$SWAP_FILE"; then
        log "adding $SWAP_FILE to /etc/fstab"
        printf '%s none swap sw 0 0\n' "$SWAP_FILE" >> /etc/fstab
    fi
}

# True when /etc/fstab has a swap line for the file $1 (already resolved), under any path that
# resolves to it: a line written through a symlink by an earlier run counts.
swap_in_fstab() {
    local device _mount type _rest
    while read -r device _mount type _rest; do
        [[ -z "$device" || "$device" == \#* || "$type" != "swap" ]] && continue
        [[ "$(realpath -m -- "$device" 2>/dev/null)" == "$1" ]] && return 0
    done < /etc/fstab
    return 1
}

install_unit() {
    if [[ "$INSTALL_UNIT" -eq 0 ]]; then
        log "skipping the systemd unit (-U)"
        return
    fi
    if ! id "$SERVICE_USER" >/dev/null 2>&1; then
        log "creating system user $SERVICE_USER"
        useradd --system --home-dir /var/lib/edgecl --no-create-home --shell /usr/sbin/nologin \
            --groups video "$SERVICE_USER"
    fi
    install -d -m 0755 /etc/edgecl
    if [[ ! -f /etc/edgecl/edgecl.yaml ]]; then
        # readable by the service, not by every user: it may hold server.token and fleet.token
        install -m 0640 -o root -g "$SERVICE_USER" "$SCRIPT_DIR/edgecl.yaml" /etc/edgecl/edgecl.yaml
        log "installed /etc/edgecl/edgecl.yaml (edit source.uri and model.path)"
    else
        # one an earlier run installed world-readable: the same access as a new one
        chgrp "$SERVICE_USER" /etc/edgecl/edgecl.yaml
        chmod o-rwx,g+r /etc/edgecl/edgecl.yaml
    fi
    install -m 0644 "$SCRIPT_DIR/edgecl.service" /etc/systemd/system/edgecl.service
    systemctl daemon-reload
    systemctl enable edgecl.service
    if [[ ! -x "$VENV_DIR/bin/edgecl" ]]; then
        log "note: $VENV_DIR/bin/edgecl is missing; install edgecl there before starting (deploy/README.md)"
    fi
    log "start with: systemctl start edgecl   (logs: journalctl -u edgecl -f)"
}

main() {
    parse_args "$@"
    check_platform
    set_power_mode
    lock_clocks
    setup_swap
    install_unit
    log "done"
}

main "$@"
