#!/bin/sh
# ana-multipath: Linux 6.1's native NVMe multipath (nvme_core.multipath=Y) over two
# polluxd gateways in the guest that export the same subsystem NQN and namespace (one
# shared tmpfs file) with ANA reporting and their own controller ID ranges. The kernel
# sees one subsystem with two paths and their ANA states (sysfs, nvme list-subsys);
# fio randwrite with crc32c verify runs while gateway A's path is set inaccessible,
# then while gateway B is killed (SIGKILL) and started again: the kernel moves the I/O
# each time and fio finds every block. Then nvme-cli's Persistent Reservations on
# gateway A's controller: register (with Persist Through Power Loss), acquire Write
# Exclusive, report; another host's (pollux-perf's) write meets Reservation Conflict
# while its read passes; the reservation survives a restart of gateway A (its
# ptpl_file); release and unregister free the writes again.
# lab-timeout: 360
. /lab/lib.sh

NQN=nqn.2016-06.io.pollux:lab-ana
ADDR=127.0.0.1
PA=4430
PB=4431
IMG=/tmp/ana-shared.img
UUID=5c1a0b4e-2f3d-4e5a-8b6c-7d8e9fa0b1c2
NGUID=5C1A0B4E2F3D4E5A8B6C7D8E9FA0B1C2

rpc_a() { pollux-rpc -s /tmp/pollux-ana-a.sock -t 10 "$@"; }
rpc_b() { pollux-rpc -s /tmp/pollux-ana-b.sock -t 10 "$@"; }
rpc() { rpc_a "$@"; }

# gateway TAG PORT MIN_CNTLID CORE_MASK: a polluxd exporting the shared file as
# namespace 1 of $NQN (ANA reporting; controller IDs MIN..MIN+99) on $ADDR:PORT.
gateway() {
    _cfg=$LAB_ART/polluxd-$1.json
    cat >"$_cfg" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_uring_create", "params": {"name": "U0", "filename": "$IMG", "block_size": 4096}}
 ]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN", "allow_any_host": true,
    "serial_number": "POLLUXANA0001", "model_number": "Pollux ANA gateway",
    "ana_reporting": true, "min_cntlid": $3, "max_cntlid": $(($3 + 99))}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace":
    {"bdev_name": "U0", "nsid": 1, "uuid": "$UUID", "nguid": "$NGUID", "ptpl_file": "/tmp/ana-$1.ptpl"}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN",
    "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "$ADDR", "trsvcid": "$2"}}}
 ]}
]}
EOF
    NO_COLOR=1 RUST_LOG=${LAB_RUST_LOG:-info} polluxd -m "$4" --small-pools -c "$_cfg" \
        -r "/tmp/pollux-ana-$1.sock" >>"$LAB_ART/polluxd-$1.log" 2>&1 &
    eval "PID_$1=\$!"
    lab_wait 30 pollux-rpc -s "/tmp/pollux-ana-$1.sock" -t 5 bdev_get_bdevs >/dev/null 2>&1
}

# set_ana RPC PORT STATE: every ANA group of that gateway's listener to STATE.
set_ana() {
    $1 nvmf_subsystem_listener_set_ana_state --json "{\"nqn\": \"$NQN\", \"ana_state\": \"$3\",
      \"listen_address\": {\"trtype\": \"TCP\", \"adrfam\": \"IPv4\", \"traddr\": \"$ADDR\", \"trsvcid\": \"$2\"}}" >/dev/null
}

# The kernel's path (nvmeXcYnZ) through the controller connected to PORT.
path_of() {
    for c in /sys/class/nvme/nvme*; do
        [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$NQN" ] || continue
        grep -q "trsvcid=$1" "$c/address" 2>/dev/null || continue
        for p in "$c"/nvme*c*n1; do
            [ -e "$p/ana_state" ] && { echo "$p"; return 0; }
        done
    done
    return 1
}
# ana_is PORT STATE: the kernel sees that path in STATE (optimized, non-optimized, ...).
ana_is() { _p=$(path_of "$1") && [ "$(cat "$_p/ana_state")" = "$2" ]; }
# live PORT: the controller of that path is live.
live() { _p=$(path_of "$1") && [ "$(cat "${_p%/*}/state")" = live ]; }
# Writes the gateway's bdev has done.
writes() { $1 bdev_get_iostat --json '{"name": "U0"}' 2>/dev/null | awk -F: '/"num_write_ops"/ { gsub(/[ ,]/, "", $2); print $2 }'; }
# more RPC N: the gateway has done more than N writes.
more() { [ "$(writes "$1")" -gt "$2" ] 2>/dev/null; }
# grows SECONDS RPC: the gateway's writes grow within SECONDS.
grows() {
    _g0=$(writes "$2")
    lab_wait "$1" more "$2" "${_g0:-0}"
}
# still RPC: the gateway's writes do not move for 2 s.
still() {
    _w0=$(writes "$1")
    sleep 2
    [ "$(writes "$1")" = "$_w0" ]
}

mp=$(cat /sys/module/nvme_core/parameters/multipath 2>/dev/null)
[ "$mp" = Y ] || lab_abort native-multipath "nvme_core.multipath is '${mp:-missing}', not Y"

dd if=/dev/zero of="$IMG" bs=1M count=64 2>/dev/null
gateway a $PA 1 0x1 || lab_abort gateways "gateway A did not come up (see polluxd-a.log)"
gateway b $PB 100 0x2 || lab_abort gateways "gateway B did not come up (see polluxd-b.log)"
lab_pass gateways "two polluxd gateways export $NQN namespace 1 (one shared file) with ana_reporting: A on :$PA (cntlid 1-99), B on :$PB (cntlid 100-199)"

modprobe nvme-tcp
for p in $PA $PB; do
    lab_run timeout 60 nvme connect -t tcp -a "$ADDR" -s "$p" -n "$NQN" -c 1 -l 120 || lab_abort connect "nvme connect to :$p failed"
done
lab_wait 20 path_of $PA >/dev/null && lab_wait 20 path_of $PB >/dev/null || lab_abort connect "the kernel has no two paths to $NQN"
lab_wait 20 ns_dev "$NQN" 1 >/dev/null || lab_abort connect "no multipath block device for $NQN"
DEV=$(ns_dev "$NQN" 1)
nvme list-subsys >"$LAB_ART/list-subsys.txt" 2>&1
nvme list-subsys "/dev/$DEV" >>"$LAB_ART/list-subsys.txt" 2>&1
cat "$LAB_ART/list-subsys.txt"
ca=$(cat "$(path_of $PA)/../cntlid" 2>/dev/null)
cb=$(cat "$(path_of $PB)/../cntlid" 2>/dev/null)
heads=$(ls -d /sys/block/nvme*n1 2>/dev/null | grep -vc c)
if ana_is $PA optimized && ana_is $PB optimized && [ "$(grep -c "live optimized" "$LAB_ART/list-subsys.txt")" -ge 2 ] &&
    [ "${ca:-0}" -lt 100 ] && [ "${cb:-0}" -ge 100 ]; then
    lab_pass two-paths "one subsystem, one disk /dev/$DEV, nvme list-subsys: two paths 'live optimized' (cntlid $ca via A, $cb via B)"
else
    lab_fail two-paths "ANA states A=$(cat "$(path_of $PA)/ana_state" 2>/dev/null) B=$(cat "$(path_of $PB)/ana_state" 2>/dev/null), cntlids $ca/$cb, heads $heads (see list-subsys.txt)"
fi
# Round robin across optimized paths, so both carry I/O while both are optimized.
for s in /sys/class/nvme-subsystem/*; do
    [ "$(cat "$s/subsysnqn" 2>/dev/null)" = "$NQN" ] && echo round-robin >"$s/iopolicy"
done

# fio: random writes with crc32c verify of every 16 written, for the whole sequence.
timeout -s KILL 250 fio --output="$LAB_ART/fio-failover.txt" --eta=never --name=failover \
    --filename="/dev/$DEV" --ioengine=libaio --direct=1 --rw=randwrite --bsrange=4k-64k \
    --iodepth=8 --size=32m --time_based --runtime=90 --rate_iops=150 \
    --verify=crc32c --verify_backlog=16 --verify_fatal=1 &
FIO=$!
if grows 20 rpc_a && grows 20 rpc_b; then
    lab_pass both-used "both optimized (round-robin iopolicy): writes reach A and B"
else
    lab_fail both-used "writes reach A: $(writes rpc_a), B: $(writes rpc_b)"
fi

# ---- A inaccessible: everything goes through B ----
t0=$(lab_up)
set_ana rpc_a $PA inaccessible
if lab_wait 20 ana_is $PA inaccessible; then
    seen=$(lab_secs_since "$t0")
    nvme list-subsys "/dev/$DEV" >"$LAB_ART/list-subsys-inaccessible.txt" 2>&1
    grep "trsvcid=$PA" "$LAB_ART/list-subsys-inaccessible.txt"
    if grep "trsvcid=$PA" "$LAB_ART/list-subsys-inaccessible.txt" | grep -q inaccessible &&
        lab_wait 10 still rpc_a && grows 10 rpc_b; then
        lab_pass inaccessible "A set inaccessible: the kernel saw it after ${seen} s (ANA Change event, log page) and sent every write to B"
    else
        lab_fail inaccessible "A inaccessible, but writes still reach A (or none reach B)"
    fi
else
    lab_fail inaccessible "the kernel still sees A as $(cat "$(path_of $PA)/ana_state" 2>/dev/null)"
fi
# ---- A non-optimized: still everything through B, the optimized path ----
set_ana rpc_a $PA non_optimized
if lab_wait 20 ana_is $PA non-optimized && lab_wait 10 still rpc_a; then
    lab_pass non-optimized "A non-optimized: the kernel keeps to B, the optimized path"
else
    lab_fail non-optimized "A is $(cat "$(path_of $PA)/ana_state" 2>/dev/null); writes on A: $(writes rpc_a)"
fi

# ---- B killed: the kernel fails over to A (non-optimized), then B comes back ----
w0=$(writes rpc_a)
kill -KILL "$PID_b"
t0=$(lab_up)
if lab_wait 60 more rpc_a "$w0"; then
    lab_pass gateway-killed "B killed (SIGKILL): the kernel failed over to A, the non-optimized path; writes reached A $(lab_secs_since "$t0") s after the kill"
else
    lab_fail gateway-killed "no writes reached A within 60 s of B's kill"
fi
sleep 3
t0=$(lab_up)
gateway b $PB 100 0x2 || lab_fail gateway-back "gateway B did not start again"
if lab_wait 60 live $PB && lab_wait 20 ana_is $PB optimized && grows 20 rpc_b && lab_wait 10 still rpc_a; then
    lab_pass gateway-back "B started again: the kernel reconnected its path and moved the writes back to it, the optimized one, within $(lab_secs_since "$t0") s"
else
    lab_fail gateway-back "B's path is $(cat "$(path_of $PB)/../state" 2>/dev/null), not back in use"
fi

wait $FIO
rc=$?
grep -E 'err=|IOPS=|verify' "$LAB_ART/fio-failover.txt" | head
if [ $rc -eq 0 ] && grep -q 'err= 0' "$LAB_ART/fio-failover.txt"; then
    lab_pass verify "fio randwrite 4k-64k with crc32c verify across the ANA change, the kill and the return: zero errors"
else
    lab_fail verify "fio rc $rc (see fio-failover.txt)"
fi
dmesg | grep -iE 'ana|failover|reconnect|nvme' | tail -30 >"$LAB_ART/dmesg-failover.txt"

if fio_verify both-paths "$DEV"; then
    lab_pass both-paths "both paths live: fio randwrite 4k-1m QD32 with crc32c verify, zero errors"
else
    lab_fail both-paths "fio verify with both paths failed"
fi
# ---- Persistent Reservations with nvme-cli, on gateway A ----
CA=$(basename "$(dirname "$(path_of $PA)")")
other() { # other RW: pollux-perf, another host, does one 4 KiB RW on gateway A
    pollux-perf --name=other --ioengine=nvmf --rw="$1" --bs=4k --size=4k --iodepth=1 \
        --target="trtype:tcp adrfam:ipv4 traddr:$ADDR trsvcid:$PA subnqn:$NQN ns:1" >"$LAB_ART/perf-$1-$2.txt" 2>&1
}
report() { nvme resv-report "/dev/$CA" -n 1 --eds -o json >"$LAB_ART/resv-report-$1.json" 2>&1; cat "$LAB_ART/resv-report-$1.json"; }
holds() { # holds TAG: the report shows a Write Exclusive reservation held with key 0xabc
    report "$1" >/dev/null && grep -Eq '"rtype" *: *1' "$LAB_ART/resv-report-$1.json" &&
        grep -Eq '"rkey" *: *2748' "$LAB_ART/resv-report-$1.json"
}
lab_run nvme resv-register "/dev/$CA" -n 1 --nrkey=0xabc --rrega=0 --cptpl=3 &&
    lab_run nvme resv-acquire "/dev/$CA" -n 1 --crkey=0xabc --rtype=1 --racqa=0
report taken
if holds taken; then
    lab_pass resv-acquire "nvme resv-register (PTPL on) and resv-acquire Write Exclusive on /dev/$CA (gateway A): resv-report shows type 1, key 0xabc"
else
    lab_fail resv-acquire "resv-report does not show the reservation (see resv-report-taken.json)"
fi
if ! other write conflict && grep -q "reservation conflict" "$LAB_ART/perf-write-conflict.txt" && other read ok; then
    lab_pass resv-conflict "another host (pollux-perf) meets Reservation Conflict on a write, its read passes; the holder's writes pass"
else
    lab_fail resv-conflict "other host: $(tail -2 "$LAB_ART/perf-write-conflict.txt") / read: $(tail -1 "$LAB_ART/perf-read-ok.txt")"
fi
kill -TERM "$PID_a"
lab_wait 20 eval '! lab_alive $PID_a'
gateway a $PA 1 0x1 || lab_fail resv-ptpl "gateway A did not start again"
if lab_wait 60 live $PA && holds restarted; then
    lab_pass resv-ptpl "gateway A restarted: the reservation is back from its ptpl_file (Persist Through Power Loss)"
else
    lab_fail resv-ptpl "after the restart: $(head -c 300 "$LAB_ART/resv-report-restarted.json")"
fi
lab_run nvme resv-release "/dev/$CA" -n 1 --crkey=0xabc --rtype=1 --rrela=0
lab_run nvme resv-register "/dev/$CA" -n 1 --crkey=0xabc --rrega=1
report released
if other write free && ! grep -Eq '"rtype" *: *1' "$LAB_ART/resv-report-released.json"; then
    lab_pass resv-release "nvme resv-release and unregister: no reservation left, the other host writes again"
else
    lab_fail resv-release "$(tail -2 "$LAB_ART/perf-write-free.txt")"
fi

lab_run timeout 60 nvme disconnect -n "$NQN"
lab_wait 20 no_ctrl "$NQN"
kill -TERM "$PID_a" "$PID_b"
lab_wait 20 eval '! lab_alive $PID_a && ! lab_alive $PID_b' || lab_fail clean-stop "a gateway still runs 20 s after SIGTERM"
exit 0
