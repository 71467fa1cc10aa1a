# visio-sfu: a slim image running the server as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    VISIO_HOST=0.0.0.0 VISIO_PORT=7880

WORKDIR /app
# The licence and third-party notices stay in /app and go into the installed metadata too.
COPY pyproject.toml setup.py README.md LICENSE THIRD_PARTY_NOTICES.md ./
COPY visio_sfu ./visio_sfu
COPY signaling ./signaling
COPY visio_client ./visio_client
COPY static ./static
# the identity extra: sign-in with an OpenID Connect provider, meetings people own
# (docs/identity.md); its SQLite database and cookie key live in the /data volume
# gcc for the small C extension that batches sends (visio_sfu/_batch.c), removed after
RUN apt-get update -q && apt-get install -y -q --no-install-recommends gcc libc6-dev \
    && pip install '.[identity]' \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && python -c "import visio_sfu._batch" \
    && useradd --system --uid 10001 --home /nonexistent visio \
    && mkdir -p /data && chown visio /data
ENV VISIO_DATA_DIR=/data
VOLUME /data

USER visio
EXPOSE 7880 7882/udp
# media: one UDP port per worker from 7882 (VISIO_WORKERS; --ice-tcp: the same numbers in TCP);
# publish them, or run with --network host (docs/deploy.md)
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VISIO_PORT', '7880') + '/healthz', timeout=2)"
ENTRYPOINT ["visio-sfu"]
CMD ["serve"]
