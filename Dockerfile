# keyward in a container: built with the Rust image, run from a small
# Debian image as an unprivileged user, state in the volume
# /var/lib/keyward (SQLite). Build and run:
#
#   docker build -t keyward .
#   docker run -d --name keyward -p 8080:8080 -v keyward-data:/var/lib/keyward \
#     -e KEYWARD_ADMIN_TOKEN=change-me keyward
#
# Every setting is a KEYWARD_* variable (`-e KEYWARD_STORE=redis://…`) or a
# flag after the image name (`keyward serve --lease-ttl 30s`).

# The project's edition 2024 needs Rust 1.85 or later.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# No debug info in the image's binary (the release profile keeps some for
# profiling on developers' machines).
ENV CARGO_PROFILE_RELEASE_DEBUG=0
RUN cargo build --release --locked --bin keyward \
    && cp target/release/keyward /usr/local/bin/keyward

FROM debian:bookworm-slim
# A fixed uid/gid, so a volume's owner is the same in every container.
RUN groupadd --system --gid 10001 keyward \
    && useradd --system --uid 10001 --gid keyward --home-dir /var/lib/keyward \
        --no-create-home --shell /usr/sbin/nologin keyward \
    && install -d -o keyward -g keyward -m 0700 /var/lib/keyward
COPY --from=build /usr/local/bin/keyward /usr/local/bin/keyward
USER keyward:keyward
WORKDIR /var/lib/keyward
VOLUME ["/var/lib/keyward"]
# Inside the container the server must listen on every interface for a
# published port to reach it; the store is the volume's SQLite file.
ENV KEYWARD_LISTEN=0.0.0.0:8080 \
    KEYWARD_STORE=sqlite:/var/lib/keyward/keyward.db \
    RUST_LOG=info
EXPOSE 8080
# /readyz is 200 while the store answers. The slim image has no curl:
# bash's /dev/tcp speaks enough HTTP/1.0 for a status line.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
# keyward handles SIGTERM itself: it stops accepting, finishes in-flight
# requests (at most 3 s), flushes the store and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["keyward"]
CMD ["serve"]
