//! The archive's binary encoding: MessagePack with named fields (a field
//! added later with a default still decodes), used for Raft log entries,
//! Raft messages, records and the spool. JSON spends most of its time
//! escaping the stanzas' XML; MessagePack copies the bytes. Values written
//! as JSON by earlier versions still decode: a JSON object starts with `{`
//! and is at least two bytes long, while the only MessagePack value that
//! starts with that byte (0x7b) is the one-byte integer 123.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(v).map_err(|e| CodecError(e.to_string()))
}

/// Decodes a value written by [`encode`] (or as JSON by older versions).
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, CodecError> {
    if b.first() == Some(&b'{') && b.len() > 1 {
        return serde_json::from_slice(b).map_err(|e| CodecError(e.to_string()));
    }
    rmp_serde::from_slice(b).map_err(|e| CodecError(e.to_string()))
}

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("archive encoding: {0}")]
pub struct CodecError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::archive::Record;

    #[test]
    fn records_round_trip_and_json_still_decodes() {
        let r = Record {
            id: "a-1".into(),
            xml: "<message><body>a \"quoted\" & <b>x</b></body></message>".into(),
            body: Some("a".into()),
            ..Record::default()
        };
        let bin = encode(&r).expect("encode");
        assert_ne!(bin.first(), Some(&b'{'));
        assert_eq!(decode::<Record>(&bin).expect("decode"), r);
        let json = serde_json::to_vec(&r).expect("json");
        assert_eq!(decode::<Record>(&json).expect("decode json"), r);
    }

    #[test]
    fn the_integer_123_is_not_mistaken_for_json() {
        // MessagePack writes 123 as the single byte `{`; the chaos suite's
        // clock-skew run found a counter at 123 stopping the archive.
        for n in [0u64, 122, 123, 124, 1 << 40] {
            assert_eq!(decode::<u64>(&encode(&n).expect("encode")).expect("decode"), n);
        }
        assert_eq!(
            decode::<Option<u64>>(&encode(&Some(123u64)).expect("encode")).expect("decode"),
            Some(123)
        );
    }
}
