//! Pure tests of `RoutingTable::build` and lookup: Ingress v1 semantics, table-driven.

use super::*;
use crate::fixtures::{endpoint_slice, external_service, ingress, ingress_class, service};
use crate::index::{Index, Object};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn index(objects: Vec<Object>) -> Index {
    let mut index = Index::default();
    for o in objects {
        index.apply(o);
    }
    index
}

fn ing(b: crate::fixtures::IngressBuilder) -> Object {
    Object::Ingress(Box::new(b.build()))
}

/// A Service `name` in `ns` with port 80 and one ready endpoint per name, so routes can be
/// told apart by their Service.
fn svc(ns: &str, name: &str) -> Vec<Object> {
    vec![
        Object::Service(Box::new(service(ns, name, &[(None, 80)]))),
        Object::EndpointSlice(Box::new(endpoint_slice(
            ns,
            &format!("{name}-x"),
            name,
            &[(None, 8080)],
            &[("10.0.0.1", Some(true))],
        ))),
    ]
}

fn build(objects: Vec<Object>) -> RoutingTable {
    RoutingTable::build(&index(objects), &BuildConfig::default(), 1)
}

/// Which Service a request reaches, or "-" for none.
fn target(t: &RoutingTable, host: &str, path: &str) -> String {
    t.find(host, path).map(|r| r.backend.service.name.clone()).unwrap_or_else(|| "-".into())
}

#[test]
fn path_matching_follows_ingress_v1() {
    // (rules as (path, pathType, service)), request path, expected service
    type Rules<'a> = &'a [(&'a str, &'a str, &'a str)];
    let cases: &[(Rules, &str, &str)] = &[
        (&[("/", "Prefix", "a")], "/anything/at/all", "a"),
        (&[("/foo", "Exact", "a")], "/foo", "a"),
        (&[("/foo", "Exact", "a")], "/bar", "-"),
        (&[("/foo", "Exact", "a")], "/foo/", "-"),
        (&[("/foo/", "Exact", "a")], "/foo", "-"),
        (&[("/foo", "Prefix", "a")], "/foo", "a"),
        (&[("/foo", "Prefix", "a")], "/foo/", "a"),
        (&[("/foo/", "Prefix", "a")], "/foo", "a"),
        (&[("/foo/", "Prefix", "a")], "/foo/", "a"),
        (&[("/aaa/bb", "Prefix", "a")], "/aaa/bbb", "-"),
        (&[("/aaa/bbb", "Prefix", "a")], "/aaa/bbb", "a"),
        (&[("/aaa/bbb/", "Prefix", "a")], "/aaa/bbb", "a"),
        (&[("/aaa/bbb", "Prefix", "a")], "/aaa/bbb/", "a"),
        (&[("/aaa/bbb", "Prefix", "a")], "/aaa/bbb/ccc", "a"),
        (&[("/aaa/bbb", "Prefix", "a")], "/aaa/bbbxyz", "-"),
        (&[("/", "Prefix", "a"), ("/aaa", "Prefix", "b")], "/aaa/ccc", "b"),
        (&[("/", "Prefix", "a"), ("/aaa", "Prefix", "b")], "/ccc", "a"),
        (&[("/aaa", "Prefix", "a"), ("/aaa/bbb", "Prefix", "b")], "/aaa/bbb", "b"),
        (&[("/aaa", "Prefix", "a"), ("/aaa/bbb", "Prefix", "b")], "/aaa/bbbxyz", "a"),
        (&[("/", "Prefix", "a"), ("/aaa", "Exact", "b")], "/aaa", "b"),
        (&[("/", "Prefix", "a"), ("/aaa", "Exact", "b")], "/aaa/x", "a"),
        // Exact beats Prefix of equal length.
        (&[("/foo", "Prefix", "a"), ("/foo", "Exact", "b")], "/foo", "b"),
        (&[("/foo", "Prefix", "a"), ("/foo", "Exact", "b")], "/foo/x", "a"),
        // ImplementationSpecific is Prefix.
        (&[("/foo", "ImplementationSpecific", "a")], "/foo/bar", "a"),
        (&[("/foo", "ImplementationSpecific", "a")], "/foobar", "-"),
        // Paths are case-sensitive.
        (&[("/Foo", "Prefix", "a")], "/foo", "-"),
    ];
    for (i, (rules, request, want)) in cases.iter().enumerate() {
        let mut b = ingress("ns", "ing");
        let mut objects = Vec::new();
        for (path, path_type, service) in rules.iter() {
            b = b.path("example.com", path, path_type, service, 80);
            objects.extend(svc("ns", service));
        }
        objects.push(ing(b));
        let t = build(objects);
        assert_eq!(&target(&t, "example.com", request), want, "case {i}: rules {rules:?}, request {request}");
    }
}

#[test]
fn host_matching_exact_wildcard_and_hostless() {
    let mut objects = svc("ns", "exact");
    objects.extend(svc("ns", "wild"));
    objects.extend(svc("ns", "any"));
    objects.push(ing(ingress("ns", "ing")
        .path("foo.example.com", "/", "Prefix", "exact", 80)
        .path("*.example.com", "/", "Prefix", "wild", 80)
        .path("", "/", "Prefix", "any", 80)));
    let t = build(objects);
    let cases = [
        ("foo.example.com", "exact"),
        ("FOO.Example.COM", "exact"),
        ("foo.example.com:8080", "exact"),
        ("foo.example.com.", "exact"),
        ("bar.example.com", "wild"),
        ("example.com", "any"),       // a wildcard needs exactly one more label
        ("a.bar.example.com", "any"), // ...not two
        ("other.test", "any"),
        ("", "any"),
    ];
    for (host, want) in cases {
        assert_eq!(target(&t, host, "/"), want, "host {host:?}");
    }
}

#[test]
fn invalid_hosts_and_paths_are_reported_and_skipped() {
    let mut objects = svc("ns", "a");
    objects.push(ing(ingress("ns", "ing")
        .path("bad_host.example", "/", "Prefix", "a", 80)
        .path("ok.example", "relative", "Prefix", "a", 80)
        .path("ok.example", "/x", "Regex", "a", 80)
        .path("ok.example", "/y", "Prefix", "a", 80)));
    let t = build(objects);
    assert_eq!(t.route_count(), 1);
    assert_eq!(t.diagnostics().len(), 3, "{:?}", t.diagnostics());
    assert_eq!(target(&t, "ok.example", "/y"), "a");
}

#[test]
fn conflicts_are_won_by_the_oldest_ingress_then_the_name() {
    let mut objects = svc("ns", "old");
    objects.extend(svc("ns", "new"));
    objects.push(ing(ingress("ns", "zzz-old").created("2024-01-01T00:00:00Z").path(
        "h.example",
        "/",
        "Prefix",
        "old",
        80,
    )));
    objects.push(ing(ingress("ns", "aaa-new").created("2025-01-01T00:00:00Z").path(
        "h.example",
        "/",
        "Prefix",
        "new",
        80,
    )));
    let t = build(objects);
    assert_eq!(target(&t, "h.example", "/"), "old");
    let d = &t.diagnostics()[0];
    assert_eq!((d.kind, &d.key), (Some(crate::index::Kind::Ingress), &ObjectKey::new("ns", "aaa-new")));
    assert!(d.message.contains("already served by Ingress ns/zzz-old"), "{d}");

    // Same age: the name decides.
    let mut objects = svc("ns", "b");
    objects.extend(svc("ns", "a"));
    objects.push(ing(ingress("ns", "b").path("h.example", "/", "Prefix", "b", 80)));
    objects.push(ing(ingress("ns", "a").path("h.example", "/", "Prefix", "a", 80)));
    let t = build(objects);
    assert_eq!(target(&t, "h.example", "/"), "a");
}

#[test]
fn rules_merge_across_ingresses_for_one_host() {
    let mut objects = svc("ns", "a");
    objects.extend(svc("other", "b"));
    objects.push(ing(ingress("ns", "one").path("h.example", "/a", "Prefix", "a", 80)));
    objects.push(ing(ingress("other", "two").path("h.example", "/b", "Prefix", "b", 80)));
    let t = build(objects);
    assert_eq!(target(&t, "h.example", "/a/1"), "a");
    assert_eq!(target(&t, "h.example", "/b/1"), "b");
    assert_eq!(t.find("h.example", "/b").unwrap().ingress.as_ref().unwrap().namespace, "other");
    assert!(t.diagnostics().is_empty());
}

#[test]
fn only_ingresses_of_our_class_are_served() {
    let rule = |b: crate::fixtures::IngressBuilder| b.path("h.example", "/", "Prefix", "a", 80);
    let cases: Vec<(&str, Vec<Object>, &str)> = vec![
        ("our class", vec![ing(rule(ingress("ns", "i")))], "a"),
        ("other class", vec![ing(rule(ingress("ns", "i").class(Some("nginx"))))], "-"),
        ("no class, no default", vec![ing(rule(ingress("ns", "i").class(None)))], "-"),
        (
            "no class, we are default",
            vec![
                Object::IngressClass(Box::new(ingress_class(
                    "erratum",
                    "erratum.dev/ingress-controller",
                    true,
                ))),
                ing(rule(ingress("ns", "i").class(None))),
            ],
            "a",
        ),
        (
            "no class, other default",
            vec![
                Object::IngressClass(Box::new(ingress_class("nginx", "k8s.io/ingress-nginx", true))),
                ing(rule(ingress("ns", "i").class(None))),
            ],
            "-",
        ),
        (
            "legacy annotation",
            vec![ing(rule(
                ingress("ns", "i").class(None).annotation("kubernetes.io/ingress.class", "erratum"),
            ))],
            "a",
        ),
        (
            "our class name owned by another controller",
            vec![
                Object::IngressClass(Box::new(ingress_class("erratum", "example.com/other", false))),
                ing(rule(ingress("ns", "i"))),
            ],
            "-",
        ),
    ];
    for (name, mut objects, want) in cases {
        objects.extend(svc("ns", "a"));
        assert_eq!(target(&build(objects), "h.example", "/"), want, "{name}");
    }
}

#[test]
fn default_backends_in_order() {
    let mut objects = svc("ns", "app");
    objects.extend(svc("ns", "host-default"));
    objects.extend(svc("ns", "catch-all"));
    objects.push(ing(ingress("ns", "a")
        .created("2024-01-01T00:00:00Z")
        .path("h.example", "/app", "Prefix", "app", 80)
        .default_backend("host-default", 80)));
    objects.push(ing(ingress("ns", "b").created("2025-01-01T00:00:00Z").default_backend("catch-all", 80)));
    let t = build(objects.clone());
    assert_eq!(target(&t, "h.example", "/app"), "app");
    assert_eq!(target(&t, "h.example", "/other"), "host-default", "a host's own Ingress default first");
    assert_eq!(
        target(&t, "unknown.example", "/"),
        "host-default",
        "the oldest defaultBackend is the catch-all"
    );
    assert!(t.diagnostics().iter().any(|d| d.key == ObjectKey::new("ns", "b")), "{:?}", t.diagnostics());

    // --default-backend when no Ingress provides one.
    let mut index = index(svc("ns", "fallback"));
    index.apply(ing(ingress("ns", "c").path("h.example", "/app", "Prefix", "fallback", 80)));
    let config =
        BuildConfig { default_backend: Some("ns/fallback:80".parse().unwrap()), ..BuildConfig::default() };
    let t = RoutingTable::build(&index, &config, 1);
    let route = t.find("nothing.example", "/").expect("flag default");
    assert!(route.ingress.is_none());
    // Without any default: no route (erratum's own 404).
    let t = RoutingTable::build(&index, &BuildConfig::default(), 1);
    assert!(t.find("nothing.example", "/").is_none());
    assert!(t.find("h.example", "/elsewhere").is_none());
}

#[test]
fn endpoints_follow_readiness_and_port_names() {
    let mut objects = vec![
        Object::Service(Box::new(service("ns", "web", &[(Some("http"), 80), (Some("metrics"), 9000)]))),
        Object::EndpointSlice(Box::new(endpoint_slice(
            "ns",
            "web-1",
            "web",
            &[(Some("http"), 8080), (Some("metrics"), 9100)],
            &[("10.0.0.1", Some(true)), ("10.0.0.2", None), ("10.0.0.3", Some(false))],
        ))),
        Object::EndpointSlice(Box::new(endpoint_slice(
            "ns",
            "web-2",
            "web",
            &[(Some("http"), 8080)],
            &[("fd00::1", Some(true))],
        ))),
        // Same label, other namespace: not ours.
        Object::EndpointSlice(Box::new(endpoint_slice(
            "elsewhere",
            "web-3",
            "web",
            &[(Some("http"), 8080)],
            &[("10.9.9.9", None)],
        ))),
    ];
    objects.push(ing(ingress("ns", "i").path("h.example", "/", "Prefix", "web", 80)));
    let t = build(objects);
    let route = t.find("h.example", "/").unwrap();
    let want: Vec<std::net::SocketAddr> = vec![
        "10.0.0.1:8080".parse().unwrap(),
        "10.0.0.2:8080".parse().unwrap(),
        "[fd00::1]:8080".parse().unwrap(),
    ];
    assert_eq!(route.backend.target, Target::Endpoints(want));
}

#[test]
fn unresolved_backends_answer_503_and_are_reported() {
    let objects = vec![
        Object::Service(Box::new(service("ns", "noport", &[(Some("http"), 80)]))),
        ing(ingress("ns", "i").path("h.example", "/missing", "Prefix", "ghost", 80).path(
            "h.example",
            "/port",
            "Prefix",
            "noport",
            81,
        )),
    ];
    let t = build(objects);
    for path in ["/missing", "/port"] {
        let route = t.find("h.example", path).expect("route kept");
        assert!(matches!(route.backend.pick(), Pick::Unavailable(_)), "{path}");
    }
    let text: Vec<String> = t.diagnostics().iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|d| d.contains("service ns/ghost not found")), "{text:?}");
    assert!(text.iter().any(|d| d.contains("service ns/noport has no port 81")), "{text:?}");
}

#[test]
fn external_name_services_resolve_by_dns() {
    let objects = vec![
        Object::Service(Box::new(external_service("ns", "ext", "api.example.net"))),
        ing(ingress("ns", "i").path("h.example", "/", "Prefix", "ext", 443)),
    ];
    let t = build(objects);
    assert_eq!(t.find("h.example", "/").unwrap().backend.pick(), Pick::Name("api.example.net", 443));
}

#[test]
fn build_is_deterministic() {
    let mut objects = svc("ns", "a");
    objects.extend(svc("ns", "b"));
    objects.push(ing(ingress("ns", "x").path("h.example", "/", "Prefix", "a", 80)));
    objects.push(ing(ingress("ns", "y").path("h.example", "/", "Prefix", "b", 80)));
    let first = build(objects.clone());
    for _ in 0..5 {
        let again = build(objects.clone());
        assert_eq!(target(&again, "h.example", "/"), target(&first, "h.example", "/"));
        assert_eq!(again.diagnostics(), first.diagnostics());
    }
}

#[test]
fn default_backend_flag_parses() {
    let r: ServiceRef = "ns/svc:http".parse().unwrap();
    assert_eq!(r.port, PortRef::Name("http".into()));
    assert_eq!("ns/svc:8080".parse::<ServiceRef>().unwrap().port, PortRef::Number(8080));
    for bad in ["svc:80", "ns/svc", "/svc:80", "ns/:80", "ns/svc:0", "ns/svc:70000"] {
        assert!(bad.parse::<ServiceRef>().is_err(), "{bad}");
    }
}

// === ErrorPagePolicy attachment, precedence, validation ===

fn pol(ns: &str, name: &str, spec: &str) -> Object {
    Object::ErrorPagePolicy(Box::new(crate::fixtures::policy(ns, name, spec)))
}

fn two_ingresses() -> Vec<Object> {
    let mut objects = svc("shop", "web");
    objects.push(ing(ingress("shop", "front").path("shop.example", "/", "Prefix", "web", 80)));
    objects.push(ing(ingress("shop", "api").path("api.example", "/", "Prefix", "web", 80)));
    objects
}

fn policy_names(t: &RoutingTable, host: &str, path: &str) -> Vec<String> {
    t.lookup(host, path).policies.iter().map(|p| p.key.name.clone()).collect()
}

#[test]
fn policies_attach_to_targets_or_the_whole_namespace() {
    let mut objects = two_ingresses();
    objects.push(pol("shop", "everywhere", "errorResponses: [{codes: ['5xx'], page: {inline: x}}]"));
    objects.push(pol(
        "shop",
        "front-only",
        "targetRefs: [{name: front}]\nerrorResponses: [{codes: ['404'], page: {inline: y}}]",
    ));
    objects.push(pol("other", "elsewhere", "errorResponses: [{codes: ['5xx'], page: {inline: z}}]"));
    let t = build(objects);
    assert_eq!(policy_names(&t, "shop.example", "/"), ["front-only", "everywhere"], "targeted first");
    assert_eq!(policy_names(&t, "api.example", "/"), ["everywhere"]);
    let report = |name: &str| t.policy_reports().iter().find(|r| r.key.name == name).unwrap().clone();
    assert_eq!(report("everywhere").attached.len(), 2);
    assert_eq!(report("front-only").attached.len(), 1);
    assert_eq!(report("elsewhere").attached.len(), 0);
}

#[test]
fn precedence_targeted_then_narrower_then_older_then_name() {
    let mut objects = two_ingresses();
    let spec = |extra: &str| format!("{extra}errorResponses: [{{codes: ['503'], page: {{inline: x}}}}]");
    objects.push(Object::ErrorPagePolicy(Box::new({
        let mut p = crate::fixtures::policy("shop", "b-old", &spec(""));
        p.metadata.creation_timestamp = Some(Time("2024-01-01T00:00:00Z".parse().unwrap()));
        p
    })));
    objects.push(pol("shop", "a-new", &spec("")));
    objects.push(pol("shop", "narrow", &spec("match: {paths: [{type: Prefix, value: /api}]}\n")));
    objects.push(pol("shop", "targeted", &spec("targetRefs: [{name: front}]\n")));
    let t = build(objects);
    assert_eq!(policy_names(&t, "shop.example", "/"), ["targeted", "narrow", "b-old", "a-new"]);
    let conflicts = &t.policy_reports().iter().find(|r| r.key.name == "a-new").unwrap().conflicts;
    assert!(conflicts.iter().any(|c| c.contains("policy shop/b-old takes precedence")), "{conflicts:?}");
}

#[test]
fn invalid_policies_are_reported_and_not_applied() {
    let cases = [
        ("errorResponses: [{codes: ['600'], page: {inline: x}}]", "is not a 4xx/5xx code"),
        ("errorResponses: [{codes: ['404'], page: {inline: x, path: /y}}]", "exactly one of path, inline"),
        ("errorResponses: [{codes: ['404'], page: {inline: '{{nope}}'}}]", "unknown template variable"),
        (
            "errorResponses: [{codes: ['404'], page: {inline: x}}, {codes: ['404'], page: {inline: y}}]",
            "more than one entry",
        ),
        ("errorResponses: [{codes: ['404'], responseCode: 700, page: {inline: x}}]", "between 200 and 599"),
        (
            "errorResponses: [{codes: ['404'], errorCachingMinTTLSeconds: 60, errorCachingMaxTTLSeconds: 5}]",
            "below",
        ),
        ("targetRefs: [{kind: Service, name: web}]\nerrorResponses: []", "only networking.k8s.io Ingress"),
        (
            "errorResponses: [{codes: ['404'], page: {configMapRef: {name: missing, key: a}}}]",
            "ConfigMap shop/missing not found",
        ),
        (
            "errorResponses: [{codes: ['404'], page: {backend: {name: missing}}}]",
            "Service shop/missing not found",
        ),
        (
            "errorResponses: [{codes: ['401'], responseCode: 302, setHeaders: {Location: '/?rd={{uri}}'}}]",
            "setHeaders.Location: template: unknown template variable {{uri}}",
        ),
        ("errorResponses: [{codes: ['503'], setHeaders: {Retry-After: \"1\\r\\nX: y\"}}]", "no CR, LF"),
        ("maintenance: {enabled: true, responseCode: 700}", "maintenance.responseCode: 700"),
        (
            "maintenance: {enabled: true, bypass: {sourceRanges: [10.0.0.0/33]}}",
            "maintenance.bypass.sourceRanges",
        ),
        ("maintenance: {enabled: true, bypass: {cookies: [{name: 'a;b', value: c}]}}", "is not a cookie"),
        ("maintenance: {enabled: true, page: {inline: '{{nope}}'}}", "maintenance.page: template"),
        (
            "errorResponses: [{codes: ['404'], page: {backend: {name: web, port: 81}}}]",
            "Service shop/web has no port 81",
        ),
        (
            "errorResponses: [{codes: ['404'], page: {backend: {name: web}, inline: x}}]",
            "exactly one of path, inline, configMapRef, formats, backend",
        ),
        (
            "errorResponses: [{codes: ['404'], page: {backend: {name: web}, contentType: text/plain}}]",
            "content type its backend answers with",
        ),
    ];
    for (spec, message) in cases {
        let mut objects = two_ingresses();
        objects.push(pol("shop", "bad", spec));
        let t = build(objects);
        let r = &t.policy_reports()[0];
        let all = [r.problems.invalid.clone(), r.problems.refs.clone()].concat().join("; ");
        assert!(all.contains(message), "{spec}: {all}");
        assert!(r.in_effect.is_none(), "{spec}");
        assert!(policy_names(&t, "shop.example", "/").is_empty(), "{spec}");
        assert!(
            t.diagnostics().iter().any(|d| d.kind == Some(crate::index::Kind::ErrorPagePolicy)),
            "{spec}"
        );
    }
}

#[test]
fn an_invalid_edit_keeps_the_last_good_version() {
    let mut objects = two_ingresses();
    objects.push(pol("shop", "p", "errorResponses: [{codes: ['503'], page: {inline: good}}]"));
    let good = build(objects.clone());
    objects.pop();
    objects.push(Object::ErrorPagePolicy(Box::new({
        let mut p = crate::fixtures::policy(
            "shop",
            "p",
            "errorResponses: [{codes: ['503'], page: {inline: '{{oops}}'}}]",
        );
        p.metadata.generation = Some(2);
        p
    })));
    let t = RoutingTable::build_from(&index(objects), &BuildConfig::default(), 2, Some(&good));
    assert_eq!(policy_names(&t, "shop.example", "/"), ["p"], "the last good version serves");
    let r = &t.policy_reports()[0];
    assert!(r.serving_last_good());
    let st = status::status(r, &Time("2026-01-01T00:00:00Z".parse().unwrap()));
    let cond = |ty: &str| st.conditions.iter().find(|c| c.type_ == ty).unwrap().clone();
    assert_eq!(cond("Accepted").status, "False");
    assert!(cond("Accepted").message.contains("unknown template variable"));
    assert_eq!(cond("Programmed").reason, "LastGoodServing");
}

/// The error backend a policy's `backend` page asks for 404s.
fn page_backend(t: &RoutingTable, policy: &str) -> Arc<Backend> {
    let p = t.policy(&ObjectKey::new("shop", policy)).expect("policy in effect");
    let page = p.rule_for(404).and_then(|r| r.page.clone()).expect("a 404 page");
    match &page.formats[0].body {
        policy::PageBody::Backend(b) => b.backend.clone(),
        other => panic!("not a backend page: {other:?}"),
    }
}

#[test]
fn backend_pages_share_the_builds_backends_even_when_kept_from_an_invalid_edit() {
    let errors = |ip: &str| {
        vec![
            Object::Service(Box::new(service("shop", "errors", &[(None, 8080), (None, 80)]))),
            Object::EndpointSlice(Box::new(endpoint_slice(
                "shop",
                "errors-x",
                "errors",
                &[(None, 3000)],
                &[(ip, Some(true))],
            ))),
        ]
    };
    let mut objects = two_ingresses();
    objects.extend(errors("10.0.0.7"));
    objects.push(pol("shop", "p", "errorResponses: [{codes: ['404'], page: {backend: {name: errors}}}]"));
    let good = build(objects.clone());
    let b = page_backend(&good, "p");
    assert_eq!(b.port, PortRef::Number(8080), "no port: the Service's first, as ingress-nginx");
    assert_eq!(b.target, Target::Endpoints(vec!["10.0.0.7:3000".parse().unwrap()]));
    assert!(good.policy_reports()[0].problems.is_empty());
    let status = status::status(&good.policy_reports()[0], &Time("2026-01-01T00:00:00Z".parse().unwrap()));
    let row = status.rules.iter().find(|r| r.code == "404").expect("a 404 row");
    assert_eq!(row.page, "backend shop/errors:8080");

    // The pod moves and the policy gets an invalid edit in the same build: the last good
    // version serves, on the new endpoint.
    let mut objects = two_ingresses();
    objects.extend(errors("10.0.0.8"));
    objects.push(Object::ErrorPagePolicy(Box::new({
        let mut p = crate::fixtures::policy(
            "shop",
            "p",
            "errorResponses: [{codes: ['404'], page: {backend: {name: errors, port: 9}}}]",
        );
        p.metadata.generation = Some(2);
        p
    })));
    let t = RoutingTable::build_from(&index(objects), &BuildConfig::default(), 2, Some(&good));
    assert!(t.policy_reports()[0].serving_last_good());
    assert!(t.policy_reports()[0].problems.refs[0].contains("has no port 9"));
    let b = page_backend(&t, "p");
    assert_eq!(b.target, Target::Endpoints(vec!["10.0.0.8:3000".parse().unwrap()]), "rebound");
}

#[test]
fn only_routes_under_a_switched_on_maintenance_carry_it() {
    let with = |enabled: bool| {
        let mut objects = two_ingresses();
        objects.push(pol(
            "shop",
            "m",
            &format!(
                "targetRefs: [{{name: front}}]\nmaintenance: {{enabled: {enabled}, retryAfterSeconds: 60}}"
            ),
        ));
        build(objects)
    };
    let off = with(false);
    assert!(
        off.find("shop.example", "/").unwrap().maintenance.is_none(),
        "off: nothing to check per request"
    );
    let st = status::status(&off.policy_reports()[0], &Time("2026-01-01T00:00:00Z".parse().unwrap()));
    assert_eq!(st.maintenance.as_deref(), Some("Off"));
    let on = with(true);
    let m = on.find("shop.example", "/").unwrap().maintenance.clone().expect("on");
    assert_eq!(m[0].key.name, "m");
    assert_eq!(m[0].maintenance.as_ref().unwrap().status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(on.find("api.example", "/").unwrap().maintenance.is_none(), "not a target");
}

#[test]
fn status_reports_the_effective_table() {
    let mut objects = two_ingresses();
    objects.push(Object::ConfigMap(Box::new(
        serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"namespace": "shop", "name": "pages"}, "data": {"503.html": "<h1>down</h1>"}}))
        .unwrap(),
    )));
    objects.push(pol(
        "shop",
        "p",
        "targetRefs: [{name: front}, {name: ghost}]\ndefaultErrorCachingMinTTLSeconds: 5\nerrorResponses:\n- {codes: ['503'], page: {configMapRef: {name: pages, key: 503.html}}, errorCachingMaxTTLSeconds: 60}\n- {codes: ['404'], responseCode: 200, page: {inline: spa}}\n",
    ));
    let t = build(objects);
    let st = status::status(&t.policy_reports()[0], &Time("2026-01-01T00:00:00Z".parse().unwrap()));
    let cond = |ty: &str| st.conditions.iter().find(|c| c.type_ == ty).unwrap().clone();
    assert_eq!(cond("Accepted").status, "True");
    assert_eq!(cond("ResolvedRefs").status, "False", "ghost is not an Ingress");
    assert_eq!(cond("ResolvedRefs").reason, "TargetNotFound");
    assert_eq!(cond("Programmed").status, "True");
    assert_eq!(st.attached_ingresses, 1);
    assert_eq!(st.targets.as_deref(), Some("front,ghost"));
    let row = |code: &str| st.rules.iter().find(|r| r.code == code).unwrap().clone();
    assert_eq!(row("503").cached, "always");
    assert_eq!((row("503").min_ttl_seconds, row("503").max_ttl_seconds), (5, Some(60)));
    assert_eq!(row("404").response_code, Some(200));
    assert_eq!(row("404").methods, vec![crate::crd::HttpMethod::GET, crate::crd::HttpMethod::HEAD]);
    assert_eq!(row("403").cached, "whenOriginSetsMaxAge", "defaults are listed too");
    assert_eq!(row("416").cached, "never");
    assert_eq!(row("416").min_ttl_seconds, 0);
}

#[test]
fn the_default_policy_covers_unmatched_requests() {
    let mut objects = two_ingresses();
    objects.push(pol(
        "erratum",
        "default",
        "errorResponses: [{codes: ['404'], page: {inline: nothing here}}]",
    ));
    let config =
        BuildConfig { default_policy: Some(ObjectKey::new("erratum", "default")), ..BuildConfig::default() };
    let t = RoutingTable::build(&index(objects), &config, 1);
    assert_eq!(policy_names(&t, "nobody.example", "/"), ["default"]);
    assert_eq!(policy_names(&t, "shop.example", "/"), ["default"], "lowest precedence everywhere");
}

#[test]
fn path_pages_are_prefetched_for_exact_hosts() {
    let mut objects = two_ingresses();
    objects.push(pol(
        "shop",
        "p",
        "targetRefs: [{name: front}]\nerrorResponses: [{codes: ['503'], page: {path: /errors/503.html}}]",
    ));
    let t = build(objects);
    assert_eq!(t.page_prefetch(), [("shop.example".to_string(), "/errors/503.html".to_string())]);
}

/// ingress-nginx's routing annotations as the build resolves them: `service-upstream` sends to
/// the cluster IP; a regex path erratum cannot read is left out and reported while the rest of
/// the host serves; `from-to-www-redirect` never takes a host another Ingress names; rate-limit
/// state outlives a rebuild with the same settings and not a changed one.
#[test]
fn routing_annotations_resolve_at_build() {
    const P: &str = "nginx.ingress.kubernetes.io/";
    let mut clustered = service("ns", "a", &[(None, 80)]);
    clustered.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.7".into());
    let mut objects = vec![Object::Service(Box::new(clustered))];
    objects.extend(svc("ns", "a").into_iter().skip(1));
    objects.push(ing(ingress("ns", "cip")
        .annotation(&format!("{P}service-upstream"), "true")
        .path("cip.test", "/", "Prefix", "a", 80)));
    objects.push(ing(ingress("ns", "eps").path("eps.test", "/", "Prefix", "a", 80)));
    objects.push(ing(ingress("ns", "re")
        .annotation(&format!("{P}use-regex"), "true")
        .path("re.test", "/ok/[0-9]+", "Prefix", "a", 80)
        .path("re.test", "/(?<=bad)", "Prefix", "a", 80)));
    objects.push(ing(ingress("ns", "clean")
        .annotation(&format!("{P}use-regex"), "true")
        .path("clean.test", "/v[0-9]+/", "Prefix", "a", 80)
        .path("clean.test", "/static", "Prefix", "a", 80)));
    objects.push(ing(ingress("ns", "www")
        .annotation(&format!("{P}from-to-www-redirect"), "true")
        .path("www.taken.test", "/", "Prefix", "a", 80)
        .path("free.test", "/", "Prefix", "a", 80)));
    objects.push(ing(ingress("ns", "taken").path("taken.test", "/", "Prefix", "a", 80)));
    let limited = |rps: &str| {
        ing(ingress("ns", "limited")
            .annotation(&format!("{P}limit-rps"), rps)
            .path("l.test", "/", "Prefix", "a", 80))
    };
    objects.push(limited("5"));
    let idx = index(objects.clone());
    let t = RoutingTable::build(&idx, &BuildConfig::default(), 1);

    let addr = |host: &str| t.find(host, "/x").map(|r| r.backend.endpoints().to_vec()).unwrap_or_default();
    assert_eq!(addr("cip.test"), ["10.96.0.7:80".parse().unwrap()]);
    assert_eq!(addr("eps.test"), ["10.0.0.1:8080".parse().unwrap()]);

    assert_eq!(target(&t, "re.test", "/OK/12"), "a");
    let regex_of = |t: &RoutingTable, h: &str| t.hosts[h].regex.as_ref().unwrap().paths.clone();
    let rebuilt = RoutingTable::build_from(&idx, &BuildConfig::default(), 2, Some(&t));
    assert!(
        Arc::ptr_eq(&regex_of(&t, "clean.test"), &regex_of(&rebuilt, "clean.test")),
        "the same paths: kept"
    );
    assert!(
        !Arc::ptr_eq(&regex_of(&t, "re.test"), &regex_of(&rebuilt, "re.test")),
        "a bad path: compiled again"
    );
    assert_eq!(target(&rebuilt, "clean.test", "/V2/x"), "a");
    assert!(t.diagnostics().iter().any(|d| d.message.contains("(?<=bad)") && d.message.contains("skipped")));

    let www = |host: &str| t.find(host, "/").and_then(|r| r.rewrite.as_ref()).and_then(|r| r.www.clone());
    assert_eq!(www("www.free.test").as_deref(), Some("free.test"));
    assert_eq!(www("taken.test"), None, "taken.test has its own Ingress");
    assert!(t.find("taken.test", "/").is_some());

    let state = |t: &RoutingTable| t.rate_limits()[0].1.clone();
    let same = RoutingTable::build_from(&idx, &BuildConfig::default(), 2, Some(&t));
    assert!(Arc::ptr_eq(&state(&t), &state(&same)), "same settings: the same state");
    let mut changed = objects;
    changed.pop();
    changed.push(limited("6"));
    let changed = RoutingTable::build_from(&index(changed), &BuildConfig::default(), 3, Some(&same));
    assert!(!Arc::ptr_eq(&state(&same), &state(&changed)), "changed settings start afresh");
}

/// Taking over ingress-nginx's class in place: `--ingress-class nginx` serves nothing while
/// the class belongs to another controller, everything of the class with
/// `--controller-name k8s.io/ingress-nginx`; `--watch-ingress-without-class` adds the
/// Ingresses that name no class.
#[test]
fn ingress_nginx_class_is_taken_over_in_place() {
    let mut objects = svc("ns", "a");
    objects.push(Object::IngressClass(Box::new(ingress_class("nginx", "k8s.io/ingress-nginx", false))));
    objects.push(ing(ingress("ns", "named").class(Some("nginx")).path("named.test", "/", "Prefix", "a", 80)));
    objects.push(ing(ingress("ns", "classless").class(None).path("classless.test", "/", "Prefix", "a", 80)));
    let idx = index(objects);
    let served = |config: BuildConfig| {
        let t = RoutingTable::build(&idx, &config, 1);
        ["named.test", "classless.test"].map(|h| target(&t, h, "/") == "a")
    };
    let nginx = BuildConfig { ingress_class: "nginx".into(), ..BuildConfig::default() };
    assert_eq!(served(nginx.clone()), [false, false], "another controller's class");
    let takeover = BuildConfig { controller_name: "k8s.io/ingress-nginx".into(), ..nginx.clone() };
    assert_eq!(served(takeover.clone()), [true, false]);
    assert_eq!(served(BuildConfig { without_class: true, ..takeover }), [true, true]);
    assert_eq!(
        served(BuildConfig { without_class: true, ..nginx }),
        [false, false],
        "never a foreign class's"
    );
}
