# Multi-stage build: compile in the Rust image, ship only the binary on distroless (glibc,
# non-root). The packaging issue adds the CI checks around this file.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked --bin erratum

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/dist/erratum /usr/local/bin/erratum
USER nonroot:nonroot
# mimalloc (erratum's allocator) gives an emptied page back to the OS after 1 s and only on its
# next pass; at once instead, thousands of idle keep-alive clients hold ~4.4 KB each instead of
# ~8 KB (BENCHMARKS.md, session 17). No cost while serving: no madvise in steady state (strace).
ENV MIMALLOC_PURGE_DELAY=0
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/local/bin/erratum"]
CMD ["run"]
