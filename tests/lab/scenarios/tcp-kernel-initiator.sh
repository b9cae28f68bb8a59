#!/bin/sh
# tcp-kernel-initiator: polluxd in the guest serves a RAM namespace and an io_uring
# namespace (a file in tmpfs) over NVMe/TCP on 127.0.0.1:4420; Linux 6.1's own initiator
# (nvme-tcp, nvme-cli) and fio use it: discovery, connect, identify, verified I/O with and
# without digests, host ACL, 20 disconnects under I/O (after which every pool must be
# full), namespace hot add and remove, clean stop.
# lab-timeout: 480
. /lab/lib.sh

NQN=nqn.2016-06.io.pollux:lab-tcp
ACL_NQN=nqn.2016-06.io.pollux:lab-acl
SN=POLLUXLAB00000000001
MN="Pollux lab target"
ALLOWED_HOST=nqn.2014-08.org.nvmexpress:uuid:5ef0c1e2-7a11-4c4b-9d1e-0000000000a2
ALLOWED_ID=5ef0c1e2-7a11-4c4b-9d1e-0000000000a2
DENIED_HOST=nqn.2014-08.org.nvmexpress:uuid:5ef0c1e2-7a11-4c4b-9d1e-0000000000d1
DENIED_ID=5ef0c1e2-7a11-4c4b-9d1e-0000000000d1
SOCK=/tmp/pollux.sock
ADDR=127.0.0.1
PORT=4420
RECONNECTS=${LAB_RECONNECTS:-20}
CFG=$LAB_ART/polluxd.json
URING_FILE=/tmp/lab/uring0.img

rpc() { pollux-rpc -s "$SOCK" -t 10 "$@"; }

# connect [nvme connect options]: connects to $NQN and waits for both namespaces. A lost
# connection is retried every 2 s for 15 s only (not 600), so that I/O fails fast.
connect() {
    lab_run timeout 60 nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" -l 15 -c 2 "$@" || return 1
    lab_wait 20 ns_dev "$NQN" 1 >/dev/null && lab_wait 10 ns_dev "$NQN" 2 >/dev/null
}

disconnect() {
    lab_run timeout 60 nvme disconnect -n "$NQN" || return 1
    lab_wait 20 no_ctrl "$NQN"
}

# ---- polluxd ----
truncate -s 64M "$URING_FILE"
cat >"$CFG" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 131072, "block_size": 512}},
  {"method": "bdev_uring_create", "params": {"name": "Uring0", "filename": "$URING_FILE", "block_size": 4096}},
  {"method": "bdev_null_create", "params": {"name": "Null0", "num_blocks": 16384, "block_size": 4096}}
 ]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN", "allow_any_host": true,
    "serial_number": "$SN", "model_number": "$MN"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "Malloc0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "Uring0", "nsid": 2}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN",
    "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "$ADDR", "trsvcid": "$PORT"}}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$ACL_NQN", "allow_any_host": false,
    "serial_number": "POLLUXLAB00000000002", "model_number": "Pollux lab ACL"}},
  {"method": "nvmf_subsystem_add_host", "params": {"nqn": "$ACL_NQN", "host": "$ALLOWED_HOST"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$ACL_NQN", "namespace": {"bdev_name": "Null0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$ACL_NQN",
    "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "$ADDR", "trsvcid": "$PORT"}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "discovery",
    "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "$ADDR", "trsvcid": "$PORT"}}}
 ]}
]}
EOF
lab_polluxd_start
if lab_wait 30 rpc nvmf_get_subsystems >"$LAB_ART/subsystems.json" 2>/dev/null; then
    lab_pass polluxd-start "polluxd (pid $PID) serves $NQN and $ACL_NQN on $ADDR:$PORT"
else
    tail -20 "$LAB_ART/polluxd.log"
    lab_abort polluxd-start "polluxd did not come up (see polluxd.log)"
fi

# ---- discovery, connect, identify ----
lab_run timeout 60 nvme discover -t tcp -a "$ADDR" -s "$PORT" >"$LAB_ART/discover.txt" 2>&1
rc=$?
cat "$LAB_ART/discover.txt"
if [ $rc -eq 0 ] && grep -q "subnqn: *$NQN\$" "$LAB_ART/discover.txt"; then
    lab_pass discover "nvme discover lists $NQN ($(grep -c '^=====Discovery Log Entry' "$LAB_ART/discover.txt") entries)"
else
    lab_fail discover "nvme discover (rc $rc) does not list $NQN"
fi

if connect; then
    CTRL=$(ctrl_of "$NQN")
    NS1=$(ns_dev "$NQN" 1)
    NS2=$(ns_dev "$NQN" 2)
    lab_pass connect "nvme connect: controller $CTRL, namespaces /dev/$NS1 (Malloc0) and /dev/$NS2 (Uring0)"
else
    lab_abort connect "nvme connect to $NQN failed, or its namespaces did not appear"
fi

lab_run nvme list >"$LAB_ART/nvme-list.txt" 2>&1
cat "$LAB_ART/nvme-list.txt"
if grep "$NS1 " "$LAB_ART/nvme-list.txt" | grep -F "$SN" | grep -qF "$MN"; then
    lab_pass nvme-list "nvme list shows /dev/$NS1 with serial $SN and model '$MN'"
else
    lab_fail nvme-list "nvme list does not show /dev/$NS1 with serial $SN and model '$MN'"
fi

lab_run nvme id-ctrl "/dev/$CTRL" >"$LAB_ART/id-ctrl.txt" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -qE "^sn +: $SN" "$LAB_ART/id-ctrl.txt" &&
    grep -qE "^mn +: $MN" "$LAB_ART/id-ctrl.txt" && grep -qE "^subnqn +: $NQN" "$LAB_ART/id-ctrl.txt"; then
    lab_pass id-ctrl "nvme id-ctrl parses: sn, mn and subnqn as configured, $(grep -E '^(mdts|kas|ioccsz|sgls) ' "$LAB_ART/id-ctrl.txt" | tr -s ' ' | tr '\n' ' ')"
else
    grep -E '^(vid|sn|mn|fr|subnqn) ' "$LAB_ART/id-ctrl.txt"
    lab_fail id-ctrl "nvme id-ctrl /dev/$CTRL: rc $rc, or sn/mn/subnqn differ from the config"
fi

idns_ok=1
for pair in "$NS1:131072:9" "$NS2:16384:12"; do
    dev=${pair%%:*}
    rest=${pair#*:}
    blocks=${rest%%:*}
    lbads=${rest#*:}
    lab_run nvme id-ns "/dev/$dev" >"$LAB_ART/id-ns-$dev.txt" 2>&1 || idns_ok=0
    nsze=$(awk '$1 == "nsze" { print $3 }' "$LAB_ART/id-ns-$dev.txt")
    grep -E '^(nsze|ncap|nuse|nlbaf|lbaf +0)' "$LAB_ART/id-ns-$dev.txt"
    [ "$((nsze))" -eq "$blocks" ] || { echo "$dev: nsze $nsze, expected $blocks"; idns_ok=0; }
    grep -qE "lbads:$lbads .*in use" "$LAB_ART/id-ns-$dev.txt" || { echo "$dev: LBA format in use is not lbads:$lbads"; idns_ok=0; }
done
if [ $idns_ok = 1 ]; then
    lab_pass id-ns "nvme id-ns parses: /dev/$NS1 131072 x 512 B, /dev/$NS2 16384 x 4 KiB"
else
    lab_fail id-ns "nvme id-ns: a size or LBA format differs from the bdevs"
fi

# ---- verified I/O, then again with header and data digests ----
t0=$(lab_up)
if fio_verify plain "$NS1" "$NS2"; then
    lab_pass fio-verify "randwrite 4k-1m QD32 then crc32c verify of /dev/$NS1 and /dev/$NS2: no error ($(lab_secs_since "$t0") s)"
else
    lab_fail fio-verify "fio randwrite+verify on /dev/$NS1 and /dev/$NS2 reported errors (fio-plain.txt)"
fi
disconnect || lab_fail disconnect "nvme disconnect failed or the controller stayed"

if connect -g -G; then
    NS1=$(ns_dev "$NQN" 1)
    NS2=$(ns_dev "$NQN" 2)
    lab_pass connect-digests "nvme connect -g -G (header and data digests): /dev/$NS1 /dev/$NS2"
    t0=$(lab_up)
    if fio_verify digests "$NS1" "$NS2"; then
        lab_pass fio-verify-digests "the same verified fio run with digests: no error ($(lab_secs_since "$t0") s)"
    else
        lab_fail fio-verify-digests "fio randwrite+verify with digests reported errors (fio-digests.txt)"
    fi
    disconnect || lab_fail disconnect "nvme disconnect failed or the controller stayed"
else
    lab_fail connect-digests "nvme connect -g -G failed"
fi

# ---- host ACL ----
denials=$(dmesg | grep -c 'is not allowed')
lab_run timeout 60 nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$ACL_NQN" \
    --hostnqn "$DENIED_HOST" --hostid "$DENIED_ID" >"$LAB_WORK/acl-denied" 2>&1
rc=$?
cat "$LAB_WORK/acl-denied"
# Refused for the right reason: the kernel logs the target's "invalid host" status.
if [ $rc -ne 0 ] && no_ctrl "$ACL_NQN" && [ "$(dmesg | grep -c 'is not allowed')" -gt "$denials" ]; then
    lab_pass acl-refused "a host not added to $ACL_NQN is refused: $(dmesg | grep -o 'Connect for subsystem.*not allowed.*' | tail -1)"
elif [ $rc -ne 0 ] && no_ctrl "$ACL_NQN"; then
    lab_fail acl-refused "the connect failed, but not with the invalid-host status (no 'is not allowed' from the kernel)"
else
    lab_fail acl-refused "nvme connect with host $DENIED_HOST to $ACL_NQN (allow_any_host false) was not refused"
fi
timeout 30 nvme disconnect -n "$ACL_NQN" >/dev/null 2>&1
if lab_run timeout 60 nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$ACL_NQN" \
    --hostnqn "$ALLOWED_HOST" --hostid "$ALLOWED_ID" && lab_wait 10 ns_dev "$ACL_NQN" 1 >/dev/null; then
    lab_pass acl-allowed "the added host connects to $ACL_NQN: /dev/$(ns_dev "$ACL_NQN" 1)"
else
    lab_fail acl-allowed "the host added with nvmf_subsystem_add_host cannot connect to $ACL_NQN"
fi
timeout 60 nvme disconnect -n "$ACL_NQN"
lab_wait 20 no_ctrl "$ACL_NQN"

if lab_wait 30 stats_zero current_connections protocol_errors; then
    lab_pass protocol-clean "so far every connection closed and no protocol error (nvmf_get_stats)"
else
    cat "$LAB_WORK/stats.json"
    lab_fail protocol-clean "after the tests above: $(stats_zero current_connections protocol_errors)"
fi
cp "$LAB_WORK/stats.json" "$LAB_ART/stats-before-reconnects.json"

# ---- disconnect and reconnect under I/O ----
lab_churn "$RECONNECTS" TCP
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
else
    lab_fail final-verify "cannot connect after the disconnects"
fi

# ---- namespace hot add and remove while connected ----
if [ -n "$(ctrl_of "$NQN")" ]; then
    rpc bdev_malloc_create name=Malloc1 num_blocks=32768 block_size=512 >/dev/null
    # The host rescans on the target's "namespace attribute changed" event and logs
    # "rescanning namespaces": that count shows the change came by AEN.
    rescans=$(dmesg | grep -c 'rescanning namespaces')
    t0=$(lab_up)
    if lab_run rpc nvmf_subsystem_add_ns nqn="$NQN" namespace.bdev_name=Malloc1 namespace.nsid=3 &&
        lab_wait 10 ns_dev "$NQN" 3 >/dev/null; then
        NS3=$(ns_dev "$NQN" 3)
        took=$(lab_secs_since "$t0")
        aen=$(($(dmesg | grep -c 'rescanning namespaces') - rescans))
        if ! dd if="/dev/$NS3" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null; then
            lab_fail ns-hot-add "/dev/$NS3 appeared after $took s but cannot be read"
        elif [ "$aen" -lt 1 ]; then
            lab_fail ns-hot-add "/dev/$NS3 appeared after $took s, but without a namespace-change AEN (no 'rescanning namespaces')"
        else
            lab_pass ns-hot-add "nvmf_subsystem_add_ns nsid 3: by AEN, /dev/$NS3 appeared after $took s and reads"
        fi
    else
        lab_fail ns-hot-add "no nsid 3 block device within 10 s of nvmf_subsystem_add_ns"
    fi
    rescans=$(dmesg | grep -c 'rescanning namespaces')
    t0=$(lab_up)
    if lab_run rpc nvmf_subsystem_remove_ns nqn="$NQN" nsid=3 && lab_wait 10 no_ns_dev "$NQN" 3; then
        took=$(lab_secs_since "$t0")
        aen=$(($(dmesg | grep -c 'rescanning namespaces') - rescans))
        if [ "$aen" -lt 1 ]; then
            lab_fail ns-hot-remove "the device went away after $took s, but without a namespace-change AEN"
        elif ! ns_dev "$NQN" 1 >/dev/null || ! ns_dev "$NQN" 2 >/dev/null; then
            lab_fail ns-hot-remove "removing nsid 3 took nsid 1 or 2 away too"
        else
            lab_pass ns-hot-remove "nvmf_subsystem_remove_ns nsid 3: by AEN, the device went away after $took s; nsid 1 and 2 stay"
        fi
    else
        lab_fail ns-hot-remove "the nsid 3 block device is still there 10 s after nvmf_subsystem_remove_ns"
    fi
    disconnect || lab_fail disconnect "nvme disconnect failed or the controller stayed"
else
    lab_fail ns-hot-add "not connected"
fi

# ---- clean stop ----
lab_clean_stop

exit 0
