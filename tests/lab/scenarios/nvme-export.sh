#!/bin/sh
# nvme-export: polluxd attaches QEMU's NVMe controller with its userspace driver
# (bdev_nvme_attach_controller, trtype PCIe) and exports the namespace bdev Nvme0n1 over
# NVMe/TCP; the guest kernel's nvme-tcp initiator verifies data with fio (crc32c, 4k-1m,
# QD32), with zero errors; the
# driver's counters show the traffic; polluxd stops cleanly and the controller goes back
# to the kernel driver.
# lab-timeout: 420
. /lab/lib.sh

NVME_BDF=$(lab_nvme_bdf) || lab_abort nvme "no QEMU NVMe controller"
lab_bind_vfio || lab_abort bind "pollux-setup bind $NVME_BDF failed"
lab_nvme_export ""
exit 0
