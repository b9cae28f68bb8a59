# shellcheck shell=bash
# Boots the guest and turns its lab channel into results (sourced by tests/lab/run).

# The QEMU machine: TCG (KVM does not work on these hosts), 2 vCPUs, 2 GiB, an emulated
# NVMe controller with a 64 MiB CMB behind a virtual IOMMU (in an NVM subsystem, with
# namespace 1 attached and namespace 2 detached, so Namespace Attachment raises events) (intel-iommu; the guest
# kernel has no VFIO no-IOMMU mode), a virtio-net NIC on QEMU's user network, and two
# serial ports: ttyS0 the console, ttyS1 the lab channel.
LAB_SMP=${POLLUX_LAB_SMP:-2}
LAB_MEM=${POLLUX_LAB_MEM:-2048}
LAB_BOOT_BUDGET=120 # seconds from QEMU's start to the first scenario, and for the power-off
# The emulated controller's serial number (Identify checks it).
LAB_NVME_SERIAL=lab1

# The guest kernel's command line. transparent_hugepage=never: with THP, Linux 6.1's
# nvme-tcp host sends write data in fragments that can run past the end of a huge page
# (a merged multi-page bvec); over loopback such a fragment reaches the userspace target's
# recvmsg() and hardened usercopy stops the kernel ("usercopy: Kernel memory exposure
# attempt detected from page alloc", kernel BUG at mm/usercopy.c:101). That is a kernel
# bug of any userspace target beside the kernel initiator (SPDK-based ones hit it too),
# not something the target can avoid.
# watchdog_thresh=60: a vCPU starved under TCG is not a soft lockup (the guest check
# fails a scenario on any kernel BUG report); hangs are still caught by the timeouts.
LAB_KERNEL_ARGS="console=ttyS0 panic=-1 loglevel=4 log_buf_len=4M intel_iommu=on transparent_hugepage=never watchdog_thresh=60"

# lab_boot RUN_DIR INITRAMFS DEADLINE APPEND
# Runs QEMU until the guest powers off or DEADLINE seconds pass (then QEMU is killed).
# Sets LAB_QEMU_RC (137: killed at the deadline).
lab_boot() {
    local run=$1 initrd=$2 deadline=$3 append=$4
    truncate -s 256M "$run/nvme0.raw"
    truncate -s 16M "$run/nvme1.raw"
    local cmd=(
        "$QEMU_BIN" "${QEMU_DATA[@]}"
        -machine q35,accel=tcg,kernel-irqchip=split -cpu max -smp "$LAB_SMP" -m "$LAB_MEM"
        -nodefaults -display none -no-reboot -monitor none
        -serial "file:$run/console.raw" -serial "file:$run/lab.raw"
        -kernel "$VMLINUZ" -initrd "$initrd"
        -append "$LAB_KERNEL_ARGS $append"
        -device intel-iommu,intremap=on
        -blockdev "driver=file,filename=$run/nvme0.raw,node-name=nvme0,discard=unmap"
        -blockdev "driver=file,filename=$run/nvme1.raw,node-name=nvme1,discard=unmap"
        -device nvme-subsys,id=nvmesubsys0,nqn=nqn.2019-08.org.qemu:lab
        -device "nvme,serial=$LAB_NVME_SERIAL,subsys=nvmesubsys0,cmb_size_mb=64"
        -device nvme-ns,drive=nvme0,nsid=1
        -device nvme-ns,drive=nvme1,nsid=2,detached=on
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=
    )
    printf '%q ' "${cmd[@]}" >"$run/qemu.cmd"
    echo >>"$run/qemu.cmd"
    : >"$run/console.raw"
    : >"$run/lab.raw"
    timeout -s KILL "$deadline" "${cmd[@]}" >"$run/qemu.log" 2>&1 &
    LAB_QEMU_PID=$!
    # Live progress from the lab channel (in its own session, to be stopped as a group).
    setsid bash -c "$(declare -f lab_progress); lab_progress \"\$1\" \"\$2\"" lab-progress "$run/lab.raw" "$LAB_QEMU_PID" &
    LAB_TAIL_PID=$!
    set +e
    wait "$LAB_QEMU_PID"
    LAB_QEMU_RC=$?
    set -e
    LAB_QEMU_PID=
    # Let the progress lines catch up (tail stops a second after QEMU), then stop them.
    local i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 "$LAB_TAIL_PID" 2>/dev/null || break
        sleep 0.3
    done
    kill -- -"$LAB_TAIL_PID" 2>/dev/null || true
    wait "$LAB_TAIL_PID" 2>/dev/null || true
    LAB_TAIL_PID=
    tr -d '\r' <"$run/console.raw" >"$run/console.log"
    tr -d '\r' <"$run/lab.raw" >"$run/lab.log"
    rm -f "$run/console.raw" "$run/lab.raw" "$run/nvme0.raw" "$run/nvme1.raw"
}

# lab_progress LAB_LOG QEMU_PID: prints the lab channel's news as it comes, until QEMU ends.
lab_progress() {
    local line
    tail -n +1 -F --pid="$2" "$1" 2>/dev/null | while IFS= read -r line; do
        set -- ${line%$'\r'}
        case "${1:-}" in
        LAB-BOOT) echo "lab: guest up (kernel $2, /init at $3 s)" ;;
        LAB-BEGIN) echo "lab: $2: running (timeout $3 s)" ;;
        LAB-CHECK) [[ $4 == FAIL ]] && echo "lab: $2: check $3 failed" ;;
        LAB-RESULT) echo "lab: $2: $3 in $4 s" ;;
        esac
    done >&2
}

# lab_collect RUN_DIR SCENARIO...
# Splits the lab channel into RUN_DIR/<scenario>/ (files, checks.txt, console.log) and
# writes RUN_DIR/results.txt: "<scenario> PASS|FAIL <seconds> <reason>" per scenario.
lab_collect() {
    local run=$1 s
    shift
    awk -v run="$run" '
        function dir(s) { if (!(s in made)) { system("mkdir -p \"" run "/" s "\""); made[s] = 1 } return run "/" s }
        infile != "" {
            if ($1 == "LAB-FILE-END") { close(infile); infile = ""; next }
            line = $0; sub(/^ LAB-/, "LAB-", line); print line > infile; next
        }
        $1 == "LAB-FILE-BEGIN" { infile = dir($2) "/" $3; printf "" > infile; next }
        $1 == "LAB-CHECK" { f = dir($2) "/checks.txt"; line = $0; sub(/^LAB-CHECK [^ ]+ /, "", line); print line > f; next }
        $1 == "LAB-RESULT" { line = $0; sub(/^LAB-RESULT /, "", line); print line > (run "/results.raw"); next }
    ' "$run/lab.log"
    for s in "$@"; do
        mkdir -p "$run/$s"
        awk -v s="$s" '
            $0 ~ "^===== LAB-BEGIN " s " " { on = 1 }
            on { print }
            $0 ~ "^===== LAB-RESULT " s " " { on = 0 }' "$run/console.log" >"$run/$s/console.log"
    done
    local booted=0
    grep -q '^LAB-BOOT ' "$run/lab.log" && booted=1
    : >"$run/results.txt"
    for s in "$@"; do
        local line
        line=$(awk -v s="$s" '$1 == s' "$run/results.raw" 2>/dev/null | tail -1)
        if [[ -z $line ]]; then
            local why
            if ((LAB_QEMU_RC == 137)); then
                why="no result: QEMU was killed at the run's deadline"
            elif ((!booted)); then
                why="no result: the guest never reached /init (QEMU exit status $LAB_QEMU_RC)"
            elif grep -q "^LAB-BEGIN $s " "$run/lab.log"; then
                why="no result: the guest stopped during the scenario (panic? see console.log)"
            else
                why="no result: the guest stopped before the scenario (QEMU exit status $LAB_QEMU_RC)"
            fi
            line="$s FAIL 0 $why"
        fi
        echo "$line" >>"$run/results.txt"
    done
    rm -f "$run/results.raw"
}
