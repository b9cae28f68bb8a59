# shellcheck shell=bash
# Builds the guest's initramfs (sourced by tests/lab/run).
#
# Layout: merged /usr (/bin, /sbin, /lib, /lib64 are links into /usr, as on the host),
# so every binary and library lands at the path ldd names. Real tools come first and
# busybox fills in every applet name still free. Uncompressed cpio: the cheapest to
# unpack under TCG.

# Kernel modules the guest loads, with their dependencies added by modprobe.
LAB_GUEST_MODULES="nvme nvme-core nvme-fabrics nvme-tcp nvme-rdma
    vfio vfio-pci vfio_iommu_type1
    rdma_rxe ib_uverbs rdma_ucm ib_core crc32_generic
    crc32c_generic crc32c-intel libcrc32c
    virtio_pci virtio_net configfs"

# Host programs copied into the guest, with their libraries.
LAB_GUEST_PROGRAMS="/usr/sbin/nvme /usr/bin/fio /usr/bin/rdma /usr/bin/ip
    /usr/bin/ibv_devinfo /usr/bin/ibv_devices /usr/bin/ibv_rc_pingpong /usr/bin/rping"

# Copy a file to the same path under $R, following links, unless it is there already.
_lab_put() {
    local src=$1 dst=$R${2:-$1}
    [[ -e $dst ]] && return 0
    mkdir -p "$(dirname "$dst")"
    cp -L "$src" "$dst"
}

# Copy an executable or library and every shared library ldd resolves for it.
_lab_put_elf() {
    local src=$1 dst=${2:-$1} lib
    _lab_put "$src" "$dst"
    if ldd "$src" | grep -q 'not found'; then
        lab_die "$src misses libraries on this host: $(ldd "$src" | grep 'not found' | tr -s ' \t\n' ' ')"
    fi
    for lib in $(ldd "$src" 2>/dev/null | grep -oE '/[^ ]+'); do
        _lab_put "$lib"
    done
}

# lab_build_initramfs OUT_CPIO BIN_DIR LAB_DIR
#   BIN_DIR holds polluxd, pollux-rpc, pollux-perf, pollux-setup and
#   pollux-nvme-vfio-tests and pollux-rdma-rxe-tests (device tests run in the guest); LAB_DIR is tests/lab (guest/ and scenarios/).
lab_build_initramfs() {
    local out=$1 bindir=$2 labdir=$3
    local R=$LAB_CACHE/work/root
    rm -rf "$R"
    mkdir -p "$R"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,proc,sys,dev,tmp,run,mnt,root,var/tmp,lab}
    ln -s usr/bin "$R/bin"
    ln -s usr/sbin "$R/sbin"
    ln -s usr/lib "$R/lib"
    ln -s usr/lib64 "$R/lib64"

    # The project's binaries.
    local b
    for b in polluxd pollux-rpc pollux-perf pollux-setup pollux-nvme-vfio-tests pollux-rdma-rxe-tests; do
        [[ -x $bindir/$b ]] || lab_die "$bindir/$b is missing (cargo build --release -p pollux-tools)"
        _lab_put_elf "$bindir/$b" "/usr/bin/$b"
    done

    # Guest tools from the host's Debian packages.
    for b in $LAB_GUEST_PROGRAMS; do _lab_put_elf "$b"; done
    _lab_put_elf /usr/bin/kmod /usr/sbin/kmod
    for b in modprobe insmod rmmod lsmod depmod modinfo; do ln -s kmod "$R/usr/sbin/$b"; done
    # The rxe provider of libibverbs (dlopen()ed, so ldd of the tools does not name it).
    local prov
    prov=$(compgen -G '/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav*.so' | head -1)
    _lab_put_elf "$prov"
    _lab_put /etc/libibverbs.d/rxe.driver
    # glibc dlopen()s libgcc_s for thread cancellation.
    _lab_put_elf /usr/lib/x86_64-linux-gnu/libgcc_s.so.1

    # busybox for everything else.
    _lab_put "$BUSYBOX" /usr/bin/busybox
    local applet
    for applet in $("$BUSYBOX" --list-full); do
        applet=/usr/${applet#usr/}
        [[ -e $R$applet || -L $R$applet ]] || ln -s /usr/bin/busybox "$R$applet"
    done

    printf '/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' >"$R/etc/ld.so.conf"
    ldconfig -r "$R"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
    echo 'root:x:0:' >"$R/etc/group"
    echo '127.0.0.1 localhost' >"$R/etc/hosts"
    mkdir -p "$R/etc/nvme"
    echo 'nqn.2014-08.org.nvmexpress:uuid:5ef0c1e2-7a11-4c4b-9d1e-0000000000a1' >"$R/etc/nvme/hostnqn"
    echo '5ef0c1e2-7a11-4c4b-9d1e-0000000000a1' >"$R/etc/nvme/hostid"

    # Kernel modules and their dependencies, then depmod on the guest's tree.
    local m ko rel
    for m in $LAB_GUEST_MODULES; do
        modprobe -d "$KERNEL_DIR" -S "$KVER" --show-depends "$m" 2>/dev/null |
            awk '$1 == "insmod" { print $2 }'
    done | sort -u >"$LAB_CACHE/work/modules.list"
    while read -r ko; do
        rel=${ko#"$KERNEL_DIR"}
        rel=${rel#/usr}
        mkdir -p "$R/usr$(dirname "$rel")"
        cp "$ko" "$R/usr$rel"
    done <"$LAB_CACHE/work/modules.list"
    cp "$KERNEL_DIR/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$R/usr/lib/modules/$KVER/"
    depmod -b "$R" "$KVER"

    # The guest side of the harness.
    cp "$labdir/guest/init" "$R/init"
    chmod 755 "$R/init"
    cp "$labdir/guest/lib.sh" "$R/lab/lib.sh"
    mkdir -p "$R/lab/scenarios"
    cp "$labdir"/scenarios/*.sh "$R/lab/scenarios/"

    (cd "$R" && find . -print0 | cpio --null -o -H newc --quiet) >"$out.tmp"
    mv "$out.tmp" "$out"
    LAB_INITRAMFS_MODULES=$(wc -l <"$LAB_CACHE/work/modules.list")
}
