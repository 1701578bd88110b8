# raftor as a container image built from this machine's files alone (no base image is pulled):
# the release binary, the shared libraries ldd lists for it and the dynamic loader, staged in
# docker/rootfs/ by scripts/docker-build, which then runs `docker build` (legacy builder).
# There is no shell in the image: the health check runs the binary itself.
FROM scratch

COPY docker/rootfs/ /
# The RocksDB data directory, owned by the unprivileged user the node runs as. An empty named
# volume mounted here takes this ownership on first use.
COPY --chown=10001:10001 docker/data/ /data/
# Where docker-compose.tls.yml's `certs` service writes the cluster's credentials (a named volume,
# which takes this ownership on first use) and the nodes read them.
COPY --chown=10001:10001 docker/data/ /certs/

# NO_COLOR: plain log lines for `docker logs`.
ENV RAFTOR_LISTEN=0.0.0.0:7001 \
    RAFTOR_HTTP=0.0.0.0:8080 \
    RAFTOR_DATA_DIR=/data \
    NO_COLOR=1
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 7001: Raft between nodes and the native client protocol (raftor CLI); 8080: the HTTP API.
EXPOSE 7001 8080
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/raftor", "health", "--endpoint", "127.0.0.1:7001"]
ENTRYPOINT ["/raftor"]
CMD ["serve"]
