# Guest helpers, sourced by /init and by every scenario (busybox sh).
#
# A scenario records checks with lab_pass / lab_fail; each also prints a line on the
# console. /init turns the recorded checks into machine-readable lines on the lab
# channel (the second serial port) once the scenario has ended, along with every file
# the scenario left in $LAB_ART.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
LAB_SCENARIO=${LAB_SCENARIO:-init}
LAB_ART=/tmp/lab/art/$LAB_SCENARIO
LAB_WORK=/tmp/lab/work/$LAB_SCENARIO
mkdir -p "$LAB_ART" "$LAB_WORK"

# Values /init read from the kernel command line.
[ -f /tmp/lab/env ] && . /tmp/lab/env

lab_up() { cut -d' ' -f1 /proc/uptime; }
lab_note() { echo "[$(lab_up)] $LAB_SCENARIO: $*"; }

# lab_check_forced NAME: true if the command line asked for this check to fail
# (lab.force_fail=NAME or SCENARIO/NAME, comma-separated), to test the harness itself.
lab_check_forced() {
    case ",${LAB_FORCE_FAIL:-}," in
    *",$1,"* | *",$LAB_SCENARIO/$1,"*) return 0 ;;
    esac
    return 1
}

lab_pass() {
    _n=$1
    shift
    if lab_check_forced "$_n"; then
        lab_fail "$_n" "forced to fail by lab.force_fail (it passed: $*)"
        return
    fi
    echo "$_n PASS $*" >>"$LAB_ART/.checks"
    echo "[$(lab_up)] CHECK $LAB_SCENARIO/$_n PASS $*"
}

lab_fail() {
    _n=$1
    shift
    echo "$_n FAIL $*" >>"$LAB_ART/.checks"
    echo "[$(lab_up)] CHECK $LAB_SCENARIO/$_n FAIL $*"
    dmesg | tail -n 12 | sed 's/^/    dmesg: /'
}

# lab_check NAME DETAIL CMD...: runs CMD and records NAME as passed when it succeeds.
lab_check() {
    _cn=$1 _cd=$2
    shift 2
    if "$@"; then lab_pass "$_cn" "$_cd"; else lab_fail "$_cn" "$_cd (failed: $*)"; fi
}

# lab_run CMD...: prints the command, then runs it; its output goes to the console.
lab_run() {
    echo "+ $*"
    "$@"
}

# lab_wait SECONDS CMD...: retries CMD every 0.2 s until it succeeds or time runs out.
lab_wait() {
    _end=$(awk -v u="$(lab_up)" -v t="$1" 'BEGIN { print u + t }')
    shift
    while :; do
        "$@" && return 0
        awk -v u="$(lab_up)" -v e="$_end" 'BEGIN { exit !(u < e) }' || return 1
        sleep 0.2
    done
}

# lab_alive PID: the process runs (a zombie that nobody waited for yet does not count).
lab_alive() {
    [ -r "/proc/$1/status" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# lab_secs_since UPTIME: seconds elapsed since that uptime, one decimal.
lab_secs_since() { awk -v a="$1" -v b="$(lab_up)" 'BEGIN { printf "%.1f", b - a }'; }

# Ends the scenario early (the checks so far stand; /init reports the rest as missing).
lab_abort() {
    lab_fail "${1:-abort}" "${2:-cannot go on}"
    exit 1
}

if [ "$LAB_SCENARIO" != init ]; then
    # /init kills this process group when the scenario ends or times out.
    echo $$ >"$LAB_ART/.pid"
fi

# lab_nvme_bdf: the PCI address of QEMU's emulated NVMe controller (class 010802,
# vendor 1b36), or nothing.
lab_nvme_bdf() {
    for _d in /sys/bus/pci/devices/*; do
        if [ "$(cat "$_d/class")" = 0x010802 ] && [ "$(cat "$_d/vendor")" = 0x1b36 ]; then
            echo "${_d##*/}"
            return 0
        fi
    done
    return 1
}

# lab_vfio_tests NAME...: runs the userspace driver's tests (nvme/tests/vfio.rs) on
# $NVME_BDF, one lab check per test, its CHECK lines in the detail.
lab_vfio_tests() {
    for _t in "$@"; do
        _log=$LAB_ART/vfio-$_t.log
        if POLLUX_NVME_BDF=$NVME_BDF POLLUX_NVME_SERIAL=${LAB_NVME_SERIAL:-} POLLUX_NVME_FW=${LAB_NVME_FW:-} \
            RUST_BACKTRACE=1 timeout 300 pollux-nvme-vfio-tests --ignored --exact "$_t" --nocapture --test-threads=1 >"$_log" 2>&1 &&
            grep -q 'test result: ok. 1 passed' "$_log"; then
            lab_pass "$_t" "$(grep -oE '(CHECK|IDENTIFY|STATS|CMB) .*' "$_log" | sed 's/^CHECK //' | tr '\n' ';' | cut -c1-600)"
        else
            lab_fail "$_t" "$(grep -E 'panicked|assert|Error|error' "$_log" | head -4 | tr '\n' ' ' | cut -c1-600)"
            tail -30 "$_log"
        fi
    done
}

# lab_json_sum FILE KEY: the sum of every `"KEY": N` in a pretty-printed JSON file.
lab_json_sum() {
    awk -F: -v k="\"$2\"" '$1 ~ k { gsub(/[ ,]/, "", $2); s += $2 } END { print s + 0 }' "$1"
}

# lab_bind_vfio / lab_bind_kernel: hands $NVME_BDF to vfio-pci or back to the nvme driver.
lab_bind_vfio() {
    modprobe vfio-pci && modprobe vfio_iommu_type1
    pollux-setup bind "$NVME_BDF"
}
# lab_bind_kernel also waits for the controller's namespace 1 as a block device; its
# name (nvmeXn1, X not always 0) is then $PCI_DEV.
lab_bind_kernel() {
    pollux-setup unbind "$NVME_BDF" && lab_wait 30 pci_ns_dev >/dev/null && PCI_DEV=$(pci_ns_dev)
}

# pci_ns_dev: the block device of namespace 1 of the PCIe controller $NVME_BDF under the
# kernel's driver, found by its subsystem NQN (the name depends on what came before).
pci_ns_dev() {
    for c in /sys/bus/pci/devices/"$NVME_BDF"/nvme/nvme*; do
        ns_dev "$(cat "$c/subsysnqn" 2>/dev/null)" 1 && return 0
    done
    return 1
}

# lab_polluxd_start [SUFFIX]: polluxd on both cores with config $CFG and RPC socket
# $SOCK, logging to polluxd$SUFFIX.log in the artifacts; its pid is then $PID.
lab_polluxd_start() {
    NO_COLOR=1 RUST_LOG=${LAB_RUST_LOG:-info} polluxd -m 0x3 -c "$CFG" -r "$SOCK" >"$LAB_ART/polluxd${1:-}.log" 2>&1 &
    PID=$!
}

# lab_nvme_export EXTRA_ATTACH_PARAMS [EXTRA_TRANSPORT_PARAMS]: polluxd attaches
# $NVME_BDF (bound to vfio-pci) as Nvme0 with bdev_nvme_attach_controller (plus
# EXTRA_ATTACH_PARAMS, JSON members with a leading comma; the same for the transport)
# and exports Nvme0n1 over NVMe/TCP on 127.0.0.1:4421, or over NVMe/RDMA on
# 10.0.2.15:4421 with LAB_TRTYPE=rdma (rxe0 must be up); the kernel's initiator verifies
# data with fio; the driver's counters are left in $LAB_ART/controllers-after.json and
# the target's in $LAB_ART/nvmf-stats.json (fio's in fio.txt; LAB_EXPORT_TAG=T names the
# checks T-... and the files ...-T instead); polluxd stops on SIGTERM and the controller
# goes back to the kernel driver.
lab_nvme_export() {
    # A tagged run (LAB_EXPORT_TAG) names its checks TAG-... and its files ...-TAG.
    P=${LAB_EXPORT_TAG:+$LAB_EXPORT_TAG-}
    S=${LAB_EXPORT_TAG:+-$LAB_EXPORT_TAG}
    NQN=nqn.2016-06.io.pollux:lab-nvme
    SOCK=/tmp/pollux-nvme.sock
    TRTYPE=${LAB_TRTYPE:-tcp}
    ADDR=127.0.0.1
    [ "$TRTYPE" = rdma ] && ADDR=10.0.2.15
    TR=$(echo "$TRTYPE" | tr a-z A-Z)
    PORT=4421
    CFG=$LAB_ART/polluxd$S.json
    rpc() { pollux-rpc -s "$SOCK" -t 30 "$@"; }

    cat >"$CFG" <<JSON
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_nvme_attach_controller", "params": {"name": "Nvme0", "trtype": "PCIe", "traddr": "$NVME_BDF"$1}}
 ]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "$TR"${2:-}}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN", "allow_any_host": true,
    "serial_number": "POLLUXLABNVME0000001", "model_number": "Pollux NVMe export"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN", "namespace": {"bdev_name": "Nvme0n1", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN",
    "listen_address": {"trtype": "$TR", "adrfam": "IPv4", "traddr": "$ADDR", "trsvcid": "$PORT"}}}
 ]}
]}
JSON
    lab_polluxd_start "$S"
    if lab_wait 60 rpc bdev_nvme_get_controllers >"$LAB_ART/controllers$S.json" 2>/dev/null; then
        cat "$LAB_ART/controllers$S.json"
        if grep -q '"model_number": "QEMU NVMe Ctrl"' "$LAB_ART/controllers$S.json"; then
            lab_pass "${P}attach" "polluxd attached $NVME_BDF as Nvme0 (bdev_nvme_attach_controller); bdevs: $(grep -o '"Nvme0n[0-9]*"' "$LAB_ART/controllers$S.json" | tr '\n' ' ')"
        else
            lab_fail "${P}attach" "bdev_nvme_get_controllers does not show QEMU's controller"
        fi
    else
        tail -20 "$LAB_ART/polluxd$S.log"
        lab_abort "${P}attach" "polluxd did not come up with the NVMe controller (see polluxd.log)"
    fi

    modprobe "nvme-$TRTYPE"
    lab_run timeout 60 nvme connect -t "$TRTYPE" -a "$ADDR" -s "$PORT" -n "$NQN" -l 15 -c 2
    # The namespace scan runs after connect returns: wait for the disk's block device.
    lab_wait 30 ns_dev "$NQN" 1 >/dev/null
    DEV=$(ns_dev "$NQN" 1)
    if [ -n "$DEV" ]; then
        lab_pass "${P}connect" "the kernel's nvme-$TRTYPE initiator sees the exported namespace as /dev/$DEV"
        lab_run timeout -s KILL 240 fio --output="$LAB_ART/fio$S.txt" --eta=never --name=export --filename="/dev/$DEV" \
            --ioengine=libaio --direct=1 --rw=randwrite --bsrange=4k-1m --iodepth=32 --size=32m \
            --verify=crc32c --do_verify=1 --verify_fatal=1
        rc=$?
        grep -E 'err=|IOPS=' "$LAB_ART/fio$S.txt" | head
        if [ $rc -eq 0 ] && grep -q 'err= 0' "$LAB_ART/fio$S.txt"; then
            lab_pass "${P}fio-verify" "fio randwrite 4k-1m QD32 with crc32c verify through NVMe/$TR to the userspace-driven controller: no errors"
        else
            lab_fail "${P}fio-verify" "fio verify over the export failed (rc $rc)"
        fi
        rpc bdev_nvme_get_controllers >"$LAB_ART/controllers-after$S.json" 2>&1
        rpc nvmf_get_stats >"$LAB_ART/nvmf-stats$S.json" 2>&1
        done_cmds=$(lab_json_sum "$LAB_ART/controllers-after$S.json" commands_completed)
        split=$(lab_json_sum "$LAB_ART/controllers-after$S.json" split_ios)
        if [ "${done_cmds:-0}" -gt 0 ]; then
            lab_pass "${P}driver-stats" "the driver completed $done_cmds commands ($split bdev I/Os split at the controller's transfer limit)"
        else
            lab_fail "${P}driver-stats" "counters: commands_completed=$done_cmds split_ios=$split"
        fi
        lab_run timeout 60 nvme disconnect -n "$NQN"
        lab_wait 30 no_ctrl "$NQN" || echo "the fabrics controller of $NQN is still there"
    else
        lab_fail "${P}connect" "no block device for $NQN after nvme connect"
    fi

    kill -TERM "$PID"
    if lab_wait 30 sh -c "! kill -0 $PID 2>/dev/null"; then
        wait "$PID"
        rc=$?
        if [ $rc -eq 0 ] && grep -q "controller shut down" "$LAB_ART/polluxd$S.log"; then
            lab_pass "${P}stop" "polluxd stopped on SIGTERM (exit 0) and shut the controller down"
        else
            lab_fail "${P}stop" "polluxd exit $rc; controller shutdown logged: $(grep -c 'controller shut down' "$LAB_ART/polluxd$S.log")"
        fi
    else
        lab_fail "${P}stop" "polluxd did not stop on SIGTERM"
        kill -KILL "$PID"
    fi
    if lab_bind_kernel; then
        lab_pass "${P}rebind" "back on the kernel nvme driver"
    else
        lab_fail "${P}rebind" "the controller did not come back to the kernel nvme driver"
    fi
}

# ---- NVMe-oF helpers of the kernel-initiator scenarios (each defines rpc) ----

# The controller (nvmeX) connected to subsystem $1, if any.
ctrl_of() {
    for c in /sys/class/nvme/nvme*; do
        [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$1" ] && { echo "${c##*/}"; return 0; }
    done
    return 1
}

# The block device (nvmeXnY) of namespace $2 of subsystem $1, if there is one.
ns_dev() {
    for s in /sys/class/nvme-subsystem/* /sys/class/nvme/*; do
        [ "$(cat "$s/subsysnqn" 2>/dev/null)" = "$1" ] || continue
        for d in "$s"/nvme*n"$2"; do
            n=${d##*/}
            case "$n" in *c*) continue ;; esac # nvmeXcYnZ: a multipath path, not the disk
            [ -b "/dev/$n" ] && { echo "$n"; return 0; }
        done
    done
    return 1
}
no_ns_dev() { ! ns_dev "$@" >/dev/null; }
no_ctrl() { ! ctrl_of "$1" >/dev/null; }

# fio_verify TAG DEV...: random writes of 4 KiB to 1 MiB at QD32 on each device (in
# parallel), then every block read back and checked (crc32c).
fio_verify() {
    _tag=$1
    shift
    _jobs=
    for _d in "$@"; do _jobs="$_jobs --name=$_d --filename=/dev/$_d"; done
    lab_run timeout -s KILL 150 fio --output="$LAB_ART/fio-$_tag.txt" --eta=never \
        --ioengine=libaio --direct=1 --rw=randwrite --bsrange=4k-1m --iodepth=32 --size=24m \
        --verify=crc32c --do_verify=1 --verify_fatal=1 $_jobs
    _rc=$?
    grep -E 'err=|IOPS=|verify' "$LAB_ART/fio-$_tag.txt" | head -20
    [ "$_rc" -eq 0 ] && [ "$(grep -c 'err= 0' "$LAB_ART/fio-$_tag.txt")" -eq $# ]
}

# stats_zero FIELD...: nvmf_get_stats shows 0 for every FIELD in every poll group.
stats_zero() {
    if ! rpc nvmf_get_stats >"$LAB_WORK/stats.json" 2>&1; then
        echo "nvmf_get_stats failed: $(head -c 300 "$LAB_WORK/stats.json")"
        return 1
    fi
    awk -v fields=" $* " '
        /"name":/ { groups++ }
        {
            if (match($0, /"[a-z_]+": *[0-9]+/)) {
                kv = substr($0, RSTART, RLENGTH); split(kv, p, /: */); k = p[1]; gsub(/"/, "", k)
                if (index(fields, " " k " ") && p[2] + 0 != 0) { bad = bad " " k "=" p[2] }
            }
        }
        END { if (bad != "") print "non-zero:" bad; exit !(groups > 0 && bad == "") }
    ' "$LAB_WORK/stats.json"
}
stat_sum() { awk -v k="\"$1\":" '$1 == k { gsub(/,/, "", $2); s += $2 } END { print s + 0 }' "$LAB_WORK/stats.json"; }

# tr_stat TRTYPE KEY [POOL]: a transport's buffer-cache figure summed over the poll
# groups in the last stats.json: KEY buf_cache_small or buf_cache_large, or, with POOL
# (small_pool or large_pool), cache, main or retry. Each transport object ends with its
# trtype (keys are sorted), so values are held until it shows.
tr_stat() {
    awk -v tr="\"$1\"" -v k="\"$2\":" -v pool="${3:+\"$3\":}" '
        pool != "" && $1 == pool { inpool = 1; next }
        inpool && /}/ { inpool = 0 }
        $1 == k && (pool == "" || inpool) { gsub(/,/, "", $2); v = $2 }
        $1 == "\"trtype\":" { gsub(/,/, "", $2); if ($2 == tr) s += v; v = 0 }
        END { print s + 0 }' "$LAB_WORK/stats.json"
}

# lab_rxe_up: Soft-RoCE (rxe0) on the guest's NIC, its modules and the kernel's
# NVMe/RDMA initiator loaded; aborts the scenario when it cannot be had.
lab_rxe_up() {
    modprobe crc32_generic
    modprobe rdma_rxe && modprobe ib_uverbs && modprobe rdma_ucm && modprobe nvme-rdma
    [ -e /sys/class/infiniband/rxe0 ] || lab_run rdma link add rxe0 type rxe netdev "${LAB_NIC:-eth0}"
    if lab_wait 5 test -e /sys/class/infiniband/rxe0; then
        lab_pass rxe "rxe0 on ${LAB_NIC:-eth0} ($(cat /sys/class/infiniband/rxe0/node_type 2>/dev/null))"
    else
        lab_abort rxe "no rxe0: rdma link add rxe0 type rxe netdev ${LAB_NIC:-eth0} failed"
    fi
}

# lab_churn N TRANSPORT: N cycles of connect (the scenario's `connect`), fio on
# namespaces 1 and 2 of $NQN, and disconnect under that I/O (`disconnect`); then checks
# that polluxd ($PID) lives and that every poll group is back to no connection, no
# queue pair, no buffer out and no bdev I/O pending (nvmf_get_stats through `rpc`).
lab_churn() {
    _t0=$(lab_up)
    _i=1
    _bad=
    _busy=0
    while [ $_i -le "$1" ]; do
        if ! connect; then
            _bad="$_bad connect#$_i"
            disconnect
            _i=$((_i + 1))
            continue
        fi
        _n1=$(ns_dev "$NQN" 1)
        _n2=$(ns_dev "$NQN" 2)
        # I/O errors are expected here once the controller goes away.
        timeout -s KILL 60 fio --eta=never --name=churn1 --filename="/dev/$_n1" --name=churn2 --filename="/dev/$_n2" \
            --ioengine=libaio --direct=1 --rw=randrw --bsrange=4k-256k --iodepth=32 \
            --time_based --runtime=30 >"$LAB_WORK/churn.$_i" 2>&1 &
        _fpid=$!
        sleep 1.5
        lab_alive $_fpid && _busy=$((_busy + 1))
        disconnect || _bad="$_bad disconnect#$_i"
        wait $_fpid
        echo "reconnect $_i/$1 done at $(lab_up) s (fio exit $?)"
        _i=$((_i + 1))
    done
    cat "$LAB_WORK/churn.$1" >"$LAB_ART/fio-churn-last.txt" 2>/dev/null
    _secs=$(lab_secs_since "$_t0")
    if [ -z "$_bad" ]; then
        lab_pass reconnects "$1 connect/disconnect cycles over $2 with fio running ($_busy with I/O in flight at the disconnect) in $_secs s"
    else
        lab_fail reconnects "failures in the $1 cycles:$_bad"
    fi
    if lab_alive $PID; then
        lab_pass polluxd-alive "polluxd is still running after the disconnects"
    else
        lab_fail polluxd-alive "polluxd died (see polluxd.log)"
    fi
    if lab_wait 20 stats_zero current_connections current_admin_qpairs current_io_qpairs iobuf_outstanding pending_bdev_io; then
        lab_pass pools-full "nvmf_get_stats after the last disconnect: current_connections, qpairs, iobuf_outstanding and pending_bdev_io are 0 in every poll group (completed_nvme_io $(stat_sum completed_nvme_io), protocol_errors $(stat_sum protocol_errors))"
    else
        cat "$LAB_WORK/stats.json"
        lab_fail pools-full "after the last disconnect: $(stats_zero current_connections current_admin_qpairs current_io_qpairs iobuf_outstanding pending_bdev_io)"
    fi
}

# lab_clean_stop: SIGTERM to polluxd ($PID, logging to $LAB_ART/polluxd.log); it must
# stop within 20 s with status 0 and every DMA buffer back in its pool.
lab_clean_stop() {
    rpc nvmf_get_stats >"$LAB_ART/stats-end.json" 2>&1
    kill -TERM $PID
    lab_wait 20 eval '! lab_alive $PID'
    if lab_alive $PID; then
        lab_fail clean-stop "polluxd still runs 20 s after SIGTERM"
        kill -KILL $PID
        return
    fi
    wait $PID
    _rc=$?
    if [ $_rc -eq 0 ] && ! grep -q 'missing from their pools' "$LAB_ART/polluxd.log"; then
        lab_pass clean-stop "polluxd stopped on SIGTERM with status 0, every DMA buffer back in its pool"
    else
        lab_fail clean-stop "polluxd stopped with status $_rc$(grep -q 'missing from their pools' "$LAB_ART/polluxd.log" && echo ', DMA buffers missing from their pools')"
    fi
}
