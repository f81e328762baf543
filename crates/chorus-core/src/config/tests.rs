//! Tests of the configuration: parsing, validation, environment
//! overrides, and the example file against the defaults.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", Vec::new())
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").expect("defaults are valid");
    assert_eq!(c.limits.stanza_bytes_max, 262_144);
    assert!(!c.registration.enabled);
    assert!(c.http.tls);
}

#[test]
fn unknown_key_names_file_and_key() {
    let e = parse("[limits]\nstanza_bytes = 5\n").expect_err("unknown key");
    assert_eq!(e.source_name, "test.toml");
    assert_eq!(e.key, "limits.stanza_bytes");
    assert!(e.reason.contains("stanza_bytes"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = parse("[limits]\nstanza_bytes_max = \"big\"\n").expect_err("wrong type");
    assert_eq!(e.key, "limits.stanza_bytes_max");
}

#[test]
fn syntax_error_reports_line() {
    let e = parse("[server]\ndomain = \n").expect_err("syntax");
    assert!(e.reason.contains("line 2"), "{e}");
}

#[test]
fn invalid_domain_rejected() {
    let e = parse("[server]\ndomain = \"a@b\"\n").expect_err("bad domain");
    assert_eq!(e.key, "server.domain");
}

#[test]
fn zero_limit_rejected() {
    let e = parse("[limits]\nconnections_max = 0\n").expect_err("zero");
    assert_eq!(e.key, "limits.connections_max");
}

#[test]
fn background_nice_is_a_nice_step_count() {
    for bad in [-1, 20] {
        let e = parse(&format!("[archive]\nbackground_nice = {bad}\n")).expect_err("out of range");
        assert_eq!(e.key, "archive.background_nice", "{bad}");
    }
    assert_eq!(parse("").expect("defaults").archive.background_nice, 10);
    let c = parse("[archive]\nbackground_nice = 0\n").expect("as the sessions");
    assert_eq!(c.archive.background_nice, 0);
}

#[test]
fn election_timeout_is_bounded_and_sets_the_raft_timing() {
    for bad in [0, 99, 60_001] {
        let e = parse(&format!("[archive]\nelection_timeout_ms = {bad}\n")).expect_err("out of range");
        assert_eq!(e.key, "archive.election_timeout_ms", "{bad}");
    }
    let c = parse("").expect("defaults");
    // The default brings a lost leader's replacement within 1 s: lease
    // (the longest timeout) plus a random timeout.
    let (heartbeat, min, max) = c.archive.raft_timing_ms();
    assert_eq!((heartbeat, min, max), (80, 200, 360));
    assert!(max + max < 1000 && heartbeat * 4 <= min * 2);
}

#[test]
fn environment_overrides_file() {
    let env = vec![
        ("CHORUS_SERVER__DOMAIN".to_string(), "corp.example".to_string()),
        ("CHORUS_LIMITS__STANZA_BYTES_MAX".to_string(), "65536".to_string()),
        ("PATH".to_string(), "/bin".to_string()),
        ("CHORUS_CONFIG".to_string(), "/etc/chorus.toml".to_string()),
        ("CHORUS_BIN".to_string(), "target/debug/chorus".to_string()),
    ];
    let c = Config::parse("[server]\ndomain = \"x.example\"\n", "f", env).expect("valid");
    assert_eq!(c.server.domain, "corp.example");
    assert_eq!(c.limits.stanza_bytes_max, 65536);
}

#[test]
fn bad_environment_value_names_variable() {
    let env = vec![("CHORUS_LIMITS__XML_DEPTH_MAX".to_string(), "deep".to_string())];
    let e = Config::parse("", "f", env).expect_err("bad env");
    assert_eq!(e.key, "limits.xml_depth_max");
}

mod example_file {
    use super::*;

    /// deploy/chorus.example.toml documents every setting with its default.
    #[test]
    fn example_config_matches_defaults_and_names_every_key() {
        let text = include_str!("../../../../deploy/chorus.example.toml");
        let parsed = Config::parse(text, "chorus.example.toml", Vec::new()).expect("example parses");
        let as_toml = |c: &Config| toml::Value::try_from(c).expect("serializes");
        assert_eq!(as_toml(&parsed), as_toml(&Config::default()));
        let toml::Value::Table(sections) = as_toml(&Config::default()) else {
            panic!("table")
        };
        for (section, keys) in sections {
            assert!(
                text.contains(&format!("[{section}]")),
                "section {section} missing"
            );
            if let toml::Value::Table(keys) = keys {
                for key in keys.keys() {
                    assert!(
                        text.contains(&format!("{key} = ")),
                        "{section}.{key} missing from the example"
                    );
                }
            }
        }
        assert!(text.contains("cert_file") && text.contains("key_file"));
    }
}
