//! Fuzz targets on stable Rust: each target is a function of bytes that must never panic (and
//! holds a few properties), driven by proptest from the committed corpus in `fuzz/corpus/`
//! (seeds, and mutations of them) plus random input.
//!
//! `cargo test` runs every target briefly (corpus + 256 cases: the CI smoke).
//! `fuzz/run.sh --seconds N` runs each target for N seconds (`ERRATUM_FUZZ_SECONDS`) and
//! reports executions; a failure is shrunk by proptest and saved to `fuzz/crashes/`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use erratum::index::Index;
use erratum::proxy::ttl;
use erratum::table::template::{Escape, Template, Values};
use erratum::table::{BuildConfig, RoutingTable, accept, route};
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Corpus entries with random byte edits, splices of two entries, and plain random bytes.
fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..8);
    let mutated = (0..n, edits).prop_map({
        let seeds = seeds.clone();
        move |(i, edits)| {
            let mut s = seeds[i].clone();
            for (at, byte, op) in edits {
                let pos = if s.is_empty() { 0 } else { at.index(s.len()) };
                match op {
                    0 if !s.is_empty() => s[pos] = byte,
                    1 => s.insert(pos, byte),
                    _ if !s.is_empty() => {
                        s.remove(pos);
                    }
                    _ => s.push(byte),
                }
            }
            s
        }
    });
    let spliced = (0..n, 0..n, any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map({
        let seeds = seeds.clone();
        move |(a, b, i, j)| {
            let (a, b) = (&seeds[a], &seeds[b]);
            let mut s = a[..if a.is_empty() { 0 } else { i.index(a.len()) }].to_vec();
            s.extend_from_slice(&b[if b.is_empty() { 0 } else { j.index(b.len()) }..]);
            s
        }
    });
    prop_oneof![4 => mutated, 2 => spliced, 1 => prop::collection::vec(any::<u8>(), 0..256)]
}

/// Runs `target` over the corpus, then over generated inputs for `ERRATUM_FUZZ_SECONDS`
/// (default: one round of 256 cases).
fn fuzz(name: &str, target: impl Fn(&[u8]) -> Result<(), TestCaseError>) {
    let seeds = corpus(name);
    for (i, seed) in seeds.iter().enumerate() {
        if let Err(e) = target(seed) {
            panic!("fuzz {name}: corpus entry {i} fails: {e}");
        }
    }
    let seconds: u64 = std::env::var("ERRATUM_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let strategy = inputs(seeds.clone());
    let mut executions = seeds.len() as u64;
    let mut round = 0u64;
    loop {
        let config = Config { cases: 256, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(
            config,
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &seed_bytes(name, round),
            ),
        );
        let result = runner.run(&strategy, |input| target(&input));
        executions += 256;
        round += 1;
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/crashes");
                let _ = std::fs::create_dir_all(&dir);
                let file = dir.join(format!("{name}-{round}"));
                let _ = std::fs::write(&file, &input);
                panic!("fuzz {name}: {reason}; minimal input saved to {}: {input:?}", file.display());
            }
            Err(e) => panic!("fuzz {name}: {e}"),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("fuzz {name}: {executions} executions, 0 failures");
}

/// A different, reproducible seed per target and round.
fn seed_bytes(name: &str, round: u64) -> [u8; 32] {
    let mut seed = [0u8; 32];
    for (i, b) in name.bytes().chain(round.to_le_bytes()).enumerate() {
        seed[i % 32] ^= b.rotate_left(i as u32 % 8);
    }
    seed
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn fuzz_manifests_and_table_build() {
    fuzz("manifests", |bytes| {
        let text = text(bytes);
        for file in ["fuzz.yaml", "fuzz.json"] {
            let parsed = erratum::source::files::parse_manifest(Path::new(file), &text);
            let mut index = Index::default();
            for (object, _) in parsed.objects {
                index.apply(object);
            }
            let table = RoutingTable::build(&index, &BuildConfig::default(), 1);
            // Every report must turn into a status, and lookups must work on any table.
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            );
            for report in table.policy_reports() {
                let _ = erratum::table::status::status(report, &now);
            }
            let _ = table.lookup("shop.example", "/a/b");
        }
        Ok(())
    });
}

/// A table with every path type, wildcard hosts and a default backend.
fn lookup_table() -> &'static RoutingTable {
    static TABLE: OnceLock<RoutingTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/lookup-table.yaml"))
                .unwrap();
        let parsed = erratum::source::files::parse_manifest(Path::new("lookup-table.yaml"), &text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let mut index = Index::default();
        for (object, _) in parsed.objects {
            index.apply(object);
        }
        let table = RoutingTable::build(&index, &BuildConfig::default(), 1);
        assert!(table.route_count() > 5);
        table
    })
}

#[test]
fn fuzz_route_lookup_and_path_normalisation() {
    let table = lookup_table();
    fuzz("lookup", |bytes| {
        let text = text(bytes);
        let (host, path) = text.split_once('\n').unwrap_or(("shop.example", &text));
        let host = route::normalize_host(host);
        let path = format!("/{}", path.trim_start_matches('/'));
        let Ok(normal) = route::normalize_path(&path) else {
            prop_assert!(path.contains('%'), "only a bad escape is an error: {path}");
            return Ok(());
        };
        prop_assert!(normal.starts_with('/'), "{normal}");
        prop_assert!(!normal.contains("//"), "{normal}");
        prop_assert!(!normal.split('/').any(|s| s == "." || s == ".."), "{normal}");
        let again = route::normalize_path(&normal).map(|p| p.into_owned());
        prop_assert!(again.is_ok(), "the normal form is valid: {normal}");
        let again = again.unwrap_or_default();
        prop_assert_eq!(again.as_str(), normal.as_ref(), "idempotent");
        let _ = table.lookup(&host, &normal);
        let _ = table.lookup(&host, &path);
        Ok(())
    });
}

/// erratum's own HTTP/1.1 server parser: heads, pipelined streams, and the bytes it hands to
/// hyper (issue 17). Limits small enough that the generated inputs reach them.
#[test]
fn fuzz_http1_server_heads_pipelines_and_handover() {
    use erratum::proxy::http1::server::fuzz::check_stream;
    fuzz("http1", |bytes| {
        check_stream(bytes, 2048, 24).map_err(TestCaseError::fail)?;
        check_stream(bytes, 64 * 1024, 100).map_err(TestCaseError::fail)?;
        Ok(())
    });
}

#[test]
fn fuzz_accept_negotiation() {
    fuzz("accept", |bytes| {
        let accept = text(bytes);
        let media = ["text/html", "application/json", "application/problem+json"];
        let chosen = accept::choose(Some(&accept), media);
        prop_assert!(chosen < media.len());
        for m in media {
            prop_assert!(accept::quality(Some(&accept), m) <= 1000);
        }
        let _ = accept::essence(&accept);
        Ok(())
    });
}

#[test]
fn fuzz_cache_control_and_expires() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    fuzz("cache-control", |bytes| {
        let text = text(bytes);
        let (cc, expires) = text.split_once('\n').unwrap_or((&text, ""));
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(cc) {
            headers.insert(http::header::CACHE_CONTROL, v);
        }
        if let Ok(v) = HeaderValue::from_str(expires) {
            headers.insert(http::header::EXPIRES, v);
        }
        let _ = ttl::directives(&headers);
        for code in [400, 404, 416, 418, 503] {
            let got = ttl::error_ttl(&Method::GET, code, &headers, ttl::TtlRule::default(), now);
            prop_assert!(got.is_none_or(|d| d.as_secs() <= 365 * 24 * 3600), "capped at a year: {got:?}");
            if code == 416 {
                prop_assert!(got.is_none(), "416 is never cached");
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_template_rendering() {
    fuzz("template", |bytes| {
        let text = text(bytes);
        let (template, value) = text.split_once('\n').unwrap_or((&text, "<\"&'>"));
        for escape in [Escape::Html, Escape::Json, Escape::Text, Escape::Header] {
            let Ok(t) = Template::parse(template, escape) else { continue };
            let values = Values {
                status: 503,
                request_id: value,
                host: value,
                path: value,
                scheme: "https",
                query: Some(value),
            };
            let out = t.render(&values);
            let plain = Template::parse(template, escape).unwrap().render(&Values {
                status: 503,
                request_id: "",
                host: "",
                path: "",
                scheme: "https",
                query: None,
            });
            // Whatever the values hold, they add no markup or JSON structure.
            match escape {
                Escape::Html => {
                    let count = |b: &[u8], c: u8| b.iter().filter(|x| **x == c).count();
                    for c in b"<>\"" {
                        prop_assert_eq!(count(&out, *c), count(&plain, *c), "{:?} from a value", *c as char);
                    }
                }
                Escape::Json => {
                    if let Ok(plain) = serde_json::from_slice::<serde_json::Value>(&plain) {
                        let out = serde_json::from_slice::<serde_json::Value>(&out);
                        prop_assert!(out.is_ok(), "a value broke the JSON: {out:?}");
                        prop_assert_eq!(shape(&out.unwrap()), shape(&plain), "a value changed the structure");
                    }
                }
                Escape::Text => {
                    prop_assert!(
                        !out.iter().any(|b| *b == b'\r' && !plain.contains(&b'\r')),
                        "no CR from a value"
                    );
                }
                Escape::Header => {
                    // A header value whatever the request holds: only the literal text decides.
                    if http::HeaderValue::from_maybe_shared(plain.clone()).is_ok() {
                        let valid = http::HeaderValue::from_maybe_shared(out.clone()).is_ok();
                        prop_assert!(valid, "a value broke the header: {:?}", out);
                    }
                    prop_assert!(out.iter().all(|b| b.is_ascii_graphic() || *b == b' ' || plain.contains(b)));
                }
            }
        }
        Ok(())
    });
}

/// A JSON value with its strings and numbers blanked: what a value must not change.
fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(_) => Value::String(String::new()),
        Value::Number(_) => Value::from(0),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        other => other.clone(),
    }
}
