#!/usr/bin/env bash
# The main job on a fresh machine: polluxd serving a RAM namespace over NVMe/TCP on
# 127.0.0.1:4420 (examples/quickstart.json: no hardware, no hugepages needed), and
# pollux-perf against it: a verified random write pass, then random reads, as fio would
# print them. polluxd stops cleanly at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p pollux-tools
bin=target/release
sock=$(mktemp -u /tmp/pollux-quickstart.XXXXXX.sock)
ncpu=$(nproc)
# polluxd on core 0, pollux-perf on the last core (the same one on a 1-CPU machine).
perf_core=$((ncpu - 1))

"$bin/polluxd" -m 0x1 -c examples/quickstart.json -r "$sock" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    [[ -S $sock ]] && break
    sleep 0.1
done
[[ -S $sock ]] || { echo "polluxd did not start" >&2; exit 1; }
"$bin/pollux-rpc" -s "$sock" nvmf_get_subsystems >/dev/null

target='trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.pollux:quickstart ns:1'
"$bin/pollux-perf" --ioengine=nvmf --target="$target" --cpus_allowed="$perf_core" \
    --name=write-verify --rw=randwrite --bs=4k --iodepth=32 --size=64m --verify=crc32c \
    --name=randread --stonewall --rw=randread --bs=4k --iodepth=32 --size=64m \
    --runtime=5 --time_based

"$bin/pollux-rpc" -s "$sock" nvmf_get_stats
kill -TERM "$daemon"
wait "$daemon"
trap - EXIT
echo "polluxd stopped cleanly"
