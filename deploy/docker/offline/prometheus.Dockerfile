# Stand-in for prom/prometheus:v2.55.1 (deploy/docker/offline-bases.sh): Debian's prometheus
# (2.42; the web UI's JavaScript dependencies deleted: the HTTP API is all the stack uses) + wget for the healthcheck, run as
# user prometheus with /prometheus as the data directory, the binary as the entrypoint.
ARG BASE
FROM ${BASE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus wget >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/* \
        /usr/share/javascript /usr/share/nodejs /usr/share/locale \
    && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
WORKDIR /prometheus
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
