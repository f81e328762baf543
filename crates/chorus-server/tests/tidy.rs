//! Tidy checks over the whole source tree: module docs, banned macros and
//! the crate layering that ARCHITECTURE.md promises.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let krate = krate.expect("entry").path();
        for sub in ["src", "tests"] {
            if krate.join(sub).is_dir() {
                rust_files(&krate.join(sub), &mut files);
            }
        }
    }
    assert!(files.len() > 10, "found the sources");
    files
}

#[test]
fn every_module_has_a_doc_comment() {
    for f in all_sources() {
        let text = std::fs::read_to_string(&f).expect("readable");
        assert!(
            text.trim_start().starts_with("//!"),
            "{} has no //! module doc",
            f.display()
        );
    }
}

#[test]
fn no_debugging_leftovers() {
    let banned = [
        concat!("dbg", "!("),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
    ];
    for f in all_sources() {
        let text = std::fs::read_to_string(&f).expect("readable");
        for b in banned {
            assert!(!text.contains(b), "{} contains {b}", f.display());
        }
    }
}

fn dependencies(krate: &str) -> String {
    let manifest =
        std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml")).expect("manifest");
    manifest
        .split("[dev-dependencies]")
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn crates_depend_downwards_only() {
    // Only chorus-store and chorus-archive link RocksDB.
    for krate in [
        "chorus-core",
        "chorus-xmpp",
        "chorus-admin",
        "chorus-server",
        "chorus-cluster",
        "chorus-proto",
    ] {
        assert!(
            !dependencies(krate).contains("rocksdb"),
            "{krate} must not depend on rocksdb"
        );
    }
    // chorus-core performs no I/O.
    let core = dependencies("chorus-core");
    for banned in ["tokio", "chorus-"] {
        assert!(
            !core.contains(&format!("\n{banned}")),
            "chorus-core must not depend on {banned}"
        );
    }
    // The XMPP layer talks to storage through traits only.
    let xmpp = dependencies("chorus-xmpp");
    for banned in ["chorus-store", "chorus-admin", "chorus-server", "axum", "tonic"] {
        assert!(!xmpp.contains(banned), "chorus-xmpp must not depend on {banned}");
    }
    // The HTTP layer knows nothing of the cluster transport.
    let admin = dependencies("chorus-admin");
    for banned in ["chorus-cluster", "tonic", "chorus-store"] {
        assert!(
            !admin.contains(banned),
            "chorus-admin must not depend on {banned}"
        );
    }
    // The console reads the cluster through status documents and the data
    // through traits and the archive's compliance operations.
    let console = dependencies("chorus-console");
    for banned in ["chorus-cluster", "tonic", "chorus-store", "rocksdb", "openraft"] {
        assert!(
            !console.contains(banned),
            "chorus-console must not depend on {banned}"
        );
    }
    // The directory talks LDAP and writes through the Store trait only.
    let directory = dependencies("chorus-directory");
    for banned in [
        "chorus-store",
        "chorus-xmpp",
        "chorus-cluster",
        "chorus-archive",
        "tonic",
        "axum",
    ] {
        assert!(
            !directory.contains(banned),
            "chorus-directory must not depend on {banned}"
        );
    }
    // The archive has one home: only chorus-archive drives openraft, and it
    // knows nothing of the transport that carries its bytes.
    for krate in ["chorus-cluster", "chorus-server", "chorus-xmpp", "chorus-admin"] {
        assert!(
            !dependencies(krate).contains("openraft"),
            "{krate} must not depend on openraft (the archive's Raft node lives in chorus-archive)"
        );
    }
    let archive = dependencies("chorus-archive");
    for banned in ["chorus-cluster", "chorus-proto", "tonic", "chorus-server"] {
        assert!(
            !archive.contains(banned),
            "chorus-archive must not depend on {banned}"
        );
    }
    let store = dependencies("chorus-store");
    assert!(
        !store.contains("chorus-xmpp"),
        "chorus-store must not depend on chorus-xmpp"
    );
}

#[test]
fn only_the_xmpp_crate_parses_xml() {
    for f in all_sources() {
        let p = f.display().to_string();
        if p.contains("chorus-xmpp") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("readable");
        assert!(
            !text.contains(concat!("rxml", "::")),
            "{p} parses XML outside chorus-xmpp"
        );
    }
}

#[test]
fn only_the_proto_crate_has_a_build_script() {
    for krate in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let krate = krate.expect("entry").path();
        let name = krate.file_name().expect("name").to_string_lossy().into_owned();
        assert_eq!(
            krate.join("build.rs").exists(),
            name == "chorus-proto",
            "{name}: build.rs"
        );
    }
}

#[test]
fn storage_writes_say_whether_they_are_synced() {
    // A plain RocksDB write goes through the write-ahead log unsynced: it
    // survives `kill -9` but not a power cut, and the power-loss simulation
    // (`lose-unsynced-writes`) cannot see it. Every write in the storage
    // crates is either durable (`chorus_store::durable`, synced options) or
    // says it may be lost (`durable::unsynced()`).
    let banned = [
        concat!("db.write", "("),
        concat!("db.put_cf", "("),
        concat!("db.delete_cf", "("),
        concat!("db.put", "("),
    ];
    for f in all_sources() {
        let p = f.display().to_string();
        // Test modules (tamper with rows on purpose) are not storage code.
        if !(p.contains("chorus-store/src") || p.contains("chorus-archive/src")) || p.ends_with("/tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("readable");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for b in banned {
            assert!(
                !code.contains(b),
                "{p}: {b} writes without saying whether it is synced"
            );
        }
    }
}
