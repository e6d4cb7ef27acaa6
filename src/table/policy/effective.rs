//! The effective per-code table of a resolved policy (CloudFront's caching classes, the TTLs
//! in effect), for its status: what `kubectl get epp -o yaml` shows under `status.rules`.

use std::collections::BTreeMap;

use super::{ALWAYS_CACHED, CACHED_WITH_MAX_AGE, MethodSet, NEVER_CACHED, ResolvedPolicy};
use crate::crd;

/// How CloudFront caches an error code (rules 9–13), for status and the error cache.
pub fn cacheability(code: &str) -> &'static str {
    match code {
        "4xx" | "5xx" => "perCode",
        c => match c.parse::<u16>() {
            Ok(n) if ALWAYS_CACHED.contains(&n) => "always",
            Ok(n) if CACHED_WITH_MAX_AGE.contains(&n) => "whenOriginSetsMaxAge",
            Ok(NEVER_CACHED) => "never",
            _ => "byRule",
        },
    }
}

/// The effective per-code table for status: every rule's codes, plus CloudFront's cached codes
/// that no rule covers, with the TTLs in effect.
pub fn effective_rules(policy: &ResolvedPolicy) -> Vec<crd::EffectiveRule> {
    let mut rows = BTreeMap::new();
    for rule in &policy.rules {
        for code in &rule.codes {
            rows.insert(
                code.clone(),
                crd::EffectiveRule {
                    code: code.clone(),
                    response_code: rule.response_code.map(|s| s.as_u16()),
                    page: rule.page.as_ref().map_or_else(|| "none".to_string(), |p| p.describe()),
                    cached: cacheability(code).to_string(),
                    min_ttl_seconds: if code == "416" {
                        0
                    } else {
                        rule.min_ttl.unwrap_or(policy.default_min_ttl)
                    },
                    max_ttl_seconds: rule.max_ttl,
                    methods: rule.methods.to_crd(),
                },
            );
        }
    }
    for code in ALWAYS_CACHED.iter().chain(CACHED_WITH_MAX_AGE.iter()).chain(std::iter::once(&NEVER_CACHED)) {
        let covered = policy.rule_for(*code).is_some();
        if !covered {
            let c = code.to_string();
            rows.insert(
                c.clone(),
                crd::EffectiveRule {
                    code: c.clone(),
                    response_code: None,
                    page: "none".into(),
                    cached: cacheability(&c).into(),
                    min_ttl_seconds: if *code == NEVER_CACHED { 0 } else { policy.default_min_ttl },
                    max_ttl_seconds: None,
                    methods: MethodSet::ALL.to_crd(),
                },
            );
        }
    }
    rows.into_values().collect()
}
