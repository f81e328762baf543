//! [`ServerTls`] against rustls's own buffered client (tokio-rustls): data
//! both ways at every record size, on TLS 1.3 and 1.2, the exporter against
//! the client's, key updates, close_notify, a tampered record, garbage for
//! a handshake, and the claim the module exists for: an idle connection
//! holds no buffer.

use super::*;
use std::io::{Read as _, Write as _};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring::{cipher_suite, default_provider};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{
    AlertDescription, ClientConfig, Error as TlsError, KeyLog, RootCertStore, SupportedProtocolVersion,
    version,
};

/// A self-signed certificate for `localhost` and the configurations of
/// both ends, limited to `versions` and (if given) one cipher suite.
fn configs(
    versions: &[&'static SupportedProtocolVersion],
    suite: Option<SupportedCipherSuite>,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut provider = default_provider();
    if let Some(s) = suite {
        provider.cipher_suites = vec![s];
    }
    let provider = Arc::new(provider);
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    server.key_log = Arc::new(ExporterSecretLog);
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// A handshaken pair over loopback.
async fn pair(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> (ServerTls, TlsStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connect = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .expect("client handshake")
    };
    let accept = async {
        let (tcp, _) = listener.accept().await.expect("accept");
        ServerTls::accept(server, tcp).await.expect("server handshake")
    };
    let (c, s) = tokio::join!(connect, accept);
    (s, c)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn holds_no_buffer(s: &ServerTls) -> bool {
    s.incoming.capacity() == 0 && s.plaintext.capacity() == 0 && s.outgoing.capacity() == 0
}

/// Sends `len` bytes each way at once (neither side may wait for the
/// other to read) and checks both arrive intact.
async fn exchange(s: &mut ServerTls, c: &mut TlsStream<TcpStream>, len: usize) {
    let (up, down) = (pattern(len, 1), pattern(len, 7));
    let (mut s_read, mut c_read) = (vec![0u8; len], vec![0u8; len]);
    let server = async {
        let (mut r, mut w) = tokio::io::split(&mut *s);
        tokio::try_join!(r.read_exact(&mut s_read), async {
            w.write_all(&down).await?;
            w.flush().await
        })
    };
    let client = async {
        let (mut r, mut w) = tokio::io::split(&mut *c);
        tokio::try_join!(r.read_exact(&mut c_read), async {
            w.write_all(&up).await?;
            w.flush().await
        })
    };
    let (a, b) = tokio::join!(server, client);
    a.expect("server side");
    b.expect("client side");
    assert!(
        s_read == up,
        "the server read what the client wrote ({len} bytes)"
    );
    assert!(
        c_read == down,
        "the client read what the server wrote ({len} bytes)"
    );
}

#[tokio::test]
async fn data_flows_both_ways_at_every_size_on_tls_1_3_and_1_2() {
    for versions in [&[&version::TLS13][..], &[&version::TLS12][..]] {
        let (sc, cc) = configs(versions, None);
        let (mut s, mut c) = pair(sc, cc).await;
        for len in [1, 100, 16 * 1024 - 1, 16 * 1024 + 1, 70_000, 300_000] {
            exchange(&mut s, &mut c, len).await;
        }
        assert!(holds_no_buffer(&s), "buffers freed after the exchange");
    }
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffer_and_a_split_record_waits_for_its_end() {
    let (sc, cc) = configs(&[&version::TLS13], None);
    let (mut s, c) = pair(sc, cc).await;
    // The client's first data, then the tickets the server sent after
    // the handshake: nothing is left held once they are through.
    assert!(holds_no_buffer(&s), "nothing held right after the handshake");
    let (mut tcp, mut conn) = c.into_inner();
    conn.writer().write_all(b"<presence/>").expect("plaintext");
    let mut record = Vec::new();
    conn.write_tls(&mut record).expect("record");
    tcp.write_all(&record[..3]).await.expect("first bytes");
    let mut out = [0u8; 64];
    // Poll until the three bytes are in: a readiness loop, not a sleep.
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.incoming.len() < 3 {
            let mut buf = ReadBuf::new(&mut out);
            let poll = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut s).poll_read(cx, &mut buf))).await;
            assert!(poll.is_pending(), "no plaintext from three bytes of a record");
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the first bytes arrive");
    assert_eq!(s.incoming.len(), 3, "the start of the record is kept");
    tcp.write_all(&record[3..]).await.expect("the rest");
    let n = s.read(&mut out).await.expect("read");
    assert_eq!(&out[..n], b"<presence/>");
    assert!(holds_no_buffer(&s), "nothing held once the record is read");
}

#[tokio::test]
async fn the_exporter_matches_the_clients_for_every_tls_1_3_suite() {
    for suite in [
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ] {
        let (sc, cc) = configs(&[&version::TLS13], Some(suite));
        // Two handshakes at once on this one thread: each connection must
        // catch its own secret, never the other's.
        let ((mut s1, c1), (mut s2, c2)) = tokio::join!(pair(sc.clone(), cc.clone()), pair(sc, cc));
        for (s, c) in [(&mut s1, &c1), (&mut s2, &c2)] {
            let expected = c
                .get_ref()
                .1
                .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
                .expect("client exporter");
            assert_eq!(s.take_exporter(), Some(expected), "{:?}", suite.suite());
            assert_eq!(s.take_exporter(), None, "the secret is gone after one use");
        }
    }
}

#[tokio::test]
async fn tls_1_2_offers_no_exporter_and_unarmed_connections_catch_nothing() {
    let (sc, cc) = configs(&[&version::TLS12], None);
    let (mut s, _c) = pair(sc, cc).await;
    assert_eq!(s.take_exporter(), None);
    // The log ignores secrets while no connection has armed it.
    ExporterSecretLog.log("EXPORTER_SECRET", &[0; 32], &[1; 32]);
    let capture = exporter::Capture::arm();
    assert_eq!(capture.take().map(|s| s.to_vec()), None);
    ExporterSecretLog.log("CLIENT_TRAFFIC_SECRET_0", &[0; 32], &[2; 32]);
    assert_eq!(
        capture.take().map(|s| s.to_vec()),
        None,
        "only the exporter secret is kept"
    );
    ExporterSecretLog.log("EXPORTER_SECRET", &[0; 32], &[3; 32]);
    assert_eq!(
        capture.take().map(|s| s.to_vec()),
        Some(vec![3; 32]),
        "caught while armed"
    );
    drop(capture);
    assert!(!ExporterSecretLog.will_log("EXPORTER_SECRET"), "disarmed again");
}

#[tokio::test]
async fn key_updates_from_the_client_are_answered() {
    let (sc, cc) = configs(&[&version::TLS13], None);
    let (mut s, mut c) = pair(sc, cc).await;
    for round in 0..3 {
        c.get_mut().1.refresh_traffic_keys().expect("key update");
        exchange(&mut s, &mut c, 1000 + round).await;
    }
}

#[tokio::test]
async fn close_notify_ends_the_stream_cleanly_both_ways() {
    let (sc, cc) = configs(&[&version::TLS13], None);
    let (mut s, mut c) = pair(sc, cc).await;
    c.write_all(b"bye").await.expect("write");
    c.shutdown().await.expect("client close_notify");
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .await
        .expect("the server reads to a clean end");
    assert_eq!(got, b"bye");
    s.write_all(b"ok").await.expect("a reply after the peer closed");
    s.shutdown().await.expect("server close_notify");
    let mut back = Vec::new();
    // tokio-rustls reports an end without close_notify as an error.
    c.read_to_end(&mut back)
        .await
        .expect("the client reads to a clean end");
    assert_eq!(back, b"ok");
    assert!(
        s.write_all(b"late").await.is_err(),
        "no writes after close_notify"
    );
}

#[tokio::test]
async fn a_tampered_record_ends_the_connection_with_an_alert() {
    let (sc, cc) = configs(&[&version::TLS13], None);
    let (mut s, c) = pair(sc, cc).await;
    let (tcp, mut conn) = c.into_inner();
    let mut tcp = tcp.into_std().expect("std socket");
    tcp.set_nonblocking(false).expect("blocking");
    conn.writer()
        .write_all(b"<message>pay 100</message>")
        .expect("plaintext");
    let mut record = Vec::new();
    conn.write_tls(&mut record).expect("record");
    let last = record.len() - 1;
    record[last] ^= 1;
    tcp.write_all(&record).expect("send");
    let mut out = [0u8; 64];
    let err = s.read(&mut out).await.expect_err("the record is refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    drop(s);
    // The client hears why.
    let alert = tokio::task::spawn_blocking(move || {
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).expect("read");
        conn.read_tls(&mut raw.as_slice()).expect("read_tls");
        conn.process_new_packets().expect_err("an alert")
    })
    .await
    .expect("client");
    assert_eq!(alert, TlsError::AlertReceived(AlertDescription::BadRecordMac));
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_fails_the_handshake() {
    let (sc, _) = configs(&[&version::TLS13], None);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"<?xml version='1.0'?><stream:stream to='example.com'>")
            .await
            .expect("send");
        let mut back = Vec::new();
        let _ = tcp.read_to_end(&mut back).await;
        back
    };
    let server = async {
        let (tcp, _) = listener.accept().await.expect("accept");
        ServerTls::accept(sc, tcp).await.map(|_| ())
    };
    let (back, result) = tokio::join!(client, server);
    assert_eq!(result.expect_err("not TLS").kind(), io::ErrorKind::InvalidData);
    assert_eq!(back.first(), Some(&21), "an alert record answers: {back:?}");
}

#[tokio::test]
async fn a_record_longer_than_the_protocol_allows_is_refused_without_buffering_it() {
    let (sc, cc) = configs(&[&version::TLS13], None);
    let (mut s, c) = pair(sc, cc).await;
    let (mut tcp, _conn) = c.into_inner();
    // An application-data header announcing 65,535 bytes (the limit is
    // 16 KiB plus 256), then a little of it: refused at the header.
    let mut bytes = vec![23, 3, 3, 0xff, 0xff];
    bytes.extend_from_slice(&[0u8; 1024]);
    tcp.write_all(&bytes).await.expect("send");
    let mut out = [0u8; 64];
    let err = s.read(&mut out).await.expect_err("the record is refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(
        s.incoming.len() <= bytes.len(),
        "no more than what was sent is held"
    );
}
