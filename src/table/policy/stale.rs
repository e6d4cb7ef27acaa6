//! `spec.staleIfError`: which backend failures a policy answers with the last good copy of a
//! response, and for how long past its freshness.
//!
//! Data flow: [`resolve`](super::resolve) validates it into a [`StaleIfError`] on the
//! resolved policy; the table build gives each route the Enforce policies that have one
//! (`Route::stale`, `None` for every other route: one branch per request); the proxy keeps
//! copies of good responses on those routes and serves one when the backend fails
//! (`proxy::stale`).

use std::time::Duration;

use super::Problems;
use crate::crd;

/// RFC 5861's "error" statuses, nginx's `http_500 http_502 http_503 http_504`.
const DEFAULT_CODES: [u16; 4] = [500, 502, 503, 504];

/// A validated `spec.staleIfError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleIfError {
    /// How long past its freshness lifetime a copy may be served (the origin's
    /// `stale-if-error=N` wins).
    pub max_stale: Duration,
    /// Listed statuses, bit `n` for `500 + n`.
    codes: u128,
}

impl StaleIfError {
    /// Whether a backend answer with `status` is answered with the copy.
    pub fn serves_for(&self, status: u16) -> bool {
        status.checked_sub(500).is_some_and(|n| n < 100 && self.codes & (1u128 << n) != 0)
    }
}

/// Validates `spec.staleIfError` (reporting into `p`).
pub(super) fn resolve(s: &crd::StaleIfError, p: &mut Problems) -> Option<StaleIfError> {
    let before = p.invalid.len();
    if s.max_stale_seconds == 0 || s.max_stale_seconds > crd::MAX_TTL_SECONDS {
        p.invalid.push(format!(
            "staleIfError.maxStaleSeconds: {} is not between 1 and {}",
            s.max_stale_seconds,
            crd::MAX_TTL_SECONDS
        ));
    }
    let mut codes = 0u128;
    if s.codes.is_empty() {
        for c in DEFAULT_CODES {
            codes |= 1 << (c - 500);
        }
    }
    for code in &s.codes {
        match code.as_str() {
            "5xx" => codes = u128::MAX >> 28, // 100 bits: 500 to 599
            c => match c.parse::<u16>() {
                Ok(n) if (500..=599).contains(&n) && c.len() == 3 => codes |= 1 << (n - 500),
                _ => {
                    p.invalid.push(format!("staleIfError.codes: {code:?} is not a 5xx code or the class 5xx"))
                }
            },
        }
    }
    (p.invalid.len() == before)
        .then(|| StaleIfError { max_stale: Duration::from_secs(u64::from(s.max_stale_seconds)), codes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(yaml: &str) -> Result<StaleIfError, Vec<String>> {
        let spec: crd::StaleIfError = serde_yaml_ng::from_str(yaml).expect("yaml");
        let mut p = Problems::default();
        resolve(&spec, &mut p).ok_or(p.invalid)
    }

    #[test]
    fn codes_default_to_rfc_5861s_errors_and_a_class_covers_all_5xx() {
        let d = resolved("maxStaleSeconds: 60").unwrap();
        assert_eq!(d.max_stale, Duration::from_secs(60));
        assert!([500, 502, 503, 504].iter().all(|&c| d.serves_for(c)));
        assert!(![501, 505, 599, 404, 200, 499, 600].iter().any(|&c| d.serves_for(c)));
        let all = resolved("{maxStaleSeconds: 1, codes: ['5xx']}").unwrap();
        assert!((500..=599).all(|c| all.serves_for(c)));
        assert!(!all.serves_for(600) && !all.serves_for(499));
        let one = resolved("{maxStaleSeconds: 1, codes: ['507']}").unwrap();
        assert!(one.serves_for(507) && !one.serves_for(503));
    }

    #[test]
    fn bad_values_are_reported() {
        assert!(resolved("{maxStaleSeconds: 0}").unwrap_err()[0].contains("maxStaleSeconds: 0"));
        let e = resolved("{maxStaleSeconds: 5, codes: ['404', '5x', '5000']}").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("\"404\" is not a 5xx code"));
    }
}
