#!/bin/sh
# rdma-verbs: pollux-rdma (rdma-core loaded at run time) on Soft-RoCE: rxe0 on the
# guest's NIC; its test (rdma/tests/rxe.rs) connects a client to a server through
# rdma_cm with private data both ways, receives through a shared receive queue, does
# RDMA READ and RDMA WRITE of 32 KiB with registered memory, polls completions, and
# disconnects with every object freed.
# lab-timeout: 120
. /lab/lib.sh

lab_rxe_up
log=$LAB_ART/rxe-test.log
if POLLUX_RDMA_ADDR=10.0.2.15 RUST_BACKTRACE=1 timeout 60 pollux-rdma-rxe-tests --ignored --nocapture --test-threads=1 >"$log" 2>&1 &&
    grep -q 'test result: ok. 1 passed' "$log"; then
    lab_pass verbs "$(grep -oE '(CHECK|DEVICES) .*' "$log" | sed 's/^CHECK //' | tr '\n' ';' | cut -c1-600)"
else
    lab_fail verbs "$(grep -E 'panicked|assert|rror' "$log" | head -4 | tr '\n' ' ' | cut -c1-600)"
    tail -30 "$log"
fi
lab_run rdma link delete rxe0
exit 0
