#!/bin/sh
# nvme-vfio: Pollux's userspace NVMe driver drives QEMU's emulated controller through
# VFIO (vfio-pci behind the vIOMMU): Identify matches what QEMU was given; random data
# round-trips with 4 KiB to the largest transfer at queue depths 1 to 128 over two queue
# pairs; Write Zeroes and deallocate read back zeroes; an I/O past the end gets LBA Out
# of Range; a reset during I/O loses and duplicates nothing; attaching and detaching
# namespace 2 (Namespace Attachment) raises Asynchronous Events and the driver rescans; pollux-perf (ioengine=nvme)
# verifies 4k-1m random writes on two queue pairs; shutdown leaves the controller clean,
# and the kernel's nvme driver reads back what the userspace driver wrote. Then the
# kernel driver runs the same fio verify workload on /dev/nvme0n1 (functional parity).
# lab-timeout: 900
. /lab/lib.sh

NVME_BDF=$(lab_nvme_bdf) || lab_abort nvme "no QEMU NVMe controller"
lab_note "controller $NVME_BDF"
pollux-setup status

if lab_bind_vfio; then
    lab_pass bind "$NVME_BDF bound to vfio-pci by pollux-setup"
else
    lab_abort bind "pollux-setup bind $NVME_BDF failed"
fi

lab_vfio_tests identify_matches_what_qemu_was_given \
    random_data_round_trips_on_two_queue_pairs_at_depths_1_to_128 \
    write_zeroes_deallocate_and_out_of_range \
    a_reset_during_io_loses_and_duplicates_nothing \
    namespace_attachment_raises_an_event_and_rescans

# pollux-perf through the nvme bdev: two jobs, each its own queue pair.
PERF_JOB=$LAB_WORK/nvme.fio
cat >"$PERF_JOB" <<JOB
[global]
ioengine=nvme
target=trtype:pcie traddr:$NVME_BDF ns:1
rw=randwrite
bsrange=4k-1m
iodepth=32
size=32m
verify=crc32c
do_verify=1
group_reporting=1
[q1]
offset=32m
[q2]
offset=96m
JOB
if [ -x /usr/bin/pollux-perf ] && timeout 300 pollux-perf --output-format=json --output="$LAB_ART/perf-nvme.json" "$PERF_JOB" >"$LAB_ART/perf-nvme.log" 2>&1 &&
    grep -q '"error" : 0' "$LAB_ART/perf-nvme.json"; then
    lab_pass perf-nvme "pollux-perf ioengine=nvme: randwrite 4k-1m QD32 x2 queue pairs, crc32c verify, no errors"
else
    lab_fail perf-nvme "pollux-perf ioengine=nvme failed: $(tail -3 "$LAB_ART/perf-nvme.log" | tr '\n' ' ')"
fi

lab_vfio_tests shutdown_leaves_the_controller_clean_with_the_data_in_place

if lab_bind_kernel; then
    lab_pass rebind "back on the kernel nvme driver: /dev/$PCI_DEV"
    dd if=/dev/$PCI_DEV of="$LAB_WORK/mark.bin" bs=1M skip=1 count=1 iflag=direct 2>/dev/null
    if cmp -s "$LAB_WORK/mark.bin" /tmp/lab-nvme-mark.bin; then
        lab_pass kernel-reads-back "the kernel driver reads the 1 MiB the userspace driver wrote before shutdown ($(md5sum <"$LAB_WORK/mark.bin" | cut -c1-32))"
    else
        lab_fail kernel-reads-back "/dev/$PCI_DEV at 1 MiB differs from what the userspace driver wrote"
    fi
    # Functional parity: the same verified workload through the kernel's driver.
    if timeout 300 fio --name=kernel --filename=/dev/$PCI_DEV --direct=1 --ioengine=libaio --rw=randwrite \
        --bsrange=4k-1m --iodepth=32 --size=32m --offset=32m --verify=crc32c --do_verify=1 \
        --output-format=json --output="$LAB_ART/fio-kernel.json" >/dev/null 2>&1 &&
        grep -q '"error" : 0' "$LAB_ART/fio-kernel.json"; then
        lab_pass kernel-parity "fio on /dev/$PCI_DEV (kernel driver): the same randwrite 4k-1m QD32 crc32c verify, no errors"
    else
        lab_fail kernel-parity "fio on /dev/$PCI_DEV failed"
    fi
else
    lab_fail rebind "the controller did not come back to the kernel nvme driver"
fi
exit 0
