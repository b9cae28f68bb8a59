#!/bin/sh
# cmb-rdma: QEMU's controller with a data buffer pool in its CMB (bdev_nvme_attach_controller
# cmb_data), exported over NVMe/RDMA on Soft-RoCE. The RDMA NIC reaches device memory
# only through a dma-buf of it (or, being software, through its CPU mapping); here the
# 6.1 kernel's VFIO has no dma-buf export and rxe cannot register a VFIO BAR mapping, so:
# - cmb_buffers=force is refused at configuration time, with that reason;
# - cmb_buffers=prefer takes the fallback to host buffers, logs the reason once per
#   queue pair and counts it (bounce_bytes, cmb_fallback_no_dmabuf; p2p_bytes stays 0),
#   and the kernel's nvme-rdma initiator verifies every byte with fio.
# lab-timeout: 600
. /lab/lib.sh

lab_rxe_up
NVME_BDF=$(lab_nvme_bdf) || lab_abort nvme "no QEMU NVMe controller"
lab_bind_vfio || lab_abort bind "pollux-setup bind $NVME_BDF failed"

# ---- force: refused at configuration, with the reason ----
FORCE_CFG=$LAB_ART/polluxd-force.json
cat >"$FORCE_CFG" <<JSON
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_nvme_attach_controller", "params": {"name": "Nvme0", "trtype": "PCIe", "traddr": "$NVME_BDF", "cmb_data": true}}
 ]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "RDMA", "cmb_buffers": "force", "max_srq_depth": 512}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "nqn.2016-06.io.pollux:lab-force", "allow_any_host": true}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "nqn.2016-06.io.pollux:lab-force", "namespace": {"bdev_name": "Nvme0n1", "nsid": 1}}}
 ]}
]}
JSON
NO_COLOR=1 timeout 120 polluxd -m 0x1 -c "$FORCE_CFG" -r /tmp/pollux-force.sock >"$LAB_ART/polluxd-force.log" 2>&1
rc=$?
why=$(grep -o 'cmb_buffers is force on the RDMA transport.*' "$LAB_ART/polluxd-force.log" | head -1 | cut -c1-500)
if [ $rc -ne 0 ] && [ -n "$why" ]; then
    lab_pass force-refused "polluxd refused the config (exit $rc): $why"
else
    tail -5 "$LAB_ART/polluxd-force.log"
    lab_fail force-refused "cmb_buffers=force over RDMA was not refused at configuration (exit $rc)"
fi

# ---- prefer: the fallback, counted, and the data verified ----
LAB_TRTYPE=rdma lab_nvme_export ', "cmb_data": true' ', "cmb_buffers": "prefer", "max_srq_depth": 512'
sum() { lab_json_sum "$LAB_ART/nvmf-stats.json" "$1"; }
p2p=$(sum p2p_bytes)
bounce=$(sum bounce_bytes)
nodmabuf=$(sum cmb_fallback_no_dmabuf)
other=$(($(sum cmb_fallback_no_route) + $(sum cmb_fallback_refused)))
reason=$(grep -o 'reason=[^"]*"[^"]*"\|reason=.*' "$LAB_ART/polluxd.log" | grep -m1 'dma-buf' | cut -c1-400)
dev_host=$(lab_json_sum "$LAB_ART/controllers-after.json" host_data_bytes)
if [ "$p2p" -eq 0 ] && [ "$bounce" -gt 33554432 ] && [ "$nodmabuf" -gt 0 ] && [ "$other" -eq 0 ] && [ -n "$reason" ]; then
    lab_pass fallback "no path NIC -> CMB here: $bounce bytes through host buffers (bounce_bytes), $nodmabuf requests counted in cmb_fallback_no_dmabuf, p2p_bytes 0; the NVMe bdev moved $dev_host bytes from host memory; logged: $reason"
else
    grep -i 'cmb\|dma-buf\|reach' "$LAB_ART/polluxd.log" | head -5
    lab_fail fallback "p2p_bytes=$p2p bounce_bytes=$bounce cmb_fallback_no_dmabuf=$nodmabuf other fallbacks=$other reason logged: ${reason:-none}"
fi
lab_run rdma link delete rxe0
exit 0
