# Two images from one file (see docker-compose.yml):
#   engine  the default (last) stage: softswitch, which also ships the bundled example app (python -m engine.example_app)
#             docker build -t softswitch . && docker run --rm -p 5080:5080/udp -p 5080:5080/tcp -p 8088:8088 softswitch
#   peers   `--target peers`: Debian 12 with SIPp, baresip and Kamailio - the trunks, phones and dispatcher around it
#             docker build --target peers -t softswitch-peers .

FROM debian:12-slim AS peers
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sip-tester baresip-core kamailio \
    && rm -rf /var/lib/apt/lists/*
# docker/kamailio/run.sh renders these templates (the same ones CI renders for loopback ports).
COPY tests/kamailio /templates
COPY docker/kamailio/run.sh /usr/local/bin/softswitch-kamailio
COPY tests/sipp /sipp
COPY tests/baresip/tone_8k.wav /baresip/tone_8k.wav
COPY docker/baresip/caller /baresip/caller
WORKDIR /out

FROM python:3.11-slim-bookworm AS engine
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY sip sip
COPY media media
COPY configs configs
RUN pip install --no-cache-dir .

# In a container, listen on every interface (the embedded defaults listen on 127.0.0.1 only) and keep the call
# records and recordings in a volume.
ENV SOFTSWITCH_SIP__LISTEN='["udp:0.0.0.0:5080","tcp:0.0.0.0:5080"]' \
    SOFTSWITCH_HTTP__LISTEN=0.0.0.0:8088 \
    SOFTSWITCH_STORAGE__PATH=/var/lib/softswitch/softswitch.db \
    SOFTSWITCH_STORAGE__RECORDINGS_DIR=/var/lib/softswitch/recordings
VOLUME /var/lib/softswitch

EXPOSE 5080/udp 5080/tcp 8088 8000
CMD ["softswitch", "serve"]
