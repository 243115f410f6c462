# The `strata` binary and the account_balances projection worker in a small
# image (used by docker-compose.yml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p strata-server --bin strata \
    && cargo build --release -p strata-projections --example account_balances

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 strata
COPY --from=build /src/target/release/strata /usr/local/bin/strata
COPY --from=build /src/target/release/examples/account_balances /usr/local/bin/account_balances
USER strata
EXPOSE 7700
ENTRYPOINT ["strata"]
CMD ["serve"]
