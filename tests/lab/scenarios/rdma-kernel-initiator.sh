#!/bin/sh
# rdma-kernel-initiator: polluxd in the guest serves a RAM namespace and an io_uring
# namespace over NVMe/RDMA on Soft-RoCE (rxe0 on the guest's NIC, 10.0.2.15:4420) and,
# at the same time, a third namespace over NVMe/TCP. Linux 6.1's own initiator
# (nvme-rdma, nvme-cli) and fio use it: discovery over RDMA, connect, identify, fio
# randwrite 4 KiB to 1 MiB with crc32c verify (RDMA and TCP at once), 20 disconnects
# under I/O after which every pool must be full, a last verified run, clean stop.
# lab-timeout: 600
. /lab/lib.sh

NQN=nqn.2016-06.io.pollux:lab-rdma
TCP_NQN=nqn.2016-06.io.pollux:lab-rdma-tcp
SN=POLLUXLABRDMA0000001
SOCK=/tmp/pollux-rdma.sock
ADDR=10.0.2.15
PORT=4420
TCP_PORT=4430
RECONNECTS=${LAB_RECONNECTS:-20}
CFG=$LAB_ART/polluxd.json
URING_FILE=/tmp/lab/uring-rdma.img

rpc() { pollux-rpc -s "$SOCK" -t 10 "$@"; }

connect() {
    lab_run timeout 60 nvme connect -t rdma -a "$ADDR" -s "$PORT" -n "$NQN" -l 15 -c 2 "$@" || return 1
    lab_wait 20 ns_dev "$NQN" 1 >/dev/null && lab_wait 10 ns_dev "$NQN" 2 >/dev/null
}

disconnect() {
    lab_run timeout 60 nvme disconnect -n "$NQN" || return 1
    lab_wait 20 no_ctrl "$NQN"
}

lab_rxe_up

truncate -s 64M "$URING_FILE"
cat >"$CFG" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 131072, "block_size": 512}},
  {"method": "bdev_uring_create", "params": {"name": "Uring0", "filename": "$URING_FILE", "block_size": 4096}},
  {"method": "bdev_malloc_create", "params": {"name": "Malloc1", "num_blocks": 65536, "block_size": 512}}
 ]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "RDMA", "max_queue_depth": 128, "in_capsule_data_size": 4096, "max_srq_depth": 1024}},
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN", "allow_any_host": true,
    "serial_number": "$SN", "model_number": "Pollux lab RDMA"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "Malloc0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "Uring0", "nsid": 2}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN",
    "listen_address": {"trtype": "RDMA", "adrfam": "IPv4", "traddr": "$ADDR", "trsvcid": "$PORT"}}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$TCP_NQN", "allow_any_host": true}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$TCP_NQN", "namespace": {"bdev_name": "Malloc1", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$TCP_NQN",
    "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$TCP_PORT"}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "discovery",
    "listen_address": {"trtype": "RDMA", "adrfam": "IPv4", "traddr": "$ADDR", "trsvcid": "$PORT"}}}
 ]}
]}
EOF
lab_polluxd_start
if lab_wait 30 rpc nvmf_get_transports >"$LAB_ART/transports.json" 2>/dev/null; then
    lab_pass polluxd-start "polluxd (pid $PID) has transports $(grep -o '"trtype": "[A-Z]*"' "$LAB_ART/transports.json" | tr '\n' ' ')and listens on RDMA $ADDR:$PORT and TCP 127.0.0.1:$TCP_PORT"
else
    tail -20 "$LAB_ART/polluxd.log"
    lab_abort polluxd-start "polluxd did not come up (see polluxd.log)"
fi

# ---- discovery, connect, identify ----
lab_run timeout 60 nvme discover -t rdma -a "$ADDR" -s "$PORT" >"$LAB_ART/discover.txt" 2>&1
rc=$?
cat "$LAB_ART/discover.txt"
if [ $rc -eq 0 ] && grep -q "subnqn: *$NQN\$" "$LAB_ART/discover.txt" && grep -q 'trtype: *rdma' "$LAB_ART/discover.txt" &&
    grep -q 'rdma_cms: *rdma-cm' "$LAB_ART/discover.txt"; then
    lab_pass discover "nvme discover -t rdma lists $NQN: $(grep -E 'trtype|rdma_(qptype|cms)' "$LAB_ART/discover.txt" | sort -u | tr -s ' ' | tr '\n' ' ')"
else
    lab_fail discover "nvme discover -t rdma (rc $rc) does not list $NQN as an rdma-cm entry"
fi

if connect; then
    CTRL=$(ctrl_of "$NQN")
    NS1=$(ns_dev "$NQN" 1)
    NS2=$(ns_dev "$NQN" 2)
    lab_pass connect "nvme connect -t rdma: controller $CTRL ($(cat /sys/class/nvme/$CTRL/transport)), namespaces /dev/$NS1 (Malloc0) and /dev/$NS2 (Uring0)"
else
    tail -20 "$LAB_ART/polluxd.log"
    dmesg | tail -20
    lab_abort connect "nvme connect -t rdma to $NQN failed, or its namespaces did not appear"
fi

lab_run nvme id-ctrl "/dev/$CTRL" >"$LAB_ART/id-ctrl.txt" 2>&1
if grep -qE "^sn +: $SN" "$LAB_ART/id-ctrl.txt" && grep -qE '^sgls +: [0-9a-fx]*' "$LAB_ART/id-ctrl.txt"; then
    lab_pass id-ctrl "nvme id-ctrl over RDMA: $(grep -E '^(sn|mdts|ioccsz|sgls|msdbd) ' "$LAB_ART/id-ctrl.txt" | tr -s ' ' | tr '\n' ' ')"
else
    lab_fail id-ctrl "nvme id-ctrl /dev/$CTRL does not show serial $SN and SGLs"
fi

# ---- verified I/O over RDMA, and over TCP at the same time ----
modprobe nvme-tcp
if lab_run timeout 60 nvme connect -t tcp -a 127.0.0.1 -s "$TCP_PORT" -n "$TCP_NQN" && lab_wait 20 ns_dev "$TCP_NQN" 1 >/dev/null; then
    TNS=$(ns_dev "$TCP_NQN" 1)
    t0=$(lab_up)
    if fio_verify both "$NS1" "$NS2" "$TNS"; then
        lab_pass fio-verify "randwrite 4k-1m QD32 then crc32c verify of /dev/$NS1 and /dev/$NS2 over RDMA and /dev/$TNS over TCP, at once: no error ($(lab_secs_since "$t0") s)"
    else
        lab_fail fio-verify "fio randwrite+verify reported errors (fio-both.txt)"
    fi
    timeout 60 nvme disconnect -n "$TCP_NQN" >/dev/null
else
    lab_fail fio-verify "nvme connect -t tcp to $TCP_NQN on 127.0.0.1:$TCP_PORT failed while RDMA is connected"
fi
disconnect || lab_fail disconnect "nvme disconnect failed or the controller stayed"

# ---- disconnect and reconnect under I/O ----
lab_churn "$RECONNECTS" RDMA
cp "$LAB_WORK/stats.json" "$LAB_ART/stats-after-reconnects.json"

# ---- a last verified run ----
if connect; then
    NS1=$(ns_dev "$NQN" 1)
    NS2=$(ns_dev "$NQN" 2)
    if fio_verify final "$NS1" "$NS2"; then
        lab_pass final-verify "connect and verified fio after the disconnects: no error"
    else
        lab_fail final-verify "fio randwrite+verify after the disconnects reported errors (fio-final.txt)"
    fi
    disconnect || lab_fail disconnect "nvme disconnect failed or the controller stayed"
else
    lab_fail final-verify "cannot connect after the disconnects"
fi

# ---- clean stop ----
lab_clean_stop
lab_run rdma link delete rxe0
exit 0
