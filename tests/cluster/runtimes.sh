#!/usr/bin/env bash
# Container runtimes for the sandbox, sourced by tests/cluster/sandbox (which defines log, die
# and set -euo pipefail). Defining things is all that happens at source time.
#
#   ensure_enroot_pyxis VENDOR_DIR CACHE_DIR  build enroot + pyxis from VENDOR_DIR's tarballs
#                                             (cached in CACHE_DIR by their sha256), install
#                                             enroot into /usr/local, print spank_pyxis.so's path
#   ensure_podman                             install Debian's podman (rootful); prints nothing
#
# Run directly (as root) it builds, installs and prints what it got:
#   tests/cluster/runtimes.sh [VENDOR_DIR [CACHE_DIR]]
#
# Callers use so=$(ensure_enroot_pyxis ...), where bash turns errexit off, so every step
# that matters carries its own `|| die`.

# shellcheck disable=SC2015  # `A && B || die` is meant: die when any step fails
readonly RT_ENROOT_VERSION=4.1.2
readonly RT_RECIPE=1  # part of the cache key: bump it when the build steps below change
readonly RT_BUILD_PACKAGES=(build-essential makeself libslurm-dev libbsd-dev squashfs-tools jq
    parallel zstd libcap2-bin pigz curl)
readonly RT_LIBBSD_SO=/usr/lib/x86_64-linux-gnu/libbsd.so

# Installs those of PKG... that are missing, with their services kept from starting.
rt_apt_install() {
    local missing=() pkg policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
    ((own_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${missing[*]} failed"
}

# Prints the one file matching DIR/NAME-*.tar.gz.
rt_tarball() {
    local found=("$1/$2"-*.tar.gz)
    ((${#found[@]} == 1)) && [[ -f ${found[0]} ]] || die "want exactly one $2-*.tar.gz in $1"
    printf '%s' "${found[0]}"
}

# Builds enroot (installed into OUT/root, a tree to copy onto /) and OUT/spank_pyxis.so.
rt_build() {
    local enroot_tar=$1 pyxis_tar=$2 out=$3 e=$3/enroot-src p=$3/pyxis-src
    mkdir -p "$e" "$p" || die "mkdir $out failed"
    tar -xzf "$enroot_tar" -C "$e" --strip-components=1 || die "unpacking $enroot_tar failed"
    tar -xzf "$pyxis_tar" -C "$p" --strip-components=1 || die "unpacking $pyxis_tar failed"
    # The tarball lacks enroot's submodules (musl, makeself, linux-headers): build against
    # glibc, with Debian's makeself, and strlcpy/strlcat from libbsd (glibc 2.36 has neither;
    # a plain -lbsd would find enroot's own partial libbsd.a first). GIT_DIR keeps the
    # Makefile's `git submodule update` away from any repository around OUT.
    mkdir -p "$e"/deps/{dist/makeself/bin,makeself,linux-headers,dist/linux/include} &&
        cp /usr/bin/makeself "$e/deps/makeself/makeself.sh" && touch "$e/deps/linux-headers/.stamp" ||
        die "preparing enroot's deps failed"
    local make_enroot=(env GIT_DIR=/nonexistent
        CPPFLAGS="-D_GNU_SOURCE -include /usr/include/bsd/string.h"
        make -C "$e" FORCE_GLIBC=1 LDLIBS="-l:libbsd.a $RT_LIBBSD_SO")
    log "building enroot $RT_ENROOT_VERSION and pyxis in $out"
    { "${make_enroot[@]}" && "${make_enroot[@]}" install prefix=/usr/local DESTDIR="$out/root"; } >&2 ||
        die "building enroot failed"
    ! grep -rqF "$out" "$out/root" || die "the staging path leaked into enroot's installed files"
    make -C "$p" >&2 || die "building pyxis failed"
    cp "$p/spank_pyxis.so" "$out/" && rm -rf "$e" "$p" || die "collecting pyxis failed"
}

# Prints, NUL-separated, the files of tree ROOT that / lacks or has different. Files under
# usr/local/etc are configuration: installed when missing, never overwritten.
rt_stale_files() {
    local root=$1 f
    while IFS= read -r -d '' f; do
        f=${f#./}
        if [[ ! -e /$f ]] || { [[ $f != usr/local/etc/* ]] && ! cmp -s "$root/$f" "/$f"; }; then
            printf '%s\0' "$f"
        fi
    done < <(cd "$root" && find . -type f -print0)
}

ensure_enroot_pyxis() {
    local vendor=${1:?usage: ensure_enroot_pyxis VENDOR_DIR CACHE_DIR} cache=${2:?missing CACHE_DIR}
    local enroot_tar pyxis_tar key dir tmp lock_fd version
    enroot_tar=$(rt_tarball "$vendor" enroot) || exit 1
    pyxis_tar=$(rt_tarball "$vendor" pyxis) || exit 1
    rt_apt_install "${RT_BUILD_PACKAGES[@]}"
    # pyxis must match the libslurm it was built against, so its version is in the key too.
    key=$({ sha256sum <"$enroot_tar" && sha256sum <"$pyxis_tar" &&
        dpkg-query -W -f='${Version}\n' libslurm-dev && echo "recipe $RT_RECIPE"; } |
        sha256sum | cut -c1-12) || die "hashing the tarballs failed"
    dir=$cache/$key
    if [[ ! -f $dir/spank_pyxis.so ]]; then
        mkdir -p "$cache" && exec {lock_fd}>"$cache/.lock" && flock "$lock_fd" ||
            die "cannot lock $cache"
        if [[ ! -f $dir/spank_pyxis.so ]]; then  # nobody built it while we waited
            rm -rf "$cache"/.build.*  # leftovers of builds that died (we hold the lock)
            # 755, not mktemp's 700: srun loads the plugin as the submitting user too.
            tmp=$(mktemp -d "$cache/.build.XXXXXX") && chmod 755 "$tmp" || die "mktemp in $cache failed"
            rt_build "$enroot_tar" "$pyxis_tar" "$tmp"
            mv -T "$tmp" "$dir" || die "mv $tmp $dir failed"
        fi
        exec {lock_fd}>&-
    fi
    local -a stale
    mapfile -d '' stale < <(rt_stale_files "$dir/root")
    if ((${#stale[@]})); then
        log "installing ${#stale[@]} enroot files into /usr/local"
        printf '%s\0' "${stale[@]}" | tar -C "$dir/root" --null -T - -cf - |
            tar -C / -xpf - --no-overwrite-dir || die "installing enroot failed"
    fi
    version=$(/usr/local/bin/enroot version) || die "enroot version failed"
    [[ $version == "$RT_ENROOT_VERSION" ]] || die "enroot version says $version, not $RT_ENROOT_VERSION"
    printf '%s\n' "$dir/spank_pyxis.so"
}

# Rootful podman needs none of its Recommends: uidmap and slirp4netns serve rootless use,
# fuse-overlayfs only file systems without native overlay (the sandbox's is ext4), catatonit
# only `run --init`. Storage, tmp_dir and ulimits are the sandbox's to set per node.
ensure_podman() {
    ((EUID == 0)) || die "ensure_podman must run as root"
    rt_apt_install podman
    podman --version >/dev/null || die "podman --version failed"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    declare -F log >/dev/null || log() { printf 'runtimes: %s\n' "$*" >&2; }
    declare -F die >/dev/null || die() { printf 'runtimes: error: %s\n' "$*" >&2; exit 1; }
    ((EUID == 0)) || die "run as root"
    here=$(cd "$(dirname "$0")" && pwd)
    so=$(ensure_enroot_pyxis "${1:-$here/../../../shared/vendor}" \
        "${2:-/var/cache/slurmserve/pyxis-enroot}")
    ensure_podman
    printf 'enroot version: %s\nspank_pyxis.so: %s\n%s\n' "$(enroot version)" "$so" \
        "$(podman --version)"
fi
