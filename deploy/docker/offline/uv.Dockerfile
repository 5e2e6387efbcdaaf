# Stand-in for ghcr.io/astral-sh/uv (deploy/docker/offline-bases.sh): /uv and /uvx from uv's
# PyPI wheel, like the official distroless image.
FROM scratch
COPY uv uvx /
ENTRYPOINT ["/uv"]
