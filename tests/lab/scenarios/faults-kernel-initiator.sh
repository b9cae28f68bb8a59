#!/bin/sh
# faults-kernel-initiator: Linux 6.1's nvme-tcp host against polluxd's fault-injection
# bdevs. An error bdev fails writes with Write Fault (SCT 2, SC 80h): fio gets the I/O
# error (never a silent success) and the kernel logs the status as sent. A delay bdev made
# slower than the host's 3 s I/O timeout: the kernel times the writes out, recovers and
# reconnects, and fio's crc32c verify still finds every write (none lost); afterwards
# the target is idle with every buffer home.
# lab-timeout: 300
. /lab/lib.sh

NQN=nqn.2016-06.io.pollux:lab-faults
SOCK=/tmp/pollux-faults.sock
ADDR=127.0.0.1
PORT=4423
CFG=$LAB_ART/polluxd.json

rpc() { pollux-rpc -s "$SOCK" -t 10 "$@"; }

cat >"$CFG" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 8192, "block_size": 4096}},
  {"method": "bdev_malloc_create", "params": {"name": "M1", "num_blocks": 8192, "block_size": 4096}},
  {"method": "bdev_error_create", "params": {"base_name": "M0"}},
  {"method": "bdev_delay_create", "params": {"name": "D1", "base_bdev_name": "M1",
    "avg_read_latency": 0, "p99_read_latency": 0, "avg_write_latency": 0, "p99_write_latency": 0}}
 ]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN", "allow_any_host": true}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "EE_M0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "D1", "nsid": 2}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN",
    "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "$ADDR", "trsvcid": "$PORT"}}}
 ]}
]}
EOF
lab_polluxd_start
lab_wait 30 rpc bdev_get_bdevs >"$LAB_ART/bdevs.json" 2>/dev/null || {
    tail -20 "$LAB_ART/polluxd.log"
    lab_abort polluxd-start "polluxd did not come up (see polluxd.log)"
}
lab_pass polluxd-start "polluxd serves EE_M0 (error bdev) and D1 (delay bdev) on $ADDR:$PORT"

# A 3 s I/O timeout for the queues made from now on (the host default is 30 s).
modprobe nvme-tcp
echo 3 >/sys/module/nvme_core/parameters/io_timeout
# Reconnect 1 s after a loss, for up to 60 s.
lab_run timeout 60 nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" -c 1 -l 60
lab_wait 20 ns_dev "$NQN" 1 >/dev/null && lab_wait 10 ns_dev "$NQN" 2 >/dev/null
ERR_DEV=$(ns_dev "$NQN" 1)
DLY_DEV=$(ns_dev "$NQN" 2)
[ -n "$ERR_DEV" ] && [ -n "$DLY_DEV" ] || lab_abort connect "no block devices for $NQN"
CTRL=$(ctrl_of "$NQN")
lab_pass connect "/dev/$ERR_DEV (error bdev) and /dev/$DLY_DEV (delay bdev) on $CTRL, io_timeout $(cat /sys/module/nvme_core/parameters/io_timeout) s"

# ---- injected Write Faults reach fio as an I/O error ----
# Linux 6.1 takes a media error (SCT 2) as final: the write fails with ENODATA (fio's
# err=61, "critical medium error" in the kernel log). More faults are armed than the
# kernel would retry (nvme_core.max_retries, 5), should it retry.
rpc bdev_error_inject_error --json '{"name": "EE_M0", "io_type": "write", "error_type": "nvme_failure", "num": 12, "nvme_sct": 2, "nvme_sc": 128}'
dmesg -c >/dev/null
lab_run timeout -s KILL 60 fio --output="$LAB_ART/fio-errors.txt" --eta=never --name=errors \
    --filename="/dev/$ERR_DEV" --ioengine=libaio --direct=1 --rw=write --bs=4k --iodepth=1 --size=1m
rc=$?
dmesg >"$LAB_ART/dmesg-errors.txt"
grep -E 'err=' "$LAB_ART/fio-errors.txt" | head -3
grep -E 'sct 0x2 / sc 0x80|medium error' "$LAB_ART/dmesg-errors.txt" | head -3
ferr=$(grep -o 'err= *[0-9]*' "$LAB_ART/fio-errors.txt" | head -1 | tr -dc 0-9)
if [ $rc -ne 0 ] && [ "${ferr:-0}" -ne 0 ] && grep -q 'sct 0x2 / sc 0x80' "$LAB_ART/dmesg-errors.txt"; then
    lab_pass write-fault "fio's write failed (err=$ferr) and the kernel logged the Write Fault status as sent: $(grep -m1 -o 'I/O Error (sct 0x2 / sc 0x80)' "$LAB_ART/dmesg-errors.txt")"
else
    lab_fail write-fault "fio rc $rc, err=${ferr:-none}; SCT 2 / SC 80h in dmesg: $(grep -c 'sct 0x2 / sc 0x80' "$LAB_ART/dmesg-errors.txt")"
fi
rpc bdev_error_inject_error --json '{"name": "EE_M0", "io_type": "clear", "error_type": "failure"}'
if fio_verify errors-cleared "$ERR_DEV"; then
    lab_pass errors-cleared "once cleared, fio randwrite 4k-1m QD32 with crc32c verify on the error bdev: no errors"
else
    lab_fail errors-cleared "fio verify after the errors were cleared failed"
fi

# ---- delays beyond the host's timeout: recovery, reconnect, no write lost ----
dmesg -c >/dev/null
timeout -s KILL 200 fio --output="$LAB_ART/fio-delay.txt" --eta=never --name=delay \
    --filename="/dev/$DLY_DEV" --ioengine=libaio --direct=1 --rw=randwrite --bsrange=4k-64k \
    --iodepth=16 --size=16m --rate_iops=200 --verify=crc32c --do_verify=1 --verify_fatal=1 &
FIO=$!
sleep 3
rpc bdev_delay_update_latency --json '{"delay_bdev_name": "D1", "latency_type": "avg_write", "latency_us": 5000000}'
rpc bdev_delay_update_latency --json '{"delay_bdev_name": "D1", "latency_type": "p99_write", "latency_us": 5000000}'
# Wait for the host to time out and reconnect at least once, then make the bdev fast again.
lab_wait 60 sh -c 'dmesg | grep -q "timeout"'
lab_wait 30 sh -c 'dmesg | grep -qi "reconnect"'
rpc bdev_delay_update_latency --json '{"delay_bdev_name": "D1", "latency_type": "avg_write", "latency_us": 0}'
rpc bdev_delay_update_latency --json '{"delay_bdev_name": "D1", "latency_type": "p99_write", "latency_us": 0}'
wait $FIO
rc=$?
dmesg >"$LAB_ART/dmesg-delay.txt"
grep -E 'timeout|recovery|econnect' "$LAB_ART/dmesg-delay.txt" | head -8
grep -E 'err=|IOPS=|verify' "$LAB_ART/fio-delay.txt" | head
timeouts=$(grep -c 'timeout' "$LAB_ART/dmesg-delay.txt")
reconnects=$(grep -ci 'successfully reconnected' "$LAB_ART/dmesg-delay.txt")
if [ "$timeouts" -gt 0 ] && [ "$reconnects" -gt 0 ]; then
    lab_pass host-timeout "writes held 5 s by the delay bdev timed out at the host ($timeouts timeout lines); the host recovered and reconnected $reconnects times"
else
    lab_fail host-timeout "timeouts $timeouts, reconnects $reconnects (see dmesg-delay.txt)"
fi
if [ $rc -eq 0 ] && grep -q 'err= 0' "$LAB_ART/fio-delay.txt"; then
    lab_pass no-write-lost "fio randwrite 4k-64k with crc32c verify across the timeouts and reconnects: every block intact"
else
    lab_fail no-write-lost "fio rc $rc across the timeouts (see fio-delay.txt)"
fi

lab_run timeout 60 nvme disconnect -n "$NQN"
lab_wait 20 no_ctrl "$NQN"
if lab_wait 20 stats_zero current_connections current_admin_qpairs current_io_qpairs iobuf_outstanding pending_bdev_io; then
    lab_pass pools-full "after the faults and the disconnect: no connection, queue pair, buffer or bdev I/O left"
else
    cat "$LAB_WORK/stats.json"
    lab_fail pools-full "$(stats_zero current_connections current_admin_qpairs current_io_qpairs iobuf_outstanding pending_bdev_io)"
fi
lab_clean_stop
exit 0
