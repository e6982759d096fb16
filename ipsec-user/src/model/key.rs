//! `Key`: secret key bytes that never show up in logs, lists or error messages.
//!
//! Debug prints only the length. Serde writes a lowercase hex string, because the SPD is the
//! persisted state and the daemon must restore the keys. The bytes are wiped on drop by
//! `zeroize` (the whole allocation, with writes the compiler may not remove); the hex text a key
//! is read from is wiped too. Copies made by the caller (the raw `--encryption-key` strings of
//! `SaAddArgs`, serialised state) are not tracked.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Key material of an SA. Never grown after construction, so no stale copy is left behind by a
/// reallocation.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Key(Vec<u8>);

impl Key {
    /// Wraps key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The key bytes, for the crypto code.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key is empty (as for NULL encryption).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(deserializer)?);
        hex::decode(text.as_bytes())
            .map(Key)
            .map_err(|_| serde::de::Error::custom("a key must be a string of hex digit pairs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let key = Key::new(b"secret".to_vec());
        assert_eq!(format!("{key:?}"), "<redacted 6 bytes>");
    }

    #[test]
    fn serde_is_hex() {
        let key = Key::new(vec![0x00, 0xab, 0xff]);
        let json = serde_json::to_string(&key).expect("serialising a key");
        assert_eq!(json, "\"00abff\"");
        let back: Key = serde_json::from_str(&json).expect("deserialising a key");
        assert_eq!(back, key);
        assert_eq!(
            serde_json::from_str::<Key>("\"0\"")
                .expect_err("odd hex must fail")
                .to_string(),
            "a key must be a string of hex digit pairs"
        );
        assert!(
            serde_json::from_str::<Key>("\"zz\"").is_err(),
            "non-hex must fail"
        );
    }
}
