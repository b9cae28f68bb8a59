#!/bin/sh
# cmb-tcp: polluxd attaches QEMU's controller with a data buffer pool in its CMB
# (bdev_nvme_attach_controller cmb_data) and its NVMe/TCP transport takes the data
# buffers of that namespace from it (nvmf_create_transport cmb_buffers=force): the CPU
# fills CMB buffers straight from the socket and the SSD reads (and writes) its own CMB.
# The kernel's nvme-tcp initiator verifies data with fio; nvmf_get_stats shows the
# bytes that went through CMB buffers and none through host buffers for that I/O. Then
# the same run with cmb_buffers=off (host buffers), and fio's bandwidth of both is
# reported side by side: a measurement under TCG emulation, recorded, not asserted.
# lab-timeout: 600
. /lab/lib.sh

NVME_BDF=$(lab_nvme_bdf) || lab_abort nvme "no QEMU NVMe controller"
lab_bind_vfio || lab_abort bind "pollux-setup bind $NVME_BDF failed"
lab_nvme_export ', "cmb_data": true' ', "cmb_buffers": "force"'
sum() { lab_json_sum "$LAB_ART/nvmf-stats.json" "$1"; }
cmb=$(sum cmb_buffer_bytes)
host=$(sum host_buffer_bytes)
short=$(sum cmb_fallback_pool_empty)
waits=$(sum cmb_pool_waits)
pool=$(tr -d '\n ' <"$LAB_ART/controllers-after.json" | grep -o '"cmb_data_pool":\[\[[^]]*\],\[[^]]*\]\]' | head -1)
dev_cmb=$(lab_json_sum "$LAB_ART/controllers-after.json" cmb_data_bytes)
dev_host=$(lab_json_sum "$LAB_ART/controllers-after.json" host_data_bytes)
if [ "$cmb" -gt 33554432 ] && [ "${dev_cmb:-0}" -gt 33554432 ] && [ "${dev_host:-1}" -eq 0 ]; then
    lab_pass cmb-path "nvmf_get_stats: $cmb bytes of I/O data in CMB buffers, $host in host buffers (admin data), $short fallbacks for a short pool ($waits waits for a CMB buffer: force never falls back); the NVMe bdev: $dev_cmb bytes from its CMB, $dev_host from host memory; $pool"
else
    lab_fail cmb-path "nvmf_get_stats: cmb_buffer_bytes=$cmb host_buffer_bytes=$host cmb_fallback_pool_empty=$short; bdev cmb_data_bytes=$dev_cmb host_data_bytes=$dev_host"
fi
# ---- the same with host buffers, for the measurement ----
if lab_bind_vfio; then
    LAB_EXPORT_TAG=host lab_nvme_export ', "cmb_data": true' ', "cmb_buffers": "off"'
    # fio's group bandwidth in KiB/s: "WRITE: bw=12.3MiB/s (...)".
    bw() { sed -n "s/^ *$2: bw=\([0-9.]*\)\([KMG]i\)B\/s.*/\1 \2/p" "$LAB_ART/$1" |
        awk '{ m = ($2 == "Mi") ? 1024 : ($2 == "Gi") ? 1048576 : 1; printf "%.0f", $1 * m }'; }
    cw=$(bw fio.txt WRITE) cr=$(bw fio.txt READ) hw=$(bw fio-host.txt WRITE) hr=$(bw fio-host.txt READ)
    if [ -n "$cw" ] && [ -n "$hw" ] && [ "$hw" -gt 0 ] && [ "$hr" -gt 0 ]; then
        lab_pass measure "fio randwrite 4k-1m QD32 + verify over NVMe/TCP, QEMU's emulated CMB under TCG: CMB buffers write ${cw} KiB/s, verify read ${cr} KiB/s; host buffers ${hw} KiB/s, ${hr} KiB/s (CMB/host: write $(awk -v a="$cw" -v b="$hw" 'BEGIN { printf "%.2f", a / b }'), read $(awk -v a="$cr" -v b="$hr" 'BEGIN { printf "%.2f", a / b }')); emulation timings, not a hardware claim"
    else
        lab_fail measure "no bandwidth in fio's reports (cmb: '$cw' '$cr', host: '$hw' '$hr')"
    fi
else
    lab_fail measure "pollux-setup bind $NVME_BDF failed for the host-buffer run"
fi
exit 0
