//! The query strings of the compliance API (`/api/v1/archive/...`): their
//! parameters, parsed from the raw string a caller sent and checked here,
//! apart from the HTTP stack, so the fuzz target `api_query` runs exactly
//! what a request runs. Any string is an answer or a clear error: unknown
//! parameters, repeated ones, numbers out of range and malformed times are
//! refused, never a panic or an unbounded allocation beyond the input.

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The longest query string the API reads (bytes).
pub const QUERY_BYTES_MAX: usize = 8 * 1024;

/// Search parameters, shared by search and export.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Comma-separated participant JIDs.
    pub participants: Option<String>,
    /// A room JID.
    pub room: Option<String>,
    /// The site whose node accepted the records.
    pub site: Option<String>,
    /// Words to search for.
    pub q: Option<String>,
    /// From (RFC 3339 or milliseconds).
    pub start: Option<String>,
    /// Until (RFC 3339 or milliseconds).
    pub end: Option<String>,
    /// Hits to skip.
    pub offset: Option<usize>,
    /// Hits to return.
    pub limit: Option<usize>,
    /// Export format.
    pub format: Option<String>,
    /// Export a hold instead of a search.
    pub hold: Option<String>,
}

/// A conversation: one user with another, or a room.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ConversationParams {
    /// The user whose archive is read.
    pub user: Option<String>,
    /// The other party.
    pub with: Option<String>,
    /// Or a room.
    pub room: Option<String>,
    /// From (RFC 3339 or milliseconds).
    pub start: Option<String>,
    /// Until (RFC 3339 or milliseconds).
    pub end: Option<String>,
    /// Page after this archive id.
    pub after: Option<String>,
    /// Records per page.
    pub limit: Option<usize>,
}

/// A retention run.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// Refused: expiry is judged at the archive's committed time.
    pub at: Option<String>,
}

/// Paging through the audit trail or the chain.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// First sequence number.
    pub from: Option<u64>,
    /// Entries per page.
    pub limit: Option<usize>,
}

/// Adding an archive member.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct AddParams {
    /// `voter` (default) or `learner`.
    pub role: Option<String>,
}

/// Parses a raw query string (without the `?`; `None`: no query).
pub fn parse<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, String> {
    let raw = raw.unwrap_or("");
    if raw.len() > QUERY_BYTES_MAX {
        return Err(format!("the query string is over {QUERY_BYTES_MAX} bytes"));
    }
    serde_urlencoded::from_str(raw).map_err(|e| format!("bad query string: {e}"))
}

/// A time parameter: milliseconds since the epoch or an RFC 3339 /
/// XEP-0082 date-time; empty means none.
pub fn time(v: &Option<String>, what: &str) -> Result<Option<u64>, String> {
    match v.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<u64>()
            .ok()
            .or_else(|| crate::time::parse_xep0082(s))
            .map(Some)
            .ok_or_else(|| format!("{what}: use RFC 3339 (2026-11-22T09:00:00Z) or milliseconds")),
    }
}

/// A comma-separated list, trimmed, empty items dropped.
pub fn list(v: &Option<String>) -> Vec<String> {
    v.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Everything the API does with a query string before it reaches the
/// archive, for every endpoint's parameters (the fuzz target's body).
pub fn exercise(raw: &str) {
    if let Ok(p) = parse::<SearchParams>(Some(raw)) {
        let _ = (
            time(&p.start, "start"),
            time(&p.end, "end"),
            list(&p.participants),
        );
    }
    if let Ok(p) = parse::<ConversationParams>(Some(raw)) {
        let _ = (time(&p.start, "start"), time(&p.end, "end"));
    }
    let _ = parse::<RunParams>(Some(raw));
    let _ = parse::<AuditParams>(Some(raw));
    let _ = parse::<AddParams>(Some(raw));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_query_parses_with_times_and_lists() {
        let p: SearchParams = parse(Some(
            "q=budget+plan&participants=alice%40x.test,%20bob@x.test,&start=2026-11-22T09:00:00Z&end=1700000000000&limit=20",
        ))
        .expect("parses");
        assert_eq!(p.q.as_deref(), Some("budget plan"));
        assert_eq!(list(&p.participants), ["alice@x.test", "bob@x.test"]);
        assert_eq!(time(&p.start, "start"), Ok(Some(1_795_338_000_000)));
        assert_eq!(time(&p.end, "end"), Ok(Some(1_700_000_000_000)));
        assert_eq!(p.limit, Some(20));
        let none: SearchParams = parse(None).expect("no query");
        assert!(none.q.is_none());
    }

    #[test]
    fn bad_queries_are_clear_errors() {
        for raw in [
            "unknown=1",
            "limit=-1",
            "limit=99999999999999999999999",
            "from=x",
            "q=a&q=b",
        ] {
            let search = parse::<SearchParams>(Some(raw));
            let audit = parse::<AuditParams>(Some(raw));
            assert!(search.is_err() || audit.is_err(), "{raw}");
        }
        let e = parse::<SearchParams>(Some("limit=-1")).expect_err("negative");
        assert!(e.starts_with("bad query string"), "{e}");
        let long = format!("q={}", "a".repeat(QUERY_BYTES_MAX));
        assert!(parse::<SearchParams>(Some(&long)).is_err());
        let p: SearchParams = parse(Some("start=yesterday")).expect("a string");
        assert!(
            time(&p.start, "start")
                .expect_err("not a time")
                .starts_with("start:")
        );
    }

    #[test]
    fn no_query_string_panics() {
        // The fuzz target's property on a fixed corpus of awkward inputs
        // (the fuzzer explores further; see fuzz/README.md).
        let cases = [
            "",
            "&",
            "=",
            "==&&",
            "%",
            "%zz",
            "%ff%fe",
            "q=%F0%9F%92%A9",
            "start=9999-12-31T23:59:59.999999999Z",
            "start=0000-01-01T00:00:00Z",
            "start=2026-02-30T00:00:00+99:99",
            "start=١٢٣",
            "limit=1e9",
            "offset=18446744073709551616",
            "start=2026-11-22T09:00:00\u{0}Z",
            "a[]=1&a[0]=2",
        ];
        for raw in cases {
            exercise(raw);
        }
    }
}
