//! JID validation and normalization (RFC 7622 through the `jid` crate's
//! stringprep profiles): a full JID or different case names the same
//! account, so holds, retention rules, searches and stored records all use
//! the normalized form.

/// The normalized bare JID of `s` (a bare or full JID), or why it is not
/// a JID.
pub fn bare(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("an empty JID".to_owned());
    }
    jid::Jid::new(t)
        .map(|j| j.to_bare().to_string())
        .map_err(|e| format!("{t:?} is not a valid JID: {e}"))
}

/// The normalized form of `s` (resource kept), or `s` unchanged if it is
/// not a valid JID (the archive keeps what it was given rather than drop
/// a record).
pub fn normalized_or_raw(s: &str) -> String {
    jid::Jid::new(s)
        .map(|j| j.to_string())
        .unwrap_or_else(|_| s.to_owned())
}

/// The normalized bare JIDs of every item of `list`, without repeats; the
/// first invalid one is an error naming it.
pub fn bare_all(list: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for s in list {
        let b = bare(s)?;
        if !out.contains(&b) {
            out.push(b);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_resource_name_the_same_account() {
        assert_eq!(
            bare("Alice@Example.COM/Phone").as_deref(),
            Ok("alice@example.com")
        );
        assert_eq!(bare(" alice@example.com ").as_deref(), Ok("alice@example.com"));
        assert_eq!(
            bare_all(&["Bob@x.org".into(), "bob@x.org/r".into()]),
            Ok(vec!["bob@x.org".to_owned()])
        );
        assert_eq!(normalized_or_raw("Bob@X.org/Res"), "bob@x.org/Res");
    }

    #[test]
    fn invalid_jids_are_refused_with_the_reason() {
        for bad in ["", "@example.com", "a@b@c", "alice@", "al ice@example.com"] {
            let e = bare(bad).expect_err(bad);
            assert!(e.contains("JID"), "{bad}: {e}");
        }
    }
}
