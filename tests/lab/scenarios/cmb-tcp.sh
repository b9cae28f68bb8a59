#!/bin/sh
# cmb-tcp: polluxd attaches QEMU's controller with a data buffer pool in its CMB
# (bdev_nvme_attach_controller cmb_data) and its NVMe/TCP transport takes the data
# buffers of that namespace from it (nvmf_create_transport cmb_buffers=force): the CPU
# fills CMB buffers straight from the socket and the SSD reads (and writes) its own CMB.
# The kernel's nvme-tcp initiator verifies data with fio; nvmf_get_stats shows the
# bytes that went through CMB buffers and none through host buffers for that I/O.
# lab-timeout: 600
. /lab/lib.sh

NVME_BDF=$(lab_nvme_bdf) || lab_abort nvme "no QEMU NVMe controller"
lab_bind_vfio || lab_abort bind "pollux-setup bind $NVME_BDF failed"
lab_nvme_export ', "cmb_data": true' ', "cmb_buffers": "force"'
sum() { lab_json_sum "$LAB_ART/nvmf-stats.json" "$1"; }
cmb=$(sum cmb_buffer_bytes)
host=$(sum host_buffer_bytes)
short=$(sum cmb_fallback_pool_empty)
pool=$(tr -d '\n ' <"$LAB_ART/controllers-after.json" | grep -o '"cmb_data_pool":\[\[[^]]*\],\[[^]]*\]\]' | head -1)
dev_cmb=$(lab_json_sum "$LAB_ART/controllers-after.json" cmb_data_bytes)
dev_host=$(lab_json_sum "$LAB_ART/controllers-after.json" host_data_bytes)
if [ "$cmb" -gt 33554432 ] && [ "${dev_cmb:-0}" -gt 33554432 ] && [ "${dev_host:-1}" -eq 0 ]; then
    lab_pass cmb-path "nvmf_get_stats: $cmb bytes of I/O data in CMB buffers, $host in host buffers (admin data), $short fallbacks for a short pool; the NVMe bdev: $dev_cmb bytes from its CMB, $dev_host from host memory; $pool"
else
    lab_fail cmb-path "nvmf_get_stats: cmb_buffer_bytes=$cmb host_buffer_bytes=$host cmb_fallback_pool_empty=$short; bdev cmb_data_bytes=$dev_cmb host_data_bytes=$dev_host"
fi
exit 0
