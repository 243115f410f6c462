# The `strata` binary in a small image (used by docker-compose.yml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p strata-server --bin strata

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 strata
COPY --from=build /src/target/release/strata /usr/local/bin/strata
USER strata
EXPOSE 7700
ENTRYPOINT ["strata"]
CMD ["serve"]
