#!/bin/sh
# lab-sanity: the guest has what the lab's scenarios build on, and says what is missing:
# the emulated NVMe controller with its CMB, IOMMU groups and VFIO (the userspace NVMe
# driver), a virtio NIC with Soft-RoCE (RDMA), the kernel's NVMe/TCP initiator, and the
# tools.
# lab-timeout: 150
. /lab/lib.sh

echo "PCI devices:"
NVME_BDF=
for d in /sys/bus/pci/devices/*; do
    drv=$(readlink "$d/driver" 2>/dev/null)
    echo "  ${d##*/} class=$(cat "$d/class") id=$(cat "$d/vendor"):$(cat "$d/device") driver=${drv##*/}"
    if [ "$(cat "$d/class")" = 0x010802 ] && [ "$(cat "$d/vendor")" = 0x1b36 ]; then
        NVME_BDF=${d##*/}
    fi
done
P=/sys/bus/pci/devices/$NVME_BDF

# ---- the emulated NVMe controller ----
if [ -n "$NVME_BDF" ]; then
    lab_pass nvme-controller "QEMU NVMe controller 1b36:$(sed 's/^0x//' "$P/device") at $NVME_BDF"
else
    lab_fail nvme-controller "no PCI device with class 0x010802 and vendor 0x1b36 (is -device nvme on QEMU's command line?)"
fi

if [ -n "$NVME_BDF" ]; then
    # The CMB is BAR2 (CMBLOC.BIR=2 in QEMU 7.2); the resource file lists BAR0..5 first.
    set -- $(sed -n 3p "$P/resource")
    cmb_mib=$(( ($2 - $1 + 1) >> 20 ))
    [ "$1" = 0x0000000000000000 ] && cmb_mib=0
    if [ "$cmb_mib" -ge 64 ]; then
        lab_pass cmb "BAR2 (the CMB) is $cmb_mib MiB"
    else
        lab_fail cmb "BAR2 is $cmb_mib MiB, the CMB needs 64 (cmb_size_mb=64 on QEMU's nvme device)"
    fi
    if lab_wait 30 pci_ns_dev >/dev/null; then
        lab_pass nvme-driver "the kernel nvme driver sees /dev/$(pci_ns_dev): $(cat /sys/bus/pci/devices/"$NVME_BDF"/nvme/nvme*/model 2>/dev/null | tr -s ' ')"
    else
        lab_fail nvme-driver "no block device of namespace 1 from the kernel nvme driver"
    fi
fi

# ---- IOMMU and VFIO ----
groups=$(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l)
if [ "$groups" -gt 0 ]; then
    lab_pass iommu-groups "$groups IOMMU groups"
else
    lab_fail iommu-groups "/sys/kernel/iommu_groups is empty (needs -device intel-iommu and intel_iommu=on; this kernel has no VFIO no-IOMMU mode)"
    dmesg | grep -iE 'DMAR|IOMMU' | head -5
fi
GROUP=
if [ -n "$NVME_BDF" ]; then
    GROUP=$(readlink "$P/iommu_group" 2>/dev/null)
    GROUP=${GROUP##*/}
    if [ -n "$GROUP" ]; then
        lab_pass nvme-iommu-group "the NVMe controller is in IOMMU group $GROUP ($(ls /sys/kernel/iommu_groups/"$GROUP"/devices | tr '\n' ' '))"
    else
        lab_fail nvme-iommu-group "the NVMe controller is in no IOMMU group"
    fi
fi
modprobe vfio-pci && modprobe vfio_iommu_type1
if [ -c /dev/vfio/vfio ] && [ -d /sys/bus/pci/drivers/vfio-pci ]; then
    lab_pass vfio "vfio-pci and vfio_iommu_type1 loaded, /dev/vfio/vfio present"
else
    lab_fail vfio "vfio-pci or /dev/vfio/vfio missing"
fi
if [ -n "$GROUP" ] && [ -d /sys/bus/pci/drivers/vfio-pci ]; then
    # Hand the controller to vfio-pci, as the userspace driver will, then give it back.
    echo vfio-pci >"$P/driver_override"
    [ -e "$P/driver" ] && echo "$NVME_BDF" >"$P/driver/unbind"
    echo "$NVME_BDF" >/sys/bus/pci/drivers_probe
    drv=$(readlink "$P/driver" 2>/dev/null)
    if [ "${drv##*/}" = vfio-pci ] && [ -c "/dev/vfio/$GROUP" ]; then
        lab_pass vfio-bind "the NVMe controller binds to vfio-pci: /dev/vfio/$GROUP"
    else
        lab_fail vfio-bind "binding to vfio-pci gave driver '${drv##*/}', /dev/vfio: $(ls /dev/vfio | tr '\n' ' ')"
    fi
    [ -e "$P/driver" ] && echo "$NVME_BDF" >"$P/driver/unbind"
    echo >"$P/driver_override"
    echo "$NVME_BDF" >/sys/bus/pci/drivers_probe
    if lab_wait 30 pci_ns_dev >/dev/null; then
        lab_pass nvme-rebind "back on the kernel nvme driver: /dev/$(pci_ns_dev)"
    else
        lab_fail nvme-rebind "the controller did not come back to the nvme driver"
    fi
fi

# ---- NIC and Soft-RoCE ----
if [ -n "$LAB_NIC" ] && ip addr show dev "$LAB_NIC" | grep -q 'inet 10.0.2.15/'; then
    drv=$(readlink "/sys/class/net/$LAB_NIC/device/driver" 2>/dev/null)
    lab_pass nic "$LAB_NIC (${drv##*/}) up with 10.0.2.15"
else
    lab_fail nic "no NIC with 10.0.2.15 (virtio-net: is -device virtio-net-pci there, virtio_net loaded?)"
fi
# rdma_rxe needs crc32_generic first (else "failed to add eth0").
modprobe crc32_generic
if modprobe rdma_rxe && modprobe ib_uverbs && modprobe rdma_ucm; then
    lab_pass rdma-modules "rdma_rxe, ib_uverbs and rdma_ucm loaded"
else
    lab_fail rdma-modules "rdma_rxe, ib_uverbs or rdma_ucm did not load"
fi
lab_run rdma link add rxe0 type rxe netdev "${LAB_NIC:-eth0}"
if lab_wait 5 test -e /sys/class/infiniband/rxe0; then
    lab_pass rxe "rxe0 on ${LAB_NIC:-eth0}: /sys/class/infiniband/rxe0"
else
    lab_fail rxe "rdma link add rxe0 type rxe netdev ${LAB_NIC:-eth0} gave no /sys/class/infiniband/rxe0"
fi
lab_run ibv_devinfo -d rxe0 >"$LAB_WORK/ibv_devinfo" 2>&1
cat "$LAB_WORK/ibv_devinfo"
if grep -q 'PORT_ACTIVE' "$LAB_WORK/ibv_devinfo"; then
    lab_pass ibverbs "libibverbs with the rxe provider sees rxe0, port active"
else
    lab_fail ibverbs "ibv_devinfo -d rxe0 shows no active port (rxe provider in the initramfs?)"
fi
# One RC queue pair through rxe0 (GID 1 is the IPv4 one).
# The server listens only once its queue pair is set up: the client retries until then.
timeout 60 ibv_rc_pingpong -d rxe0 -g 1 -n 200 >"$LAB_WORK/pp.server" 2>&1 &
pp_client() {
    sleep 1
    timeout 30 ibv_rc_pingpong -d rxe0 -g 1 -n 200 127.0.0.1 >"$LAB_WORK/pp.client" 2>&1
}
if lab_wait 40 pp_client; then
    lab_pass rdma-rc "ibv_rc_pingpong over rxe0: $(grep 'iters in' "$LAB_WORK/pp.client")"
else
    lab_fail rdma-rc "ibv_rc_pingpong over rxe0 failed: $(tail -2 "$LAB_WORK/pp.client" | tr '\n' ' ')"
fi
wait
lab_run rdma link delete rxe0

# ---- the kernel's NVMe/TCP initiator and the tools ----
modprobe nvme-tcp
if [ -c /dev/nvme-fabrics ]; then
    lab_pass nvme-fabrics "nvme-tcp loaded, /dev/nvme-fabrics present"
else
    lab_fail nvme-fabrics "no /dev/nvme-fabrics (nvme-tcp/nvme-fabrics modules?)"
fi
missing=
for t in nvme fio rdma ip polluxd pollux-rpc ibv_devinfo rping; do
    command -v "$t" >/dev/null || missing="$missing $t"
done
nvme version >/dev/null 2>&1 || missing="$missing nvme(runs)"
fio --version >/dev/null 2>&1 || missing="$missing fio(runs)"
polluxd --version >/dev/null 2>&1 || missing="$missing polluxd(runs)"
pollux-rpc --version >/dev/null 2>&1 || missing="$missing pollux-rpc(runs)"
if [ -z "$missing" ]; then
    lab_pass tools "$(nvme version | head -1), $(fio --version), $(polluxd --version)"
else
    lab_fail tools "missing or broken:$missing"
fi

exit 0
