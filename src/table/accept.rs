//! `Accept` header negotiation (RFC 9110 §12.5.1) among a page's formats.
//!
//! Pure and allocation-light: it runs on the error path of every replaced response.

/// The quality (0–1000) the `Accept` header gives `media` (`type/subtype`, lower case), using
/// the most specific matching range: `type/subtype` > the structured-syntax base type
/// (`application/json` for `application/problem+json`, RFC 6839) > `type/*` > `*/*`. No header
/// accepts everything.
pub fn quality(accept: Option<&str>, media: &str) -> u16 {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return 1000;
    };
    let (mtype, subtype) = media.split_once('/').unwrap_or((media, ""));
    // "problem+json" -> "json": a client asking for application/json understands it.
    let suffix = subtype.rsplit_once('+').map(|(_, s)| s);
    let mut best: Option<(u8, u16)> = None; // (specificity, q)
    for range in accept.split(',') {
        let mut params = range.split(';');
        let r = params.next().unwrap_or("").trim();
        let q = params
            .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .next()
            .map(parse_q)
            .unwrap_or(1000);
        let specificity = if r.eq_ignore_ascii_case(media) {
            4
        } else if suffix.is_some_and(|s| {
            // Byte slices: a header may hold non-ASCII, and a str slice there would panic.
            let r = r.as_bytes();
            r.len() == mtype.len() + 1 + s.len()
                && r[..mtype.len()].eq_ignore_ascii_case(mtype.as_bytes())
                && r[mtype.len()] == b'/'
                && r[mtype.len() + 1..].eq_ignore_ascii_case(s.as_bytes())
        }) {
            3
        } else if r.len() == mtype.len() + 2
            && r.ends_with("/*")
            && r.as_bytes()[..mtype.len()].eq_ignore_ascii_case(mtype.as_bytes())
        {
            2
        } else if r == "*/*" {
            1
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0, |(_, q)| q)
}

fn parse_q(q: &str) -> u16 {
    // "0", "0.5", "1", "1.000"; anything else counts as 0 (not acceptable).
    let q = q.trim();
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    let int: u16 = match int {
        "0" => 0,
        "1" => 1,
        _ => return 0,
    };
    let mut milli = 0u16;
    for (i, d) in frac.bytes().take(3).enumerate() {
        if !d.is_ascii_digit() {
            return 0;
        }
        milli += u16::from(d - b'0') * [100, 10, 1][i];
    }
    (int * 1000 + milli).min(1000)
}

/// Index of the best format for `accept` among media types in preference order: the highest
/// quality wins, ties go to the earlier format, and when nothing is acceptable the first
/// (default) format is used rather than answering 406 on an error path.
pub fn choose<'a>(accept: Option<&str>, media: impl IntoIterator<Item = &'a str>) -> usize {
    let mut best = (0usize, 0u16);
    for (i, m) in media.into_iter().enumerate() {
        let q = quality(accept, m);
        if q > best.1 {
            best = (i, q);
        }
    }
    best.0
}

/// Whether `accept` explicitly lists one of `media` with a non-zero quality. Wildcard ranges do
/// not count: `*/*` from an API client must not select an HTML fallback.
pub fn lists_explicitly(accept: Option<&str>, media: &[String]) -> bool {
    let Some(accept) = accept else { return false };
    accept.split(',').any(|range| {
        let mut params = range.split(';');
        let r = params.next().unwrap_or("").trim();
        let q = params.filter_map(|p| p.trim().strip_prefix("q=")).next().map(parse_q).unwrap_or(1000);
        q > 0 && media.iter().any(|m| r.eq_ignore_ascii_case(m))
    })
}

/// The `type/subtype` of a content type, lower case, without parameters.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";

    #[test]
    fn q_values_and_specificity() {
        assert_eq!(quality(Some(BROWSER), "text/html"), 1000);
        assert_eq!(quality(Some(BROWSER), "application/problem+json"), 800);
        assert_eq!(quality(Some("application/json, */*;q=0.1"), "text/html"), 100);
        assert_eq!(quality(Some("text/*;q=0.5, text/html;q=0"), "text/html"), 0, "most specific range wins");
        assert_eq!(quality(Some("text/*;q=0.5"), "text/plain"), 500);
        assert_eq!(quality(Some("application/json"), "text/html"), 0);
        assert_eq!(quality(None, "text/html"), 1000);
        assert_eq!(quality(Some("text/html;q=0.333"), "text/html"), 333);
        assert_eq!(quality(Some("text/html;q=2"), "text/html"), 0, "invalid q is not acceptable");
    }

    #[test]
    fn choosing_formats() {
        let formats = ["text/html", "application/problem+json", "text/plain"];
        assert_eq!(choose(Some(BROWSER), formats), 0);
        assert_eq!(choose(Some("application/json, application/problem+json"), formats), 1);
        assert_eq!(choose(Some("application/json, */*;q=0.1"), formats), 1, "+json answers application/json");
        assert_eq!(choose(Some("application/json;q=0.5, text/html"), formats), 0);
        assert_eq!(choose(Some("text/plain;q=0.9, text/html;q=0.1"), formats), 2);
        assert_eq!(choose(Some("*/*"), formats), 0, "ties go to the default");
        assert_eq!(choose(None, formats), 0);
        assert_eq!(choose(Some("image/png"), formats), 0, "nothing acceptable: default");
    }

    #[test]
    fn explicit_listing_ignores_wildcards() {
        let html = vec!["text/html".to_string()];
        assert!(lists_explicitly(Some(BROWSER), &html));
        assert!(!lists_explicitly(Some("*/*"), &html));
        assert!(!lists_explicitly(Some("application/json"), &html));
        assert!(!lists_explicitly(Some("text/html;q=0"), &html));
        assert!(!lists_explicitly(None, &html));
    }
}
