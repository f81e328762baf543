//! What the archive benchmarks share: a realistic record and the
//! process's resident memory from /proc.

use chorus_archive::types::Record;

pub fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak-RSS counter (Linux: `5` to clear_refs) and returns RSS.
pub fn reset_peak() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:")
}

pub fn rec(i: u64) -> Record {
    let user = i % 500;
    Record {
        id: format!("bench-{i}"),
        from: format!("user{user}@corp.example/laptop"),
        to: format!("user{}@corp.example", (user + 1) % 500),
        site: "london".into(),
        stamp_ms: 1_800_000_000_000 + i,
        xml: format!(
            "<message xmlns='jabber:client' type='chat' id='m{i}'><body>quarterly budget review item {i}, please confirm the figures</body></message>"
        ),
        body: Some(format!(
            "quarterly budget review item {i}, please confirm the figures"
        )),
        ..Record::default()
    }
}
