#!/bin/sh
# rdma-pollux-host: pollux-perf (ioengine=nvmf, trtype:rdma: the project's own NVMe/RDMA
# host, nvme::fabrics::rdma) against polluxd's NVMe/RDMA target on Soft-RoCE: random
# writes of 4 KiB to 128 KiB at QD32 on two queue pairs, then every block read back and
# checked (crc32c), and the same job over NVMe/TCP to the same namespace for
# comparison. The RDMA transport runs with no_srq (a receive queue per queue pair; the
# other RDMA scenarios use the shared one). Afterwards every connection is closed and
# every pool full, and the buffer counters show the RDMA data in 8 KiB io_unit_size pieces.
# lab-timeout: 420
. /lab/lib.sh

NQN=nqn.2016-06.io.pollux:lab-rdma-host
SOCK=/tmp/pollux-rdma-host.sock
ADDR=10.0.2.15
PORT=4420
CFG=$LAB_ART/polluxd.json

rpc() { pollux-rpc -s "$SOCK" -t 10 "$@"; }

lab_rxe_up

cat >"$CFG" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 262144, "block_size": 512}}
 ]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "RDMA", "no_srq": true}},
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN", "allow_any_host": true}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "Malloc0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN",
    "listen_address": {"trtype": "RDMA", "adrfam": "IPv4", "traddr": "$ADDR", "trsvcid": "$PORT"}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN",
    "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$PORT"}}}
 ]}
]}
EOF
lab_polluxd_start
if lab_wait 30 rpc nvmf_get_subsystems >/dev/null 2>&1; then
    lab_pass polluxd-start "polluxd (pid $PID) serves $NQN over RDMA ($ADDR:$PORT, no_srq) and TCP (127.0.0.1:$PORT)"
else
    tail -20 "$LAB_ART/polluxd.log"
    lab_abort polluxd-start "polluxd did not come up (see polluxd.log)"
fi

# perf TAG TARGET: two jobs (two queue pairs) of verified random writes.
perf() {
    cat >"$LAB_WORK/$1.fio" <<JOB
[global]
ioengine=nvmf
target=$2
rw=randwrite
bsrange=4k-128k
iodepth=32
size=24m
verify=crc32c
do_verify=1
group_reporting=1
[q1]
offset=0
[q2]
offset=48m
JOB
    timeout 300 pollux-perf --output-format=json --output="$LAB_ART/perf-$1.json" "$LAB_WORK/$1.fio" >"$LAB_ART/perf-$1.log" 2>&1 &&
        grep -q '"error" : 0' "$LAB_ART/perf-$1.json"
}
bw() { awk -F: '/"bw_bytes"/ { gsub(/[ ,]/, "", $2); s += $2 } END { printf "%.1f", s / 1048576 }' "$LAB_ART/perf-$1.json"; }

t0=$(lab_up)
if perf rdma "trtype:rdma adrfam:ipv4 traddr:$ADDR trsvcid:$PORT subnqn:$NQN ns:1"; then
    lab_pass perf-rdma "pollux-perf trtype:rdma: randwrite 4k-128k QD32 on 2 queue pairs, then crc32c verify of every block: no errors ($(lab_secs_since "$t0") s, $(bw rdma) MiB/s summed over write and verify)"
else
    tail -5 "$LAB_ART/perf-rdma.log"
    tail -10 "$LAB_ART/polluxd.log"
    lab_fail perf-rdma "pollux-perf over NVMe/RDMA failed: $(tail -3 "$LAB_ART/perf-rdma.log" | tr '\n' ' ' | cut -c1-400)"
fi

if grep -q 'NVMe/RDMA queues of a device set up on a poll group.*srq_depth=0' "$LAB_ART/polluxd.log"; then
    lab_pass no-srq "with no_srq each queue pair had its own receive queue (no shared receive queue was made)"
else
    lab_fail no-srq "polluxd.log does not show the device queues made without a shared receive queue"
fi

t0=$(lab_up)
if perf tcp "trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:$NQN ns:1"; then
    lab_pass perf-tcp "the same job over NVMe/TCP: no errors ($(lab_secs_since "$t0") s, $(bw tcp) MiB/s; TCG timings, for the record only)"
else
    lab_fail perf-tcp "pollux-perf over NVMe/TCP failed: $(tail -3 "$LAB_ART/perf-tcp.log" | tr '\n' ' ' | cut -c1-400)"
fi

if lab_wait 20 stats_zero current_connections current_admin_qpairs current_io_qpairs iobuf_outstanding pending_bdev_io protocol_errors; then
    lab_pass pools-full "nvmf_get_stats after pollux-perf: no connection left, every buffer back (completed_nvme_io $(stat_sum completed_nvme_io))"
else
    cat "$LAB_WORK/stats.json"
    lab_fail pools-full "after pollux-perf: $(stats_zero current_connections current_admin_qpairs current_io_qpairs iobuf_outstanding pending_bdev_io protocol_errors)"
fi

# Data buffers: RDMA in SPDK's default 8 KiB units (io_unit_size 8192), so every
# request is small buffers, a scatter list of up to 16 pieces; TCP's 128 KiB unit takes
# a large buffer for anything above 8 KiB.
rs=$(( $(tr_stat RDMA cache small_pool) + $(tr_stat RDMA main small_pool) ))
rl=$(( $(tr_stat RDMA cache large_pool) + $(tr_stat RDMA main large_pool) ))
tl=$(( $(tr_stat TCP cache large_pool) + $(tr_stat TCP main large_pool) ))
if [ "$rs" -gt 0 ] && [ "$rl" -eq 0 ] && [ "$(tr_stat RDMA buf_cache_large)" -eq 0 ] && [ "$tl" -gt 0 ]; then
    lab_pass io-unit "RDMA requests held in 8 KiB units: $rs small buffers, no large one (the poll groups cache up to $(tr_stat RDMA buf_cache_small) small ones in all); TCP took $tl large buffers"
else
    grep -A40 '"transports"' "$LAB_WORK/stats.json" | head -60
    lab_fail io-unit "buffer units not as configured: RDMA small $rs large $rl, TCP large $tl"
fi

lab_clean_stop
lab_run rdma link delete rxe0
exit 0
