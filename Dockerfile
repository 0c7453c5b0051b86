# Multi-stage build: compile the release binary, ship it on a small runtime image.
#   docker build -t switchyard .
#   docker run --rm -p 8080:8080 -p 9900:9900 switchyard run --config /etc/switchyard/example.toml
# (The example config binds the admin listener to 127.0.0.1; in a container, set
#  [admin] listen = "0.0.0.0:9900" in your own config to reach it from outside. It
#  ships no admin token, so drain, reload and the other verbs are refused: mount your
#  config with token_file pointing at a mounted secret, e.g.
#    docker run -v ./switchyard.toml:/etc/switchyard/switchyard.toml:ro \
#      -v ./admin-token:/run/secrets/switchyard-admin-token:ro switchyard \
#      run --config /etc/switchyard/switchyard.toml)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
# Workspace members (test support and the drill harness) must be present to resolve.
COPY lab ./lab
COPY loadtest ./loadtest
# etcd-client compiles protobufs at build time.
RUN apt-get update -qq && apt-get install -y -qq protobuf-compiler && rm -rf /var/lib/apt/lists/*
RUN cargo build --release --locked -p switchyard --bin switchyard

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY config /etc/switchyard
USER switchyard
# Listener ports of the example config, then the admin port.
EXPOSE 8080 6379 9900
ENTRYPOINT ["switchyard"]
CMD ["run", "--config", "/etc/switchyard/example.toml"]
