#!/bin/sh
# nvme-export: polluxd attaches QEMU's NVMe controller with its userspace driver
# (bdev_nvme_attach_controller, trtype PCIe) and exports the namespace bdev Nvme0n1 over
# NVMe/TCP; the guest kernel's nvme-tcp initiator verifies data with fio (crc32c, 4k-1m,
# QD32), with zero errors; the
# driver's counters show the traffic; polluxd stops cleanly and the controller goes back
# to the kernel driver.
# lab-timeout: 420
. /lab/lib.sh

NQN=nqn.2016-06.io.pollux:lab-nvme
SOCK=/tmp/pollux-nvme.sock
ADDR=127.0.0.1
PORT=4421
CFG=$LAB_ART/polluxd.json
rpc() { pollux-rpc -s "$SOCK" -t 30 "$@"; }

NVME_BDF=$(lab_nvme_bdf) || lab_abort nvme "no QEMU NVMe controller"
lab_bind_vfio || lab_abort bind "pollux-setup bind $NVME_BDF failed"

cat >"$CFG" <<JSON
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_nvme_attach_controller", "params": {"name": "Nvme0", "trtype": "PCIe", "traddr": "$NVME_BDF"}}
 ]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN", "allow_any_host": true,
    "serial_number": "POLLUXLABNVME0000001", "model_number": "Pollux NVMe export"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "Nvme0n1", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN",
    "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "$ADDR", "trsvcid": "$PORT"}}}
 ]}
]}
JSON
NO_COLOR=1 RUST_LOG=${LAB_RUST_LOG:-info} polluxd -m 0x3 -c "$CFG" -r "$SOCK" >"$LAB_ART/polluxd.log" 2>&1 &
PID=$!
if lab_wait 60 rpc bdev_nvme_get_controllers >"$LAB_ART/controllers.json" 2>/dev/null; then
    cat "$LAB_ART/controllers.json"
    if grep -q '"model_number": "QEMU NVMe Ctrl"' "$LAB_ART/controllers.json"; then
        lab_pass attach "polluxd attached $NVME_BDF as Nvme0 (bdev_nvme_attach_controller); bdevs: $(grep -o '"Nvme0n[0-9]*"' "$LAB_ART/controllers.json" | tr '\n' ' ')"
    else
        lab_fail attach "bdev_nvme_get_controllers does not show QEMU's controller"
    fi
else
    tail -20 "$LAB_ART/polluxd.log"
    lab_abort attach "polluxd did not come up with the NVMe controller (see polluxd.log)"
fi

modprobe nvme-tcp
lab_run timeout 60 nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" -l 15 -c 2
DEV=
for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$NQN" ] || continue
    lab_wait 20 sh -c "ls -d $c/nvme*n1 /sys/class/nvme-subsystem/*/nvme*n1 2>/dev/null | grep -q ." || true
done
for s in /sys/class/nvme-subsystem/* /sys/class/nvme/*; do
    [ "$(cat "$s/subsysnqn" 2>/dev/null)" = "$NQN" ] || continue
    for d in "$s"/nvme*n1; do
        n=${d##*/}
        case "$n" in *c*) continue ;; esac
        [ -b "/dev/$n" ] && DEV=$n
    done
done
if [ -n "$DEV" ]; then
    lab_pass connect "the kernel's nvme-tcp initiator sees the exported namespace as /dev/$DEV"
    lab_run timeout -s KILL 240 fio --output="$LAB_ART/fio.txt" --eta=never --name=export --filename="/dev/$DEV" \
        --ioengine=libaio --direct=1 --rw=randwrite --bsrange=4k-1m --iodepth=32 --size=32m \
        --verify=crc32c --do_verify=1 --verify_fatal=1
    rc=$?
    grep -E 'err=|IOPS=' "$LAB_ART/fio.txt" | head
    if [ $rc -eq 0 ] && grep -q 'err= 0' "$LAB_ART/fio.txt"; then
        lab_pass fio-verify "fio randwrite 4k-1m QD32 with crc32c verify through NVMe/TCP to the userspace-driven controller: no errors"
    else
        lab_fail fio-verify "fio verify over the export failed (rc $rc)"
    fi
    rpc bdev_nvme_get_controllers >"$LAB_ART/controllers-after.json" 2>&1
    done_cmds=$(awk -F: '/"commands_completed"/ { gsub(/[ ,]/, "", $2); print $2 }' "$LAB_ART/controllers-after.json")
    split=$(awk -F: '/"split_ios"/ { gsub(/[ ,]/, "", $2); print $2 }' "$LAB_ART/controllers-after.json")
    if [ "${done_cmds:-0}" -gt 0 ]; then
        lab_pass driver-stats "the driver completed $done_cmds commands ($split bdev I/Os split at the controller's transfer limit)"
    else
        lab_fail driver-stats "counters: commands_completed=$done_cmds split_ios=$split"
    fi
    lab_run timeout 60 nvme disconnect -n "$NQN"
else
    lab_fail connect "no block device for $NQN after nvme connect"
fi

kill -TERM "$PID"
if lab_wait 30 sh -c "! kill -0 $PID 2>/dev/null"; then
    wait "$PID"
    rc=$?
    if [ $rc -eq 0 ] && grep -q "controller shut down" "$LAB_ART/polluxd.log"; then
        lab_pass stop "polluxd stopped on SIGTERM (exit 0) and shut the controller down"
    else
        lab_fail stop "polluxd exit $rc; controller shutdown logged: $(grep -c 'controller shut down' "$LAB_ART/polluxd.log")"
    fi
else
    lab_fail stop "polluxd did not stop on SIGTERM"
    kill -KILL "$PID"
fi
if lab_bind_kernel; then
    lab_pass rebind "back on the kernel nvme driver"
else
    lab_fail rebind "the controller did not come back to the kernel nvme driver"
fi
exit 0
