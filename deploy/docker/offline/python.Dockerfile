# Stand-in for python:3.11-slim-bookworm (deploy/docker/offline-bases.sh): Debian's CPython 3.11,
# linked where the official image has it (/usr/local/bin), with the host's CA bundle so that
# builds FROM it (uv pip sync) reach PyPI through the proxy.
ARG BASE
FROM ${BASE}
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3.11 libpython3.11-stdlib >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/* \
    && cp /etc/ssl/certs/ca-certificates.crt /usr/local/share/host-ca.crt \
    && for n in python3.11 python3 python; do ln -s /usr/bin/python3.11 /usr/local/bin/$n; done
ENV SSL_CERT_FILE=/usr/local/share/host-ca.crt \
    LANG=C.UTF-8 \
    PYTHON_VERSION=3.11
CMD ["python3"]
