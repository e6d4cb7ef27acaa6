//! The maintenance switch (`spec.maintenance`, issue 21): turned on and off by editing the
//! policy while requests flow, with no failed request; covered routes answer with the
//! policy's page and status without reaching their backends; the bypass lets the team
//! through; counted apart from errors.

use std::sync::Arc;

use crate::support::*;

/// `examples/policies/planned-maintenance.yaml` with its switch set and its bypass made
/// testable (the client here is 127.0.0.1).
fn planned(enabled: bool, extra_bypass: &str) -> String {
    example("policies/planned-maintenance.yaml")
        .replace("enabled: false", &format!("enabled: {enabled}"))
        .replace("sourceRanges: [\"10.20.0.0/16\"]", extra_bypass)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_switches_on_and_off_under_load_with_no_failed_request() {
    let o = origin().await;
    let h = Arc::new(Harness::start(&storefront(o.addr)).await);
    h.write_and_wait("maintenance.yaml", &planned(false, "sourceRanges: [\"10.20.0.0/16\"]")).await;
    assert_eq!(h.status("shop.example", "/ok").await, 200, "off: the backend answers");
    assert_eq!(h.policy_status("shop", "planned-maintenance").await["maintenance"], "Off");

    let load = Load::start_expecting(&h, "shop.example", "/ok", vec![200, 503]);
    for round in 0..3 {
        h.write_and_wait("maintenance.yaml", &planned(true, "cookies: [{name: team, value: yes-please}]"))
            .await;
        let hits = o.hits();
        let ask = |accept: &'static str| {
            h.client.get(h.url("/ok")).header("host", "shop.example").header("accept", accept).send()
        };
        let r = ask("text/html").await.unwrap();
        assert_eq!(r.status(), 503, "round {round}");
        assert_eq!(r.headers()["retry-after"], "1800");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert!(r.headers().get("x-request-id").is_some());
        let body = r.text().await.unwrap();
        assert!(body.contains("shop.example is being upgraded"), "{body}");
        let r = ask("application/json").await.unwrap();
        let problem: serde_json::Value = r.json().await.unwrap();
        assert_eq!(problem["title"], "Planned maintenance");

        // The bypass: the header, or the cookie; a wrong value is no bypass.
        let with = |name: &'static str, value: &'static str| {
            h.client.get(h.url("/ok")).header("host", "shop.example").header(name, value).send()
        };
        assert_eq!(with("x-maintenance-bypass", "change-me").await.unwrap().status(), 200);
        assert_eq!(with("cookie", "a=b; team=yes-please").await.unwrap().status(), 200);
        assert_eq!(with("cookie", "team=no").await.unwrap().status(), 503);
        assert_eq!(with("x-maintenance-bypass", "guess").await.unwrap().status(), 503);
        assert!(o.hits() >= hits + 2, "bypassed requests reach the backend");
        if round == 0 {
            assert_eq!(h.policy_status("shop", "planned-maintenance").await["maintenance"], "On");
        }

        h.write_and_wait("maintenance.yaml", &planned(false, "sourceRanges: [\"127.0.0.0/8\"]")).await;
        assert_eq!(h.status("shop.example", "/ok").await, 200, "round {round}: off again");
    }
    // The source-range bypass: on, but this client is in the range.
    h.write_and_wait("maintenance.yaml", &planned(true, "sourceRanges: [\"127.0.0.0/8\"]")).await;
    assert_eq!(h.status("shop.example", "/ok").await, 200, "127.0.0.1 is let through");
    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "no request failed while the switch moved ({ok} answered)");
    assert!(ok > 50, "the load ran: {ok}");

    // Counted apart from errors: its own status class, its own counter, no proxy error.
    let metrics = h.metrics().await;
    let line = |needle: &str| metrics.lines().any(|l| l.contains(needle));
    assert!(line("status_class=\"maintenance\""), "{metrics}");
    assert!(
        line(
            "erratum_maintenance_requests_total{namespace=\"shop\",outcome=\"served\",policy=\"planned-maintenance\"}"
        ),
        "{metrics}"
    );
    assert!(
        line(
            "erratum_maintenance_requests_total{namespace=\"shop\",outcome=\"bypassed\",policy=\"planned-maintenance\"}"
        ),
        "{metrics}"
    );
    assert!(line("source=\"maintenance\""), "{metrics}");
    assert!(!line("reason=\"maintenance\""), "not an error: {metrics}");
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("erratum_requests_total") && l.contains("status_class=\"5xx\"")),
        "no 5xx counted: {metrics}"
    );
}

/// A maintenance switch covers what its policy covers: `match` narrows it to some paths, and
/// the other routes of the Ingress keep answering from their backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_covers_only_what_the_policy_matches() {
    let o = origin().await;
    let spec = "targetRefs: [{name: storefront}]\nmatch: {paths: [{type: Prefix, value: /admin}]}\n\
                maintenance: {enabled: true, responseCode: 503}\n";
    let h = Harness::start(&(storefront(o.addr) + &policy("shop", "admin-down", spec))).await;
    assert_eq!(h.status("shop.example", "/admin/users").await, 503);
    assert_eq!(h.status("shop.example", "/admin").await, 503);
    assert_eq!(h.status("shop.example", "/administrator").await, 200, "a prefix is a whole segment");
    assert_eq!(h.status("shop.example", "/ok").await, 200);
    h.shutdown().await;
}
