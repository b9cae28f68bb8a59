# shellcheck shell=bash
# Host preparation (sourced by tests/lab/run): Debian packages, QEMU 7.2 and the guest
# kernel, all cached under $LAB_CACHE.
#
# QEMU 7.2 and the 6.1 kernel are downloaded as .debs and unpacked with dpkg-deb -x,
# never installed: on these machines `apt-get install qemu-system-x86` would remove the
# newer qemu-utils (it Breaks qemu-system-common < 8.0), and installing a linux-image
# would run the host's boot hooks. Only tools and shared libraries go through apt, always
# with --no-remove so that nothing already installed can be taken away.

# Tools the initramfs copies from the host, and the packages that hold them.
LAB_HOST_TOOLS=(
    "/usr/sbin/nvme:nvme-cli"
    "/usr/bin/fio:fio"
    "/usr/bin/rdma:iproute2"
    "/usr/bin/ip:iproute2"
    "/usr/bin/ibv_devinfo:ibverbs-utils"
    "/usr/bin/ibv_devices:ibverbs-utils"
    "/usr/bin/ibv_rc_pingpong:ibverbs-utils"
    "/usr/bin/rping:rdmacm-utils"
    "/etc/libibverbs.d/rxe.driver:ibverbs-providers"
    "/usr/bin/kmod:kmod"
    "/usr/bin/cpio:cpio"
    "/usr/bin/dpkg-deb:dpkg"
)

_lab_apt_updated=0
lab_apt_update() {
    ((_lab_apt_updated)) && return 0
    lab_say "apt-get update"
    apt-get update -qq || lab_die "apt-get update failed"
    _lab_apt_updated=1
}

lab_apt_install() {
    lab_apt_update
    lab_say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove "$@" \
        >"$LAB_CACHE/apt-install.log" 2>&1 ||
        { tail -20 "$LAB_CACHE/apt-install.log" >&2; lab_die "apt-get install $* failed"; }
}

# The newest version of package $1 that matches the extended regex $2 in apt's lists.
lab_pick_version() {
    apt-cache madison "$1" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -E "$2" |
        sort -Vr | head -1
}

# apt-get download PKG=VERSION into $LAB_CACHE/debs, unless that .deb is there already.
# Sets LAB_DEB to the .deb's path.
lab_fetch_deb() {
    local pkg=$1 ver=$2 file
    file="$LAB_CACHE/debs/${pkg}_${ver/:/%3a}_"
    if ! compgen -G "${file}*.deb" >/dev/null; then
        lab_say "downloading $pkg $ver"
        (cd "$LAB_CACHE/debs" && apt-get download -qq "$pkg=$ver" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) ||
            true
        compgen -G "${file}*.deb" >/dev/null || lab_die "could not download $pkg=$ver"
    fi
    LAB_DEB=$(compgen -G "${file}*.deb" | head -1)
}

lab_host_tools() {
    local missing=() entry
    for entry in "${LAB_HOST_TOOLS[@]}"; do
        [[ -e ${entry%%:*} ]] || missing+=("${entry#*:}")
    done
    compgen -G '/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav*.so' >/dev/null || missing+=(ibverbs-providers)
    if ((${#missing[@]})); then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        lab_apt_install "${missing[@]}"
    fi
}

# QEMU's shared libraries are ordinary packages: the Depends of its two binary .debs
# (first alternatives, no versions), less QEMU's own packages and firmware.
lab_qemu_libs() {
    local deb libs=()
    for deb in "$LAB_CACHE"/debs/qemu-system-x86_*.deb "$LAB_CACHE"/debs/qemu-system-common_*.deb; do
        mapfile -t -O "${#libs[@]}" libs < <(dpkg-deb -f "$deb" Depends | tr ',' '\n' |
            sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/ //g' | grep -vE '^(qemu-|seabios|ipxe-qemu|$)')
    done
    ((${#libs[@]})) || lab_die "no Depends in the QEMU .debs in $LAB_CACHE/debs"
    mapfile -t libs < <(printf '%s\n' "${libs[@]}" | sort -u)
    lab_apt_install "${libs[@]}"
}

# QEMU 7.2 under $LAB_CACHE/qemu (with its runtime libraries installed through apt).
lab_host_qemu() {
    local dir=$LAB_CACHE/qemu
    QEMU_BIN=$dir/usr/bin/qemu-system-x86_64
    if [[ ! -f $dir/.complete ]]; then
        lab_apt_update
        local pkg ver debs=() d
        for pkg in qemu-system-x86 qemu-system-common qemu-system-data seabios; do
            if [[ $pkg == seabios ]]; then
                ver=$(lab_pick_version seabios .)
            else
                ver=$(lab_pick_version "$pkg" '^1:7\.2')
            fi
            [[ -n $ver ]] || lab_die "apt knows no suitable $pkg (QEMU 7.2 comes from Debian 12 main)"
            lab_fetch_deb "$pkg" "$ver"
            debs+=("$LAB_DEB")
        done
        rm -rf "$dir"
        for d in "${debs[@]}"; do dpkg-deb -x "$d" "$dir"; done
        dpkg-deb -f "${debs[0]}" Version >"$dir/.version"
        lab_qemu_libs
        touch "$dir/.complete"
    elif ldd "$QEMU_BIN" | grep -q 'not found'; then
        lab_qemu_libs # some were removed since
    fi
    if ldd "$QEMU_BIN" | grep -q 'not found'; then
        lab_die "QEMU misses libraries: $(ldd "$QEMU_BIN" | awk '/not found/{printf "%s ", $1}')"
    fi
    export QEMU_MODULE_DIR=$dir/usr/lib/x86_64-linux-gnu/qemu
    QEMU_DATA=("-L" "$dir/usr/share/qemu" "-L" "$dir/usr/share/seabios")
}

# Debian 12's 6.1 kernel under $LAB_CACHE/kernel (vmlinuz + modules, depmod'ed).
lab_host_kernel() {
    local dir=$LAB_CACHE/kernel
    if [[ ! -f $dir/.complete ]]; then
        lab_apt_update
        local pkg ver
        pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1)
        [[ -n $pkg ]] || lab_die "apt knows no linux-image-6.1.0-*-amd64 (is Debian 12 main in the sources?)"
        ver=$(lab_pick_version "$pkg" .)
        lab_fetch_deb "$pkg" "$ver"
        rm -rf "$dir"
        dpkg-deb -x "$LAB_DEB" "$dir"
        KVER=$(ls "$dir/lib/modules")
        depmod -b "$dir" "$KVER"
        echo "$KVER" >"$dir/.complete"
    fi
    KERNEL_DIR=$dir
    KVER=$(cat "$dir/.complete")
    VMLINUZ=$dir/boot/vmlinuz-$KVER
}

# A static busybox for the guest under $LAB_CACHE/busybox (unpacked, not installed: the
# busybox-static package conflicts with busybox).
lab_host_busybox() {
    local dir=$LAB_CACHE/busybox
    if [[ ! -f $dir/.complete ]]; then
        lab_apt_update
        local ver
        ver=$(lab_pick_version busybox-static .)
        [[ -n $ver ]] || lab_die "apt knows no busybox-static"
        lab_fetch_deb busybox-static "$ver"
        rm -rf "$dir"
        dpkg-deb -x "$LAB_DEB" "$dir"
        echo "$ver" >"$dir/.complete"
    fi
    BUSYBOX=$LAB_CACHE/busybox/bin/busybox
}

lab_host_setup() {
    [[ $(id -u) -eq 0 ]] || lab_die "the lab needs root (apt, and a cache in $LAB_CACHE)"
    command -v apt-get >/dev/null || lab_die "the lab needs a Debian 12 machine (apt-get)"
    mkdir -p "$LAB_CACHE/debs"
    lab_host_tools
    lab_host_busybox
    lab_host_qemu
    lab_host_kernel
}
