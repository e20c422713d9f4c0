//! The discovery beacon: a UDP broadcast each node sends every
//! [`BEACON_INTERVAL_MS`] on [`BEACON_PORT`], telling its node id, board,
//! ISA, address and control port, authenticated with the cluster key.
//!
//! Wire form: [`MAGIC`] ‖ postcard([`Beacon`]) ‖ 32-byte tag. The tag is
//! HMAC-SHA-256 over magic and body under the beacon key, which is derived
//! from the cluster key (HMAC-SHA-256(PSK, `"tern/1 beacon"`), so the PSK
//! itself keys nothing but the handshake's HKDF and this derivation). A node
//! in explicit insecure mode, or without a key, says so in
//! [`Beacon::security`] and sends an all-zero tag: listeners show such a
//! node as unauthenticated.
//!
//! A beacon proves that a holder of the key sent it, not that it is fresh:
//! one replayed later points at an old address. Clients that connect to a
//! node by id therefore check the node id in the authenticated handshake
//! too (`tern-client`).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::channel::{hmac_sha256, Psk};
use crate::message::PROTOCOL_VERSION;

/// The UDP port beacons are sent to (and listened for) on every node.
pub const BEACON_PORT: u16 = 4473;

/// How often a node announces itself, in milliseconds.
pub const BEACON_INTERVAL_MS: u64 = 2_000;

/// First bytes of every beacon.
pub const MAGIC: [u8; 4] = *b"TRNB";

/// Largest beacon a listener decodes (a real one is about 100 bytes).
pub const MAX_BEACON_LEN: usize = 512;

/// Longest board or ISA name a beacon carries.
const MAX_NAME_LEN: usize = 32;

/// How a node's control service is secured, as its beacon says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BeaconSecurity {
    /// The node has the cluster key; the tag proves it.
    Keyed,
    /// The node runs in explicit insecure mode; the tag is zero.
    Insecure,
    /// The node has no key yet (it refuses every connection); the tag is zero.
    NoKey,
}

/// What a node announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The node id (its MAC's 48 bits).
    pub node_id: u64,
    /// Board name (`pc`, `virt`, `rpi4`).
    pub board: String,
    /// ISA name (`x86_64`, `aarch64`).
    pub isa: String,
    /// The node's IPv4 address.
    pub address: [u8; 4],
    /// Its prefix length.
    pub prefix: u8,
    /// TCP port of its control service.
    pub control_port: u16,
    /// Its security mode.
    pub security: BeaconSecurity,
    /// Milliseconds since the node booted (tells a reboot).
    pub uptime_ms: u64,
}

/// Why received bytes are not a beacon one can trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BeaconError {
    /// Not a beacon: wrong magic, too short or too long.
    #[error("not a Tern beacon")]
    NotBeacon,
    /// The body does not decode.
    #[error("malformed beacon")]
    Malformed,
    /// A name is longer than a beacon may carry.
    #[error("beacon field too long")]
    TooLong,
    /// The tag does not verify under this key.
    #[error("beacon tag does not verify (another cluster key)")]
    BadTag,
}

/// The key beacon tags are made with, derived from the cluster key.
pub fn beacon_key(psk: &Psk) -> [u8; 32] {
    hmac_sha256(&psk.0, &[b"tern/1 beacon"])
}

impl Beacon {
    /// The beacon's bytes; tagged with `psk` when given (a keyed node),
    /// else with a zero tag.
    pub fn encode(&self, psk: Option<&Psk>) -> Vec<u8> {
        let mut out = Vec::from(MAGIC);
        // Serialising owned strings and integers into a Vec cannot fail.
        if let Ok(body) = postcard::to_allocvec(self) {
            out.extend_from_slice(&body);
        }
        let tag = psk.map_or([0; 32], |psk| hmac_sha256(&beacon_key(psk), &[&out]));
        out.extend_from_slice(&tag);
        out
    }

    /// Decodes `bytes` without checking the tag; returns the beacon and
    /// whether its tag verifies under `psk` (`None` for a zero tag or no key).
    pub fn decode(bytes: &[u8], psk: Option<&Psk>) -> Result<(Self, Option<bool>), BeaconError> {
        if bytes.len() < MAGIC.len() + 32 || bytes.len() > MAX_BEACON_LEN {
            return Err(BeaconError::NotBeacon);
        }
        if bytes[..MAGIC.len()] != MAGIC {
            return Err(BeaconError::NotBeacon);
        }
        let (signed, tag) = bytes.split_at(bytes.len() - 32);
        let (beacon, rest) = postcard::take_from_bytes::<Beacon>(&signed[MAGIC.len()..])
            .map_err(|_| BeaconError::Malformed)?;
        if !rest.is_empty() {
            return Err(BeaconError::Malformed);
        }
        if beacon.board.len() > MAX_NAME_LEN || beacon.isa.len() > MAX_NAME_LEN {
            return Err(BeaconError::TooLong);
        }
        let verified = match (beacon.security, psk) {
            (BeaconSecurity::Keyed, Some(psk)) => {
                let expected = hmac_sha256(&beacon_key(psk), &[signed]);
                Some(bool::from(expected.ct_eq(tag)))
            }
            _ => None,
        };
        Ok((beacon, verified))
    }

    /// Decodes `bytes` and insists that its tag verifies under `psk`.
    pub fn decode_verified(bytes: &[u8], psk: &Psk) -> Result<Self, BeaconError> {
        match Self::decode(bytes, Some(psk))? {
            (beacon, Some(true)) => Ok(beacon),
            _ => Err(BeaconError::BadTag),
        }
    }

    /// Whether this beacon's sender speaks this side's protocol version.
    pub fn compatible(&self) -> bool {
        self.version == PROTOCOL_VERSION
    }
}

/// A node id in its text form: the 12 hexadecimal digits of its MAC.
pub fn format_node_id(id: u64) -> String {
    alloc::format!("{id:012x}")
}

/// Parses a node id written as 12 hexadecimal digits (`5254007e0002`), with
/// or without `:` or `-` between the bytes (`52:54:00:7e:00:02`).
pub fn parse_node_id(text: &str) -> Option<u64> {
    let digits: String = text.chars().filter(|c| *c != ':' && *c != '-').collect();
    let separated = digits.len() != text.len();
    if digits.len() != 12 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    // Separators, if any, sit between every byte.
    if separated && text.len() != 17 {
        return None;
    }
    u64::from_str_radix(&digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beacon(security: BeaconSecurity) -> Beacon {
        Beacon {
            version: PROTOCOL_VERSION,
            node_id: 0x5254_007e_0002,
            board: "virt".into(),
            isa: "aarch64".into(),
            address: [10, 0, 2, 100],
            prefix: 24,
            control_port: 4470,
            security,
            uptime_ms: 1234,
        }
    }

    #[test]
    fn a_keyed_beacon_verifies_only_under_its_key() {
        let key = Psk([7; 32]);
        let bytes = beacon(BeaconSecurity::Keyed).encode(Some(&key));
        assert_eq!(&bytes[..4], b"TRNB");
        assert_eq!(
            Beacon::decode_verified(&bytes, &key).unwrap(),
            beacon(BeaconSecurity::Keyed)
        );
        assert_eq!(
            Beacon::decode_verified(&bytes, &Psk([8; 32])),
            Err(BeaconError::BadTag)
        );
        let (_, verified) = Beacon::decode(&bytes, Some(&Psk([8; 32]))).unwrap();
        assert_eq!(verified, Some(false));
        // Any flipped bit of the body or the tag fails.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(Beacon::decode_verified(&bad, &key).is_err(), "byte {i}");
        }
    }

    #[test]
    fn an_insecure_beacon_says_so_and_never_verifies() {
        let key = Psk([7; 32]);
        let bytes = beacon(BeaconSecurity::Insecure).encode(None);
        let (b, verified) = Beacon::decode(&bytes, Some(&key)).unwrap();
        assert_eq!(b.security, BeaconSecurity::Insecure);
        assert_eq!(verified, None);
        assert_eq!(
            Beacon::decode_verified(&bytes, &key),
            Err(BeaconError::BadTag)
        );
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert_eq!(Beacon::decode(b"hello", None), Err(BeaconError::NotBeacon));
        let mut bytes = beacon(BeaconSecurity::NoKey).encode(None);
        bytes[0] = b'X';
        assert_eq!(Beacon::decode(&bytes, None), Err(BeaconError::NotBeacon));
        let mut long = Vec::from(MAGIC);
        long.extend([0xff; 40]);
        assert_eq!(Beacon::decode(&long, None), Err(BeaconError::Malformed));
        let mut named = beacon(BeaconSecurity::NoKey);
        named.board = "b".repeat(33);
        assert_eq!(
            Beacon::decode(&named.encode(None), None),
            Err(BeaconError::TooLong)
        );
        assert_eq!(
            Beacon::decode(&[0; MAX_BEACON_LEN + 1], None),
            Err(BeaconError::NotBeacon)
        );
    }

    #[test]
    fn node_ids_read_and_print_as_twelve_hex_digits() {
        assert_eq!(format_node_id(0x5254_007e_0002), "5254007e0002");
        assert_eq!(parse_node_id("5254007e0002"), Some(0x5254_007e_0002));
        assert_eq!(parse_node_id("52:54:00:7E:00:02"), Some(0x5254_007e_0002));
        assert_eq!(parse_node_id("52-54-00-7e-00-02"), Some(0x5254_007e_0002));
        for bad in [
            "",
            "5254007e000",
            "5254007e00022",
            "52:5400:7e:00:02",
            "10.0.2.2",
            "zz54007e0002",
        ] {
            assert_eq!(parse_node_id(bad), None, "{bad}");
        }
    }
}
