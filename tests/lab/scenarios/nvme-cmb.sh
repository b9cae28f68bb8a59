#!/bin/sh
# nvme-cmb: the Controller Memory Buffer of QEMU's controller through the userspace
# driver. The driver's test: the CMB enabled at BAR2's bus address, an I/O submission
# queue and the PRP lists in the CMB, 256 KiB written from and read into CMB buffers;
# the CMB's dma-buf export (for NICs) tried and, on 6.1, why not reported; the NIC -> CMB
# peer-to-peer route decided from sysfs (none on q35). Then polluxd attaches the controller with cmb_sqs and cmb_lists and exports it over
# NVMe/TCP: the kernel initiator's fio verify passes while every queue pair's
# submission queue and PRP lists live in the CMB, as bdev_nvme_get_controllers shows.
# lab-timeout: 600
. /lab/lib.sh

NVME_BDF=$(lab_nvme_bdf) || lab_abort nvme "no QEMU NVMe controller"
if lab_bind_vfio; then
    lab_pass bind "$NVME_BDF bound to vfio-pci"
else
    lab_abort bind "pollux-setup bind $NVME_BDF failed"
fi
lab_vfio_tests cmb_submission_queues_lists_and_data
# Could the NIC reach the CMB peer-to-peer? On QEMU's q35 both are endpoints on the root
# bus below a host bridge (8086:29c0) that is not on the allow-list: no.
# The NIC's PCI function (virtio-net's netdev hangs off virtio0, below the function).
p=$(readlink -f "/sys/class/net/${LAB_NIC:-eth0}/device")
while [ -n "$p" ] && ! echo "${p##*/}" | grep -qE '^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$'; do p=${p%/*}; done
NIC_BDF=${p##*/}
out=$(pollux-setup p2p "$NVME_BDF" "$NIC_BDF" 2>&1)
echo "$out"
case "$out" in
*"no peer-to-peer path"*"8086:29c0"*) lab_pass p2p-route "$out" ;;
*) lab_fail p2p-route "unexpected decision for q35: $out" ;;
esac
lab_bind_vfio || lab_abort bind-again "pollux-setup bind $NVME_BDF failed"
lab_nvme_export ', "cmb_sqs": true, "cmb_lists": true'
num() { lab_json_sum "$LAB_ART/controllers-after.json" "$1"; }
sqs=$(num qpairs_with_sq_in_cmb)
lists=$(num qpairs_with_lists_in_cmb)
prp=$(num prp_lists)
used=$(lab_json_sum "$LAB_ART/controllers-after.json" used)
if [ "${sqs:-0}" -gt 0 ] && [ "${lists:-0}" -gt 0 ] && [ "${prp:-0}" -gt 0 ]; then
    lab_pass cmb-counters "polluxd's queue pairs: $sqs with the SQ in the CMB, $lists with PRP lists in the CMB; $prp commands used a PRP list there; CMB bytes in use $used"
else
    lab_fail cmb-counters "counters: qpairs_with_sq_in_cmb=$sqs qpairs_with_lists_in_cmb=$lists prp_lists=$prp"
fi
exit 0
