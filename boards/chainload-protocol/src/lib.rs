//! The serial chainload handshake between `flash --serial` (host) and the
//! rpi4 chainloader kernel (device).
//!
//! ```text
//! device                                   host
//!   READY_MAGIC + max_len (u32 LE)  ---->       (repeated until answered)
//!                                   <----  HEADER_MAGIC + len (u32 LE) + crc32c (u32 LE)
//!   HEADER_ACCEPTED | REJECT_TOO_LARGE --->
//!                                   <----  len bytes of kernel8.img
//!   IMAGE_VERIFIED | REJECT_CHECKSUM ---->  (on VERIFIED the device jumps to it)
//! ```
//!
//! The checksum is CRC-32C (Castagnoli) over the image bytes. The device never
//! jumps to an image whose length or checksum does not match the header.
#![no_std]

/// Sent by the chainloader while it waits for an image.
pub const READY_MAGIC: [u8; 8] = *b"TERNCL1?";
/// Opens the host's header.
pub const HEADER_MAGIC: [u8; 8] = *b"TERNCL1!";
/// Device reply: the header is acceptable, send the image.
pub const HEADER_ACCEPTED: u8 = b'A';
/// Device reply: the image is larger than the device can load.
pub const REJECT_TOO_LARGE: u8 = b'L';
/// Device reply: image received and its checksum matches; jumping to it.
pub const IMAGE_VERIFIED: u8 = b'V';
/// Device reply: image received but its checksum does not match.
pub const REJECT_CHECKSUM: u8 = b'C';

/// Length of the ready message (magic and maximum length).
pub const READY_LEN: usize = READY_MAGIC.len() + 4;
/// Length of the host's header.
pub const HEADER_LEN: usize = HEADER_MAGIC.len() + 8;

/// CRC-32C, the checksum of the handshake.
pub const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Builds the ready message announcing the largest loadable image.
pub fn ready_message(max_len: u32) -> [u8; READY_LEN] {
    let mut msg = [0; READY_LEN];
    msg[..8].copy_from_slice(&READY_MAGIC);
    msg[8..].copy_from_slice(&max_len.to_le_bytes());
    msg
}

/// Parses a ready message into the largest loadable image size.
pub fn parse_ready(msg: &[u8; READY_LEN]) -> Option<u32> {
    (msg[..8] == READY_MAGIC).then(|| u32::from_le_bytes([msg[8], msg[9], msg[10], msg[11]]))
}

/// The header the host sends before an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Image length in bytes.
    pub len: u32,
    /// CRC-32C of the image.
    pub crc32c: u32,
}

impl Header {
    /// The header for `image`; `None` if it is 4 GiB or larger.
    pub fn for_image(image: &[u8]) -> Option<Self> {
        Some(Self {
            len: u32::try_from(image.len()).ok()?,
            crc32c: CRC32C.checksum(image),
        })
    }

    /// Wire form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[..8].copy_from_slice(&HEADER_MAGIC);
        out[8..12].copy_from_slice(&self.len.to_le_bytes());
        out[12..].copy_from_slice(&self.crc32c.to_le_bytes());
        out
    }

    /// Parses the wire form; `None` if the magic is wrong.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Option<Self> {
        if bytes[..8] != HEADER_MAGIC {
            return None;
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        Some(Self {
            len: word(8),
            crc32c: word(12),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checks_magic() {
        let header = Header::for_image(b"kernel bytes").unwrap();
        assert_eq!(Header::decode(&header.encode()), Some(header));
        let mut bad = header.encode();
        bad[0] ^= 1;
        assert_eq!(Header::decode(&bad), None);
    }

    #[test]
    fn ready_round_trips() {
        assert_eq!(parse_ready(&ready_message(32 << 20)), Some(32 << 20));
        assert_eq!(parse_ready(&[0; READY_LEN]), None);
    }

    #[test]
    fn crc_is_castagnoli() {
        // The standard check value of CRC-32C.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
    }
}
