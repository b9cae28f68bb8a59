#!/bin/sh
# nvme-cmb: the Controller Memory Buffer of QEMU's controller through the userspace
# driver: CMB enabled at the BAR's bus address, submission queues and PRP lists in the
# CMB, data written from and read into CMB buffers; the counters show the CMB path.
# lab-timeout: 300
. /lab/lib.sh

NVME_BDF=$(lab_nvme_bdf) || lab_abort nvme "no QEMU NVMe controller"
if lab_bind_vfio; then
    lab_pass bind "$NVME_BDF bound to vfio-pci"
else
    lab_abort bind "pollux-setup bind $NVME_BDF failed"
fi
lab_vfio_tests cmb_submission_queues_lists_and_data
if lab_bind_kernel; then
    lab_pass rebind "back on the kernel nvme driver"
else
    lab_fail rebind "the controller did not come back to the kernel nvme driver"
fi
exit 0
