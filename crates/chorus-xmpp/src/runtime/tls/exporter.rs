//! The TLS 1.3 keying-material exporter (RFC 8446 section 7.5) for
//! connections on rustls's unbuffered API, which offers no exporter of its
//! own in rustls 0.23. SCRAM-*-PLUS's `tls-exporter` channel binding
//! (RFC 9266) needs it.
//!
//! rustls hands every secret it derives to the configuration's
//! [`KeyLog`]. [`ExporterSecretLog`] keeps only the exporter master secret,
//! and only while [`Capture`] is armed on the calling thread: the
//! connection arms it around each synchronous call into rustls during its
//! handshake, so a secret can only land with the connection whose call
//! produced it. Every other secret, and every secret of a connection that
//! did not arm the capture (the component and WebSocket listeners share
//! the configuration), is ignored.

use std::cell::RefCell;
use tokio_rustls::rustls::KeyLog;
use tokio_rustls::rustls::Tls13CipherSuite;
use tokio_rustls::rustls::crypto::tls13::{HkdfExpander, OkmBlock};
use zeroize::Zeroizing;

/// rustls's name for the exporter master secret.
const EXPORTER_LABEL: &str = "EXPORTER_SECRET";

thread_local! {
    /// `None` when disarmed; `Some(None)` armed and waiting; `Some(Some(_))`
    /// armed and caught.
    static CAUGHT: RefCell<Option<Option<Zeroizing<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// The [`KeyLog`] to install on the client listeners' TLS configuration.
#[derive(Debug, Default)]
pub struct ExporterSecretLog;

impl KeyLog for ExporterSecretLog {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label != EXPORTER_LABEL {
            return;
        }
        CAUGHT.with(|c| {
            if let Some(slot) = c.borrow_mut().as_mut() {
                *slot = Some(Zeroizing::new(secret.to_vec()));
            }
        });
    }

    fn will_log(&self, label: &str) -> bool {
        label == EXPORTER_LABEL && CAUGHT.with(|c| c.borrow().is_some())
    }
}

/// Arms the capture on this thread until dropped. Never held across an
/// await: another connection's handshake could run on the thread then.
pub(crate) struct Capture(());

impl Capture {
    pub(crate) fn arm() -> Capture {
        CAUGHT.with(|c| *c.borrow_mut() = Some(None));
        Capture(())
    }

    /// The exporter master secret logged since [`Capture::arm`], if any.
    pub(crate) fn take(&self) -> Option<Zeroizing<Vec<u8>>> {
        CAUGHT.with(|c| c.borrow_mut().as_mut().and_then(Option::take))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        CAUGHT.with(|c| *c.borrow_mut() = None);
    }
}

/// RFC 8446 section 7.5: `TLS-Exporter(label, context, length)` from the
/// exporter master secret of a connection using `suite`. `None` when the
/// label or the length is out of the protocol's range.
pub(crate) fn export(
    suite: &Tls13CipherSuite,
    exporter_master_secret: &[u8],
    label: &[u8],
    context: Option<&[u8]>,
    out: &mut [u8],
) -> Option<()> {
    let hash = suite.common.hash_provider;
    let empty_hash = hash.hash(&[]);
    let mut derived = Zeroizing::new(vec![0u8; hash.output_len()]);
    // Derive-Secret(Secret, label, "") = HKDF-Expand-Label(Secret, label, Hash(""), Hash.length)
    let master = suite
        .hkdf_provider
        .expander_for_okm(&OkmBlock::new(exporter_master_secret));
    expand_label(&*master, label, empty_hash.as_ref(), &mut derived)?;
    // HKDF-Expand-Label(derived, "exporter", Hash(context), length); no
    // context hashes the same as an empty one.
    let context_hash = hash.hash(context.unwrap_or_default());
    let secret = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(&derived));
    expand_label(&*secret, b"exporter", context_hash.as_ref(), out)
}

/// RFC 8446 section 7.1's HKDF-Expand-Label.
fn expand_label(expander: &dyn HkdfExpander, label: &[u8], context: &[u8], out: &mut [u8]) -> Option<()> {
    const PREFIX: &[u8] = b"tls13 ";
    let length = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(PREFIX.len() + label.len()).ok()?];
    let context_len = [u8::try_from(context.len()).ok()?];
    expander
        .expand_slice(&[&length, &label_len, PREFIX, label, &context_len, context], out)
        .ok()
}
