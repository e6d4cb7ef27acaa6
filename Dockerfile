# Multi-stage build: compile in the Rust image, ship only the binary on distroless (glibc,
# non-root). The packaging issue adds the CI checks around this file.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked --bin erratum

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/dist/erratum /usr/local/bin/erratum
USER nonroot:nonroot
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/local/bin/erratum"]
CMD ["run"]
