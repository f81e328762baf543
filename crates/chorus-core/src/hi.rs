//! SCRAM's `Hi()` (PBKDF2 with HMAC, one output block) for SHA-1 and
//! SHA-256, iterated on the raw compression functions.
//!
//! The generic `pbkdf2` crate goes through the `digest` traits every
//! iteration: buffer bookkeeping, padding and a copy of each state. Here
//! the HMAC key's inner and outer states are computed once; each
//! iteration is then exactly two compressions of one prepared block (the
//! previous `U`, its padding and the fixed length), using the CPU's SHA
//! instructions where the `sha1`/`sha2` crates detect them. The result is
//! the same bytes (checked against the `pbkdf2` crate and RFC 6070's
//! vectors); the time is what every login with PLAIN, every password
//! change and every provisioned account pays.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use sha2::digest::generic_array::GenericArray;

const BLOCK: usize = 64;

/// The states after compressing the HMAC key XOR ipad and XOR opad.
fn pad_states<S: Copy>(key: &[u8], iv: S, compress: impl Fn(&mut S, &[u8; BLOCK])) -> (S, S) {
    let mut k = [0u8; BLOCK];
    k[..key.len()].copy_from_slice(key);
    let (mut ipad, mut opad) = ([0x36u8; BLOCK], [0x5cu8; BLOCK]);
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let (mut inner, mut outer) = (iv, iv);
    compress(&mut inner, &ipad);
    compress(&mut outer, &opad);
    (inner, outer)
}

/// A block holding a `len`-byte digest after one 64-byte key block, with
/// SHA padding (the message is always `64 + len` bytes long).
fn padded_block(len: usize) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[len] = 0x80;
    let bits = ((BLOCK + len) as u64) * 8;
    b[BLOCK - 8..].copy_from_slice(&bits.to_be_bytes());
    b
}

fn compress256(state: &mut [u32; 8], block: &[u8; BLOCK]) {
    sha2::compress256(state, &[*GenericArray::from_slice(block)]);
}

fn compress1(state: &mut [u32; 5], block: &[u8; BLOCK]) {
    sha1::compress(state, &[*GenericArray::from_slice(block)]);
}

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const SHA1_IV: [u32; 5] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];

/// Iterates `U(i+1) = HMAC(U(i))` from `u1`, XOR-ing every `U` into the
/// result: two compressions per iteration on the prepared states.
fn iterate<const W: usize, const N: usize>(
    key_states: ([u32; W], [u32; W]),
    u1: [u8; N],
    iterations: u32,
    compress: impl Fn(&mut [u32; W], &[u8; BLOCK]),
) -> [u8; N] {
    let (inner, outer) = key_states;
    let mut acc = u1;
    let mut block = padded_block(N);
    block[..N].copy_from_slice(&u1);
    for _ in 1..iterations {
        let mut s = inner;
        compress(&mut s, &block);
        for (i, w) in s.iter().enumerate() {
            block[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        let mut s = outer;
        compress(&mut s, &block);
        for (i, w) in s.iter().enumerate() {
            let bytes = w.to_be_bytes();
            block[i * 4..i * 4 + 4].copy_from_slice(&bytes);
            for (a, b) in acc[i * 4..i * 4 + 4].iter_mut().zip(bytes) {
                *a ^= b;
            }
        }
    }
    acc
}

/// `Hi()` with HMAC-SHA-256.
pub fn hi_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let hashed;
    let key = if password.len() > BLOCK {
        hashed = <Sha256 as sha2::Digest>::digest(password);
        hashed.as_slice()
    } else {
        password
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(password).expect("HMAC takes any key");
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let u1: [u8; 32] = mac.finalize().into_bytes().into();
    iterate(
        pad_states(key, SHA256_IV, compress256),
        u1,
        iterations,
        compress256,
    )
}

/// `Hi()` with HMAC-SHA-1.
pub fn hi_sha1(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 20] {
    let hashed;
    let key = if password.len() > BLOCK {
        hashed = <Sha1 as sha1::Digest>::digest(password);
        hashed.as_slice()
    } else {
        password
    };
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(password).expect("HMAC takes any key");
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let u1: [u8; 20] = mac.finalize().into_bytes().into();
    iterate(pad_states(key, SHA1_IV, compress1), u1, iterations, compress1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn rfc_6070_vectors() {
        assert_eq!(
            hex(&hi_sha1(b"password", b"salt", 1)),
            "0c60c80f961f0e71f3a9b524af6012062fe037a6"
        );
        assert_eq!(
            hex(&hi_sha1(b"password", b"salt", 2)),
            "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"
        );
        assert_eq!(
            hex(&hi_sha1(b"password", b"salt", 4096)),
            "4b007901b765489abead49d926f721d065a429c1"
        );
        // RFC 7914 section 11 (PBKDF2-HMAC-SHA256, first 32 bytes).
        assert_eq!(
            hex(&hi_sha256(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    proptest! {
        #[test]
        fn agrees_with_the_pbkdf2_crate(
            password in proptest::collection::vec(any::<u8>(), 0..150),
            salt in proptest::collection::vec(any::<u8>(), 0..40),
            iterations in 1u32..40,
        ) {
            let mut want256 = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(&password, &salt, iterations, &mut want256);
            prop_assert_eq!(hi_sha256(&password, &salt, iterations), want256);
            let mut want1 = [0u8; 20];
            pbkdf2::pbkdf2_hmac::<Sha1>(&password, &salt, iterations, &mut want1);
            prop_assert_eq!(hi_sha1(&password, &salt, iterations), want1);
        }
    }
}
