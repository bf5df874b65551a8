# softswitch engine image: `docker compose up` (see docker-compose.yml) or
#   docker build -t softswitch . && docker run --rm -p 5080:5080/udp -p 5080:5080/tcp -p 8088:8088 softswitch
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sip-tester espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY sip sip
COPY media media
COPY configs configs
RUN pip install --no-cache-dir .

# In a container, listen on every interface (the embedded defaults listen on 127.0.0.1 only).
ENV SOFTSWITCH_SIP__LISTEN='["udp:0.0.0.0:5080","tcp:0.0.0.0:5080"]' \
    SOFTSWITCH_HTTP__LISTEN=0.0.0.0:8088

EXPOSE 5080/udp 5080/tcp 8088
CMD ["softswitch", "serve"]
