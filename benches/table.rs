//! Routing-table benchmarks: build time and lookup cost at 100, 1,000 and 10,000 Ingresses
//! (lookup must not grow with the number of hosts), and regex routing at 1,000 and 10,000
//! paths on one host. Run: `cargo bench --bench table`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests: a failed unwrap is a failed test")]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use erratum::fixtures::{endpoint_slice, ingress, service};
use erratum::index::{Index, Object};
use erratum::table::{BuildConfig, RoutingTable};

/// `n` Ingresses, each with its own host and three paths, over 50 Services.
fn index(n: usize) -> Index {
    let mut index = Index::default();
    for s in 0..50 {
        let name = format!("svc-{s}");
        index.apply(Object::Service(Box::new(service("bench", &name, &[(Some("http"), 80)]))));
        index.apply(Object::EndpointSlice(Box::new(endpoint_slice(
            "bench",
            &format!("{name}-1"),
            &name,
            &[(Some("http"), 8080)],
            &[("10.0.0.1", Some(true)), ("10.0.0.2", Some(true)), ("10.0.0.3", None)],
        ))));
    }
    for i in 0..n {
        let host = format!("host-{i}.example.com");
        let svc = format!("svc-{}", i % 50);
        let ing = ingress("bench", &format!("ing-{i}"))
            .path(&host, "/", "Prefix", &svc, 80)
            .path(&host, "/api/v1", "Prefix", &svc, 80)
            .path(&host, "/healthz", "Exact", &svc, 80)
            .build();
        index.apply(Object::Ingress(Box::new(ing)));
    }
    index
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("table_build");
    group.sample_size(10);
    for n in [1_000, 10_000] {
        let index = index(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &index, |b, index| {
            b.iter(|| RoutingTable::build(black_box(index), &BuildConfig::default(), 1))
        });
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in [100, 1_000, 10_000] {
        let table = RoutingTable::build(&index(n), &BuildConfig::default(), 1);
        assert_eq!(table.route_count(), 3 * n);
        let hosts: Vec<String> =
            (0..n).step_by((n / 64).max(1)).map(|i| format!("host-{i}.example.com:8080")).collect();
        group.bench_with_input(BenchmarkId::new("deep_prefix", n), &hosts, |b, hosts| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % hosts.len();
                black_box(table.find(black_box(&hosts[i]), black_box("/api/v1/orders/42/items")))
            })
        });
        group.bench_with_input(BenchmarkId::new("exact", n), &hosts, |b, hosts| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % hosts.len();
                black_box(table.find(black_box(&hosts[i]), black_box("/healthz")))
            })
        });
    }
    group.finish();
}

/// One host with `n` regex paths (`use-regex`, ingress-nginx's `~* "^PATH"`), shaped like an
/// API's versioned routes: `/api/v[0-9]+/resource-N/[a-z]+`.
fn regex_index(n: usize) -> Index {
    let mut index = Index::default();
    index.apply(Object::Service(Box::new(service("bench", "svc", &[(Some("http"), 80)]))));
    let mut ing = ingress("bench", "regex").annotation("nginx.ingress.kubernetes.io/use-regex", "true");
    for i in 0..n {
        ing =
            ing.path("regex.example.com", &format!("/api/v[0-9]+/resource-{i}/[a-z]+"), "Prefix", "svc", 80);
    }
    index.apply(Object::Ingress(Box::new(ing.build())));
    index
}

/// Regex routing at 1,000 and 10,000 paths on one host: the build (compiling the host's set)
/// and a lookup that matches one path, one that matches none.
fn regex_routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("regex_routes");
    group.sample_size(10);
    for n in [1_000, 10_000] {
        let index = regex_index(n);
        group.bench_with_input(BenchmarkId::new("build", n), &index, |b, index| {
            b.iter(|| RoutingTable::build(black_box(index), &BuildConfig::default(), 1))
        });
        let table = RoutingTable::build(&index, &BuildConfig::default(), 1);
        assert_eq!(table.route_count(), n, "{:?}", table.diagnostics());
        // What an endpoint change costs: a rebuild with the same paths keeps the compiled set.
        group.bench_with_input(BenchmarkId::new("rebuild", n), &index, |b, index| {
            b.iter(|| RoutingTable::build_from(black_box(index), &BuildConfig::default(), 2, Some(&table)))
        });
        let hit = format!("/API/v2/resource-{}/items/7", n / 2);
        assert!(table.find("regex.example.com", &hit).is_some());
        group.bench_with_input(BenchmarkId::new("lookup_hit", n), &hit, |b, path| {
            b.iter(|| black_box(table.find(black_box("regex.example.com"), black_box(path))))
        });
        group.bench_with_input(BenchmarkId::new("lookup_miss", n), &"/static/app.js", |b, path| {
            b.iter(|| black_box(table.find(black_box("regex.example.com"), black_box(path))))
        });
    }
    group.finish();
}

criterion_group!(benches, build, lookup, regex_routes);
criterion_main!(benches);
