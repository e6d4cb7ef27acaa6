//! HTTP correctness checked by an outside linter: REDbot (`redbot` from PyPI, which
//! `.ci/tools.sh` installs into `.ci/.tools/redbot`, or `ERRATUM_REDBOT`) on every kind of
//! answer erratum gives — passed through, replaced by a policy page, an error cached and then
//! served from the cache, made by erratum itself, a maintenance answer, a stale copy served
//! for a failing backend (with REDbot's own conditional requests against it) — with no
//! warning and no error among its findings.

use std::path::PathBuf;

use crate::support::*;

fn redbot() -> PathBuf {
    let path = std::env::var_os("ERRATUM_REDBOT").map(PathBuf::from).unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/.tools/redbot/bin/redbot")
    });
    assert!(
        path.exists(),
        "the REDbot test needs redbot: bash .ci/tools.sh installs it ({})",
        path.display()
    );
    path
}

/// The status REDbot got from `url`, and its findings as (level, category, summary), from
/// its HAR output.
async fn lint(url: &str) -> (u64, Vec<(String, String, String)>) {
    let out = tokio::process::Command::new(redbot()).args(["-o", "har", url]).output().await.unwrap();
    let har: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut found = Vec::new();
    let status = har["log"]["entries"][0]["response"]["status"].as_u64().unwrap_or(0);
    for entry in har["log"]["entries"].as_array().into_iter().flatten() {
        for m in entry["_red_messages"].as_array().into_iter().flatten() {
            let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
            found.push((s("level"), s("category"), s("summary")));
        }
    }
    assert!(!found.is_empty(), "{url}: REDbot said nothing: {}", String::from_utf8_lossy(&out.stdout));
    (status, found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redbot_finds_nothing_wrong_with_any_kind_of_answer() {
    let o = origin().await;
    let flaky = origin().await;
    // Hostless Ingresses: REDbot resolves names itself, so the URLs are by address.
    let manifests = [
        backend("shop", "web", &[o.addr]),
        backend("shop", "gone", &[closed_port()]),
        backend("shop", "flaky", &[flaky.addr]),
        ingress("shop", "flaky", &[("", "/flaky", "Prefix", "flaky")]),
        policy("shop", "stale", "targetRefs: [{name: flaky}]\nstaleIfError: {maxStaleSeconds: 600}\n"),
        ingress("shop", "any", &[("", "/", "Prefix", "web"), ("", "/refused", "Prefix", "gone")]),
        ingress("shop", "down", &[("", "/down", "Prefix", "web")]),
        policy(
            "shop",
            "pages",
            "errorResponses:\n- codes: ['503']\n  page: {inline: '<p>sorry</p>', contentType: text/html}\n- codes: ['404']\n  errorCachingMinTTLSeconds: 30\n",
        ),
        policy("shop", "maintenance", "targetRefs: [{name: down}]\nmaintenance: {enabled: true, retryAfterSeconds: 60}\n"),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    let cases = [
        // The origin says how long it may be kept (without it, REDbot warns of the origin's
        // response, which erratum passes on unchanged).
        ("/ok?set-header=cache-control:max-age=60", "passed through", 200),
        ("/unavailable", "replaced by a policy page", 503),
        ("/missing/x", "an error, cached", 404),
        ("/missing/x", "the cached error", 404),
        ("/missing/y?set-header=cache-control:max-age=30", "an error the origin lets be cached", 404),
        ("/missing/y?set-header=cache-control:max-age=30", "that error from the cache", 404),
        ("/refused", "made by erratum", 502),
        ("/down/x", "a maintenance answer", 503),
    ];
    // A stale copy: kept while the backend is well, served once it fails.
    // Asked with the Host REDbot sends (the listener's address): the copy's key.
    let kept = "/flaky/page?set-header=cache-control:max-age=60&etag=v1";
    assert_eq!(h.client.get(h.url(kept)).send().await.unwrap().status(), 200);
    flaky.fail_with(Some(503));
    let stale = h.client.get(h.url(kept)).send().await.unwrap();
    assert_eq!(stale.headers()["x-cache"], "StaleHit from erratum");
    let cases = cases.into_iter().chain([(kept, "a stale copy for a failing backend", 200)]);
    let mut problems = Vec::new();
    for (path, what, status) in cases {
        // With the Host REDbot sends (the listener's address), so both read the same entries.
        assert_eq!(h.client.get(h.url(path)).send().await.unwrap().status(), status, "{path}");
        let url = h.url(path);
        let (got, findings) = lint(&url).await;
        assert_eq!(got, u64::from(status), "{what} ({path}): REDbot got another status: {findings:?}");
        eprintln!("{what} ({path}): {findings:?}");
        for (level, category, summary) in findings {
            if level != "GOOD" && level != "INFO" {
                problems.push(format!("{what} ({path}): {level} {category}: {summary}"));
            }
        }
    }
    assert!(problems.is_empty(), "REDbot found:\n{}", problems.join("\n"));
    h.shutdown().await;
}
