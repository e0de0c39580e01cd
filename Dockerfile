# switchyard serve on the CPU, as a container: an OpenAI-compatible server on port 8080.
#
#   docker build -t switchyard .
#   docker run --rm -p 8080:8080 -v "$PWD/models:/models:ro" switchyard \
#       --model /models/SmolLM2-135M-Instruct.Q4_1.gguf --served-model-name smollm2
#
# Readiness: GET /health is 200 once the model is loaded. Metrics: GET /metrics (Prometheus).
# Set SWITCHYARD_API_KEY to require `Authorization: Bearer <key>` on /v1.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The built commit is recorded from .git when it is in the context; it is optional.
RUN cargo build --release --locked --bin switchyard \
    && strip target/release/switchyard

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
# No root inside the container; the Neuron compile cache goes to a writable place.
USER 65534:65534
ENV SWITCHYARD_NEURON_CACHE=/tmp/switchyard-neuron
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD curl -sf http://127.0.0.1:8080/health || exit 1
# SIGTERM (docker stop) ends in-flight streams with a final event and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard", "serve", "--host", "0.0.0.0", "--port", "8080"]
# The model is yours to name (see the usage above); alone, the image prints the options.
CMD ["--help"]
