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

# lab_bind_vfio / lab_bind_kernel: hands $NVME_BDF to vfio-pci or back to the nvme driver.
lab_bind_vfio() {
    modprobe vfio-pci && modprobe vfio_iommu_type1
    pollux-setup bind "$NVME_BDF"
}
lab_bind_kernel() {
    pollux-setup unbind "$NVME_BDF" && lab_wait 20 test -b /dev/nvme0n1
}
