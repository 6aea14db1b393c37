# mailferry in a container: build with the Rust image, run in Debian slim as a non-root user.
#   docker build -t mailferry .
#   docker compose up -d            (see compose.yaml)
# /etc/mailferry holds mailferry.toml and the secret files (readable by uid 10001),
# /var/lib/mailferry the state (the delivery ledger and sign-ins): keep it on a volume.

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mailferry \
    && install -m 0755 -s target/release/mailferry /usr/local/bin/mailferry

FROM docker.io/library/debian:bookworm-slim
# TLS roots are built into the binary (webpki-roots); no OpenSSL, no ca-certificates needed.
RUN groupadd --system --gid 10001 mailferry \
    && useradd --system --uid 10001 --gid mailferry --home-dir /var/lib/mailferry \
        --shell /usr/sbin/nologin mailferry \
    && install -d -m 0750 -o root -g mailferry /etc/mailferry \
    && install -d -m 0700 -o mailferry -g mailferry /var/lib/mailferry
COPY --from=build /usr/local/bin/mailferry /usr/bin/mailferry
COPY config/mailferry.example.toml /usr/share/doc/mailferry/examples/mailferry.toml
ENV MAILFERRY_CONFIG=/etc/mailferry/mailferry.toml
USER 10001:10001
VOLUME ["/etc/mailferry", "/var/lib/mailferry"]
# SIGTERM: stop new work, finish and record the messages in flight (at most 60 s). Give
# the container more than that before it is killed (compose.yaml: stop_grace_period).
STOPSIGNAL SIGTERM
# The rule of /healthz (no account parked, none without a success for three intervals),
# read from the state database; no curl needed.
HEALTHCHECK --interval=5m --timeout=30s --start-period=2m --retries=1 \
    CMD ["mailferry", "status", "--health"]
ENTRYPOINT ["mailferry"]
CMD ["run"]
