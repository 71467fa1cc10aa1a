#!/usr/bin/env bash
# The whole benchmark suite, on a fresh Debian machine, in one command:
#     bash benchmarks/run.sh [output directory, default benchmarks/results]
# Installs what it needs (Janus, iproute2, the bench extras), then runs the per-packet
# micro-benchmark and the load scenarios side by side against visio-sfu, Janus and the naive
# relay, writing a results.json and PNG plots per scenario. About 20 minutes on 2 cores.
# Needs root for the Janus runs (apt-get, and a network namespace: see benchmarks/netns.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results}
QUICK=${QUICK:-}  # QUICK=1: tiny sizes, to check the suite itself runs

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    command -v janus >/dev/null || need+=(janus)
    command -v ip >/dev/null || need+=(iproute2)
    command -v taskset >/dev/null || need+=(util-linux)
    if [ ${#need[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${need[@]}"
    fi
fi
python -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[bench]'
mkdir -p "$OUT"

if [ -n "$QUICK" ]; then
    D=(--duration 1.5 --warmup 1.5)
    FANOUT=(--step 2 --max 4)
    MEETING=(--step 2 --max 4)
    AUDIO=(--participants 6 --speakers 2)
    NAIVE=(--step 1 --max 2)
    WIDE=(--subscribers 3)
else
    D=(--duration 5 --warmup 2)
    FANOUT=(--step 10 --max 100)
    MEETING=(--step 2 --max 24)
    AUDIO=(--participants 60 --speakers 3)
    NAIVE=(--step 2 --max 12)
    WIDE=(--subscribers 200)
fi
HD=(--video-bitrate 10000000 --size 1280 720)  # 976 VP8 packets/s: the issue's Janus reference

set -x
python -m benchmarks.hotpath | tee "$OUT/hotpath.txt"
# fan-out of a 10 Mbit/s 720p stream: CPU per forwarded packet, visio-sfu against Janus, up to
# the saturation of the server's core (loss up to 5 % does not stop it; the summary's largest
# fan-out still means under 1 %)
python -m benchmarks.load ramp --servers visio,janus "${HD[@]}" "${FANOUT[@]}" "${D[@]}" \
    --max-loss 5 --out "$OUT/fanout-ramp"
# fan-out of a 2 Mbit/s 360p stream, all three: where the naive relay saturates
python -m benchmarks.load ramp --servers visio,janus,naive "${NAIVE[@]}" "${D[@]}" \
    --out "$OUT/fanout-small"
# the same stream to many more subscribers than the naive relay can carry
python -m benchmarks.load fanout --servers visio "${WIDE[@]}" "${D[@]}" --out "$OUT/fanout-wide"
# meetings of growing size, everyone publishing 360p video and audio, all three
python -m benchmarks.load ramp --of meeting --servers visio,janus,naive "${MEETING[@]}" "${D[@]}" \
    --out "$OUT/meeting-ramp"
# a large audio-only room
python -m benchmarks.load audio --servers visio,janus,naive "${AUDIO[@]}" "${D[@]}" \
    --out "$OUT/audio"
