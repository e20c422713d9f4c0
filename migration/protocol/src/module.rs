//! Task modules on the wire (sans-IO): a module's bytes cut into
//! [`ModulePart`](crate::Message::ModulePart)s that each fit a frame, the
//! receiver's reassembly ([`ModuleUpload`]), and a sender that first asks
//! whether the peer holds the module already ([`ModulePush`]): a migration
//! or a sync sends the module of its task this way before the checkpoint.

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::message::{Hash, Message, ModuleRefusal, NackReason};

/// Bytes of one [`Message::ModulePart`] (four fit a 1 MiB frame).
pub const MODULE_PART: usize = 256 * 1024;

/// Longest module a node of this repository accepts.
pub const MAX_MODULE_BYTES: u64 = 8 << 20;

/// Why a module transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// The peer refused the module (its reason and details).
    #[error("the peer refused the module ({reason}: {detail})")]
    Rejected {
        /// The typed reason.
        reason: ModuleRefusal,
        /// What exactly.
        detail: alloc::string::String,
    },
    /// The peer refused a message of the transfer.
    #[error("the peer refused the module transfer ({0:?})")]
    Refused(NackReason),
    /// The peer stored the module under another identity.
    #[error("the peer stored the module under another identity")]
    Mismatch,
    /// A part does not continue the module (offset, length or total).
    #[error("module part out of order")]
    OutOfOrder,
    /// The module is larger than this side accepts.
    #[error("module of {0} bytes too large")]
    TooLarge(u64),
    /// The peer answered with a message that does not belong here.
    #[error("unexpected message during a module transfer")]
    Unexpected,
    /// Memory for the module could not be reserved.
    #[error("out of memory")]
    OutOfMemory,
}

/// The receiving side: parts in order, until the module is whole.
#[derive(Debug, Default)]
pub struct ModuleUpload {
    buf: Vec<u8>,
    total: u64,
}

impl ModuleUpload {
    /// An upload that has received nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one part (`offset`, `total_len` and `bytes` as the message
    /// has them), refusing a module longer than `max_len`; returns the whole
    /// module after its last part.
    pub fn part(
        &mut self,
        offset: u64,
        total_len: u64,
        bytes: &[u8],
        max_len: u64,
    ) -> Result<Option<Vec<u8>>, ModuleError> {
        if offset == 0 && self.buf.is_empty() {
            if total_len > max_len {
                return Err(ModuleError::TooLarge(total_len));
            }
            self.buf
                .try_reserve_exact(total_len as usize)
                .map_err(|_| ModuleError::OutOfMemory)?;
            self.total = total_len;
        }
        let fits = offset == self.buf.len() as u64
            && total_len == self.total
            && (bytes.len() as u64) <= total_len - offset
            && (!bytes.is_empty() || total_len == 0);
        if !fits {
            return Err(ModuleError::OutOfOrder);
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() as u64 == self.total {
            return Ok(Some(core::mem::take(&mut self.buf)));
        }
        Ok(None)
    }
}

/// Where a [`ModulePush`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushPhase {
    /// Asked whether the peer holds the module.
    Asked,
    /// Sending parts.
    Sending,
    /// Every part sent; waiting for the peer's verdict.
    Sent,
    /// The peer holds the module.
    Done,
}

/// The sending side: ask, send the parts if the peer lacks the module,
/// wait for it to be stored.
pub struct ModulePush {
    id: Hash,
    bytes: Rc<[u8]>,
    sent: usize,
    phase: PushPhase,
}

impl ModulePush {
    /// A push of module `id` whose bytes are `bytes`.
    pub fn new(id: Hash, bytes: Rc<[u8]>) -> Self {
        Self {
            id,
            bytes,
            sent: 0,
            phase: PushPhase::Asked,
        }
    }

    /// The first message: does the peer hold the module?
    pub fn query(&self) -> Message {
        Message::ModuleQuery { module: self.id }
    }

    /// Where the push is.
    pub fn phase(&self) -> PushPhase {
        self.phase
    }

    /// Handles the peer's answer; `Ok(true)` once the peer holds the module.
    pub fn on_message(&mut self, msg: Message) -> Result<bool, ModuleError> {
        match (self.phase, msg) {
            (PushPhase::Asked, Message::ModuleHeld { module, held }) if module == self.id => {
                self.phase = if held {
                    PushPhase::Done
                } else {
                    PushPhase::Sending
                };
            }
            (PushPhase::Sent, Message::ModuleStored { module }) => {
                if module != self.id {
                    return Err(ModuleError::Mismatch);
                }
                self.phase = PushPhase::Done;
            }
            (_, Message::ModuleRejected { reason, detail }) => {
                return Err(ModuleError::Rejected { reason, detail })
            }
            (_, Message::Nack(reason)) => return Err(ModuleError::Refused(reason)),
            _ => return Err(ModuleError::Unexpected),
        }
        Ok(self.phase == PushPhase::Done)
    }

    /// The next part to send while sending; `None` otherwise.
    pub fn poll_send(&mut self) -> Option<Message> {
        if self.phase != PushPhase::Sending {
            return None;
        }
        let end = (self.sent + MODULE_PART).min(self.bytes.len());
        let msg = Message::ModulePart {
            offset: self.sent as u64,
            total_len: self.bytes.len() as u64,
            bytes: self.bytes[self.sent..end].to_vec(),
        };
        self.sent = end;
        if self.sent == self.bytes.len() {
            self.phase = PushPhase::Sent;
        }
        Some(msg)
    }
}

/// `bytes` cut into the parts of an upload.
pub fn parts(bytes: &[u8]) -> impl Iterator<Item = Message> + '_ {
    let total_len = bytes.len() as u64;
    let count = bytes.len().div_ceil(MODULE_PART).max(1);
    (0..count).map(move |i| {
        let start = (i * MODULE_PART).min(bytes.len());
        let end = (start + MODULE_PART).min(bytes.len());
        Message::ModulePart {
            offset: start as u64,
            total_len,
            bytes: bytes[start..end].to_vec(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn part_of(m: Message) -> (u64, u64, Vec<u8>) {
        match m {
            Message::ModulePart {
                offset,
                total_len,
                bytes,
            } => (offset, total_len, bytes),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pushed_module_arrives_whole_and_the_push_ends_with_the_peers_word() {
        let bytes: Rc<[u8]> = (0..600_000u32).map(|i| i as u8).collect::<Vec<_>>().into();
        let mut push = ModulePush::new([3; 32], bytes.clone());
        assert_eq!(push.query(), Message::ModuleQuery { module: [3; 32] });
        assert_eq!(
            push.on_message(Message::ModuleHeld {
                module: [3; 32],
                held: false
            }),
            Ok(false)
        );
        let mut upload = ModuleUpload::new();
        let mut whole = None;
        let mut n = 0;
        while let Some(m) = push.poll_send() {
            n += 1;
            let (offset, total, part) = part_of(m);
            assert!(part.len() <= MODULE_PART);
            whole = upload.part(offset, total, &part, MAX_MODULE_BYTES).unwrap();
        }
        assert_eq!(n, 3);
        assert_eq!(whole.as_deref(), Some(&bytes[..]));
        assert_eq!(push.phase(), PushPhase::Sent);
        assert_eq!(
            push.on_message(Message::ModuleStored { module: [4; 32] }),
            Err(ModuleError::Mismatch)
        );
    }

    #[test]
    fn a_peer_that_holds_the_module_gets_no_part() {
        let mut push = ModulePush::new([1; 32], vec![1u8; 10].into());
        assert_eq!(
            push.on_message(Message::ModuleHeld {
                module: [1; 32],
                held: true
            }),
            Ok(true)
        );
        assert_eq!(push.poll_send(), None);
        let mut other = ModulePush::new([1; 32], vec![1u8; 10].into());
        assert_eq!(
            other.on_message(Message::ModuleRejected {
                reason: ModuleRefusal::StartFunction,
                detail: "x".into()
            }),
            Err(ModuleError::Rejected {
                reason: ModuleRefusal::StartFunction,
                detail: "x".into()
            })
        );
        assert_eq!(
            ModulePush::new([1; 32], vec![1u8; 10].into()).on_message(Message::List),
            Err(ModuleError::Unexpected)
        );
    }

    #[test]
    fn parts_out_of_order_or_too_large_are_refused() {
        let mut up = ModuleUpload::new();
        assert_eq!(
            up.part(0, 100, &[0; 10], 50),
            Err(ModuleError::TooLarge(100))
        );
        let mut up = ModuleUpload::new();
        assert_eq!(up.part(0, 20, &[0; 10], 50), Ok(None));
        assert_eq!(up.part(5, 20, &[0; 10], 50), Err(ModuleError::OutOfOrder));
        assert_eq!(up.part(10, 21, &[0; 10], 50), Err(ModuleError::OutOfOrder));
        assert_eq!(up.part(10, 20, &[0; 11], 50), Err(ModuleError::OutOfOrder));
        assert_eq!(up.part(10, 20, &[], 50), Err(ModuleError::OutOfOrder));
        assert_eq!(up.part(10, 20, &[1; 10], 50).unwrap().unwrap().len(), 20);
        let cut: Vec<_> = parts(&[7u8; 5]).collect();
        assert_eq!(cut.len(), 1);
        assert_eq!(parts(&[]).count(), 1);
    }
}
