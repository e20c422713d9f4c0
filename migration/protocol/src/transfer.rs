//! The transfer phases on each side: offer → need → chunks → commit → ack,
//! with deduplication against the receiver's replica and the ownership rule
//! (see `docs/protocol.md`, "Ownership and failures").

use crate::error::TransferError;
use crate::message::{ChunkInfo, Codec, Hash, Message, NackReason, Offer, Transfer};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use tern_migration::{Limits, Reader};

/// Size of the pieces a span of a checkpoint longer than
/// [`MAX_TRANSFER_CHUNK`] is cut into (and of every piece of an input that
/// is not a checkpoint).
pub const TRANSFER_CHUNK: u32 = 64 * 1024;

/// Longest transfer chunk a receiver accepts: one chunk record of the
/// format's usual 64 KiB chunk with its 16 bytes of framing fits.
pub const MAX_TRANSFER_CHUNK: u32 = 2 * TRANSFER_CHUNK;

/// Bytes of a chunk record besides its data: region, chunk, len, crc.
const RECORD_FRAMING: u64 = 16;

/// Bytes of the trailer: magic and SHA-256.
const TRAILER: u64 = 40;

/// Encodes one chunk's bytes for the wire: the codec used and the payload.
pub type ChunkEncoder<'a> = dyn FnMut(&[u8]) -> (Codec, Vec<u8>) + 'a;

/// CRC-32C, as in the checkpoint format.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Describes `bytes` cut into transfer chunks (see [`cut_lengths`]).
pub fn chunk_list(bytes: &[u8]) -> Vec<ChunkInfo> {
    let mut start = 0;
    cut_lengths(bytes)
        .into_iter()
        .map(|len| {
            let c = &bytes[start..start + len];
            start += len;
            ChunkInfo {
                hash: Sha256::digest(c).into(),
                crc: CRC32C.checksum(c),
                len: len as u32,
            }
        })
        .collect()
}

/// The lengths of the transfer chunks of `bytes`, in order. A full
/// checkpoint is cut where its own parts meet: header and region table,
/// each chunk record, trailer. A typed region that grows by a byte (a
/// postcard varint crossing 128) then changes its own record only, and a
/// replica still holds every other chunk; at fixed offsets everything after
/// it would shift and no chunk would match. Spans longer than
/// [`MAX_TRANSFER_CHUNK`], and any input that is not a full checkpoint, are
/// cut into [`TRANSFER_CHUNK`] pieces.
pub fn cut_lengths(bytes: &[u8]) -> Vec<usize> {
    let spans = record_spans(bytes).unwrap_or_else(|| alloc::vec![bytes.len()]);
    let mut cuts = Vec::new();
    for span in spans {
        if span <= MAX_TRANSFER_CHUNK as usize {
            cuts.push(span);
        } else {
            let mut rest = span;
            while rest > 0 {
                let piece = rest.min(TRANSFER_CHUNK as usize);
                cuts.push(piece);
                rest -= piece;
            }
        }
    }
    cuts.retain(|&len| len > 0);
    cuts
}

/// The parts of a full checkpoint (prefix of header and region table, each
/// chunk record, trailer) from its validated region table; `None` for
/// anything else.
fn record_spans(bytes: &[u8]) -> Option<Vec<usize>> {
    let r = Reader::open(bytes, &Limits::default()).ok()?;
    let mut records = Vec::new();
    for e in r.regions() {
        if u64::from(e.chunk_count) != e.total_chunks() {
            return None;
        }
        for i in 0..e.total_chunks() {
            records.push(usize::try_from(RECORD_FRAMING + e.chunk_len(i)).ok()?);
        }
    }
    let body = records.iter().sum::<usize>() + TRAILER as usize;
    let prefix = bytes.len().checked_sub(body)?;
    let mut spans = Vec::with_capacity(records.len() + 2);
    spans.push(prefix);
    spans.extend(records);
    spans.push(TRAILER as usize);
    Some(spans)
}

/// Where each chunk of `chunks` starts in the checkpoint.
fn offsets(chunks: &[ChunkInfo]) -> Vec<usize> {
    chunks
        .iter()
        .scan(0usize, |at, c| {
            let start = *at;
            *at += c.len as usize;
            Some(start)
        })
        .collect()
}

/// Validates a whole checkpoint with the reference reader; returns its
/// header and identity (the trailer SHA-256).
fn validate(bytes: &[u8], limits: &Limits) -> Option<(tern_migration::Header, Hash)> {
    let mut r = Reader::open(bytes, limits).ok()?;
    let header = r.header().clone();
    let mut buf = Vec::new();
    while r.next_chunk(&mut buf).ok()?.is_some() {}
    let hash = r.finish().ok()?;
    Some((header, hash))
}

/// The sender's phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPhase {
    /// Offer sent, waiting for the need.
    Offered,
    /// Sending the needed chunks, then the commit.
    Sending,
    /// Commit sent, waiting for the ack: the outcome is in doubt until then.
    Committed,
    /// Acked: for a migration the receiver owns the task now.
    Acked,
    /// Refused or broken: the sender still owns the task.
    Failed,
}

/// The sending side of one transfer of a checkpoint.
pub struct Outgoing {
    offer: Offer,
    bytes: Vec<u8>,
    /// Start of each offered chunk in `bytes`.
    starts: Vec<usize>,
    queue: Vec<u32>,
    next: usize,
    phase: SendPhase,
}

impl Outgoing {
    /// Prepares the transfer of `checkpoint` (a whole checkpoint in format v1,
    /// written at the epoch the receiver is to take). Rejects an invalid one.
    pub fn new(
        transfer: Transfer,
        task_id: u64,
        checkpoint: Vec<u8>,
    ) -> Result<Self, TransferError> {
        let limits = Limits::default();
        let (h, hash) = validate(&checkpoint, &limits).ok_or(TransferError::InvalidCheckpoint)?;
        let chunks = chunk_list(&checkpoint);
        if u32::try_from(chunks.len()).is_err() {
            return Err(TransferError::TooLarge);
        }
        let offer = Offer {
            transfer,
            task_id,
            kind: h.task_kind,
            kind_version: h.task_version,
            progress: h.progress,
            progress_total: h.progress_total,
            epoch: h.epoch,
            checkpoint_hash: hash,
            total_len: checkpoint.len() as u64,
            chunks,
        };
        Ok(Self {
            starts: offsets(&offer.chunks),
            offer,
            bytes: checkpoint,
            queue: Vec::new(),
            next: 0,
            phase: SendPhase::Offered,
        })
    }

    /// The offer to send first (again after a reconnection in doubt).
    pub fn offer(&self) -> Message {
        Message::Offer(self.offer.clone())
    }

    /// What the offer announces (task, epoch, size, chunks).
    pub fn offered(&self) -> &Offer {
        &self.offer
    }

    /// The checkpoint's bytes, given back (after an ack the sender keeps them
    /// as its replica of the task).
    pub fn into_checkpoint(self) -> Vec<u8> {
        self.bytes
    }

    /// The current phase.
    pub fn phase(&self) -> SendPhase {
        self.phase
    }

    /// Whether this node still owns the task: always, except after the ack of a migration.
    pub fn owns_task(&self) -> bool {
        !(self.phase == SendPhase::Acked && self.offer.transfer == Transfer::Migrate)
    }

    /// True when the commit went out without an ack: the task must stay paused
    /// and the offer be repeated until the receiver answers (see the ownership rule).
    pub fn in_doubt(&self) -> bool {
        self.phase == SendPhase::Committed
    }

    /// Restarts at the offer after a lost connection (keeps the ownership state).
    pub fn restart(&mut self) {
        if matches!(
            self.phase,
            SendPhase::Sending | SendPhase::Committed | SendPhase::Failed
        ) {
            self.phase = SendPhase::Offered;
            self.queue.clear();
            self.next = 0;
        }
    }

    /// Handles a message from the receiver.
    pub fn on_message(&mut self, msg: Message) -> Result<(), TransferError> {
        let r = self.on_message_inner(msg);
        if r.is_err() {
            self.phase = SendPhase::Failed;
        }
        r
    }

    fn on_message_inner(&mut self, msg: Message) -> Result<(), TransferError> {
        match (self.phase, msg) {
            (SendPhase::Acked, _) => Err(TransferError::Finished),
            (_, Message::Nack(r)) => Err(TransferError::Refused(r)),
            (SendPhase::Offered, Message::Need { chunks }) => {
                let mut prev = None;
                for &i in &chunks {
                    if i as usize >= self.offer.chunks.len() || prev.is_some_and(|p| p >= i) {
                        return Err(TransferError::BadNeed { index: i });
                    }
                    prev = Some(i);
                }
                self.queue = chunks;
                self.next = 0;
                self.phase = SendPhase::Sending;
                Ok(())
            }
            // An ack right after the offer: the receiver already holds this checkpoint.
            (SendPhase::Offered | SendPhase::Committed, Message::Ack { epoch })
                if epoch == self.offer.epoch =>
            {
                self.phase = SendPhase::Acked;
                Ok(())
            }
            (p, _) => Err(TransferError::Unexpected {
                phase: match p {
                    SendPhase::Offered => "offered",
                    SendPhase::Sending => "sending",
                    SendPhase::Committed => "committed",
                    SendPhase::Acked => "acked",
                    SendPhase::Failed => "failed",
                },
            }),
        }
    }

    /// The next message to send while [`SendPhase::Sending`]: each needed
    /// chunk, then the commit; `None` otherwise. One chunk at a time, so the
    /// caller paces it by its socket's free space.
    pub fn poll_send(&mut self) -> Option<Message> {
        self.poll_send_with(&mut |bytes| (Codec::None, bytes.to_vec()))
    }

    /// Like [`Outgoing::poll_send`], with each chunk encoded by `encode`
    /// (which returns the codec it used and the payload).
    pub fn poll_send_with(&mut self, encode: &mut ChunkEncoder<'_>) -> Option<Message> {
        if self.phase != SendPhase::Sending {
            return None;
        }
        let Some(&index) = self.queue.get(self.next) else {
            self.phase = SendPhase::Committed;
            return Some(Message::Commit {
                checkpoint_hash: self.offer.checkpoint_hash,
                epoch: self.offer.epoch,
            });
        };
        self.next += 1;
        let start = self.starts[index as usize];
        let end = start + self.offer.chunks[index as usize].len as usize;
        let (codec, payload) = encode(&self.bytes[start..end]);
        Some(Message::Chunk {
            index,
            codec,
            payload,
        })
    }
}

/// A checkpoint the receiver already holds (the previous replica of the task),
/// indexed by chunk hash so an offer's chunks can be found in it.
pub struct Replica {
    bytes: Vec<u8>,
    by_hash: BTreeMap<Hash, usize>,
}

impl Replica {
    /// Indexes `bytes` (any earlier checkpoint; it is only a source of chunks,
    /// every reused chunk is checked against the offer's hash).
    pub fn new(bytes: Vec<u8>) -> Self {
        let chunks = chunk_list(&bytes);
        let mut by_hash = BTreeMap::new();
        for (c, start) in chunks.iter().zip(offsets(&chunks)) {
            by_hash.entry(c.hash).or_insert(start);
        }
        Self { bytes, by_hash }
    }

    /// The checkpoint's bytes (a standby resumes the task from them).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn find(&self, c: &ChunkInfo) -> Option<&[u8]> {
        let start = *self.by_hash.get(&c.hash)?;
        self.bytes.get(start..start + c.len as usize)
    }
}

/// What the receiver already knows about the offered task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Highest epoch of the task this node has seen.
    pub epoch: u64,
    /// Identity of the checkpoint it accepted at that epoch, if any.
    pub checkpoint_hash: Option<Hash>,
}

/// The receiver's acceptance rules.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Largest checkpoint accepted, in bytes.
    pub max_len: u64,
    /// Task kinds this node runs (name, version); a migration of another kind is refused.
    pub kinds: Vec<(String, u32)>,
    /// What this node knows of the task (looked up by the caller from the offer's task id).
    pub known: Option<Known>,
}

/// The receiver's phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivePhase {
    /// Waiting for the offer.
    AwaitOffer,
    /// Need sent, receiving chunks until the commit.
    Receiving,
    /// Ack sent: the checkpoint is accepted.
    Accepted,
    /// Refused: nothing accepted.
    Failed,
}

/// The replica a receiver deduplicates against: borrowed for one transfer,
/// or shared with the node's replica store (a receiver kept across the
/// polls of a run loop cannot borrow from a store that changes meanwhile).
enum ReplicaRef<'r> {
    Borrowed(&'r Replica),
    Shared(Rc<Replica>),
}

impl ReplicaRef<'_> {
    fn get(&self) -> &Replica {
        match self {
            Self::Borrowed(r) => r,
            Self::Shared(r) => r,
        }
    }
}

/// The receiving side of one transfer.
pub struct Incoming<'r> {
    policy: Policy,
    replica: Option<ReplicaRef<'r>>,
    offer: Option<Offer>,
    /// Start of each offered chunk in `buf`.
    starts: Vec<usize>,
    buf: Vec<u8>,
    missing: BTreeSet<u32>,
    phase: ReceivePhase,
}

impl Incoming<'static> {
    /// A receiver applying `policy`, deduplicating against a replica shared
    /// with the caller's store (see [`Incoming::new`]).
    pub fn with_shared_replica(policy: Policy, replica: Option<Rc<Replica>>) -> Self {
        let mut incoming = Incoming::new(policy, None);
        incoming.replica = replica.map(ReplicaRef::Shared);
        incoming
    }
}

impl<'r> Incoming<'r> {
    /// A receiver applying `policy`, deduplicating against `replica`.
    pub fn new(policy: Policy, replica: Option<&'r Replica>) -> Self {
        Self {
            policy,
            replica: replica.map(ReplicaRef::Borrowed),
            offer: None,
            starts: Vec::new(),
            buf: Vec::new(),
            missing: BTreeSet::new(),
            phase: ReceivePhase::AwaitOffer,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> ReceivePhase {
        self.phase
    }

    /// The offer being received.
    pub fn offer(&self) -> Option<&Offer> {
        self.offer.as_ref()
    }

    /// Number of chunks still expected.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// Handles a message from the sender; returns the reply to send, if any.
    /// A refusal is `Err(TransferError::Rejected(reason))`: send
    /// `Message::Nack(reason)` (see [`TransferError::nack`]); nothing is accepted.
    pub fn on_message(&mut self, msg: Message) -> Result<Option<Message>, TransferError> {
        let r = self.on_message_inner(msg);
        if r.is_err() {
            self.phase = ReceivePhase::Failed;
            self.buf = Vec::new();
        }
        r
    }

    /// The accepted checkpoint's bytes, once acked (taken).
    pub fn take_checkpoint(&mut self) -> Option<Vec<u8>> {
        (self.phase == ReceivePhase::Accepted).then(|| core::mem::take(&mut self.buf))
    }

    fn on_message_inner(&mut self, msg: Message) -> Result<Option<Message>, TransferError> {
        let reject = |r| Err(TransferError::Rejected(r));
        match (self.phase, msg) {
            (ReceivePhase::Accepted | ReceivePhase::Failed, _) => Err(TransferError::Finished),
            (_, Message::Nack(r)) => Err(TransferError::Refused(r)),
            (ReceivePhase::AwaitOffer, Message::Offer(o)) => self.on_offer(o),
            (
                ReceivePhase::Receiving,
                Message::Chunk {
                    index,
                    codec,
                    payload,
                },
            ) => {
                if !self.missing.remove(&index) {
                    return reject(NackReason::BadChunk { index });
                }
                let Some(offer) = &self.offer else {
                    return reject(NackReason::UnexpectedMessage);
                };
                let info = offer.chunks[index as usize];
                // Decoded output is bounded by the announced chunk length.
                let Some(payload) = decode(codec, payload, info.len as usize) else {
                    return reject(NackReason::BadChunk { index });
                };
                if !chunk_matches(&info, &payload) {
                    return reject(NackReason::BadChunk { index });
                }
                let start = self.starts[index as usize];
                self.buf[start..start + payload.len()].copy_from_slice(&payload);
                Ok(None)
            }
            (
                ReceivePhase::Receiving,
                Message::Commit {
                    checkpoint_hash,
                    epoch,
                },
            ) => {
                let Some(offer) = &self.offer else {
                    return reject(NackReason::UnexpectedMessage);
                };
                if !self.missing.is_empty() {
                    return reject(NackReason::MissingChunks);
                }
                if checkpoint_hash != offer.checkpoint_hash || epoch != offer.epoch {
                    return reject(NackReason::HashMismatch);
                }
                let limits = Limits {
                    max_total_bytes: self.policy.max_len,
                };
                let Some((h, hash)) = validate(&self.buf, &limits) else {
                    return reject(NackReason::InvalidCheckpoint);
                };
                if hash != offer.checkpoint_hash
                    || h.epoch != offer.epoch
                    || h.task_kind != offer.kind
                    || h.task_version != offer.kind_version
                    || h.progress != offer.progress
                {
                    return reject(NackReason::HashMismatch);
                }
                self.phase = ReceivePhase::Accepted;
                Ok(Some(Message::Ack { epoch }))
            }
            _ => reject(NackReason::UnexpectedMessage),
        }
    }

    fn on_offer(&mut self, o: Offer) -> Result<Option<Message>, TransferError> {
        let reject = |r| Err(TransferError::Rejected(r));
        if o.total_len > self.policy.max_len {
            return reject(NackReason::TooLarge);
        }
        // A standby may have to run the task: it must know the kind too.
        if matches!(o.transfer, Transfer::Migrate | Transfer::Standby)
            && !self
                .policy
                .kinds
                .iter()
                .any(|(k, v)| *k == o.kind && *v == o.kind_version)
        {
            return reject(NackReason::UnsupportedKind);
        }
        // The chunks must cover total_len exactly, none empty or too long.
        let well_formed = o
            .chunks
            .iter()
            .all(|c| (1..=MAX_TRANSFER_CHUNK).contains(&c.len))
            && o.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>() == o.total_len
            && u32::try_from(o.chunks.len()).is_ok();
        if !well_formed {
            return reject(NackReason::UnexpectedMessage);
        }
        if o.transfer == Transfer::Migrate {
            if let Some(k) = &self.policy.known {
                if o.epoch == k.epoch && k.checkpoint_hash == Some(o.checkpoint_hash) {
                    // Already accepted (a repeated offer after a lost ack): ack again.
                    self.phase = ReceivePhase::Accepted;
                    let epoch = o.epoch;
                    self.offer = Some(o);
                    return Ok(Some(Message::Ack { epoch }));
                }
                if o.epoch <= k.epoch {
                    return reject(NackReason::StaleEpoch { known: k.epoch });
                }
            }
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(o.total_len as usize)
            .map_err(|_| TransferError::OutOfMemory)?;
        buf.resize(o.total_len as usize, 0);
        let starts = offsets(&o.chunks);
        let mut need = Vec::new();
        for (i, (c, &start)) in o.chunks.iter().zip(&starts).enumerate() {
            match self
                .replica
                .as_ref()
                .and_then(|r| r.get().find(c))
                .filter(|b| chunk_matches(c, b))
            {
                Some(b) => buf[start..start + b.len()].copy_from_slice(b),
                None => {
                    need.push(i as u32);
                    self.missing.insert(i as u32);
                }
            }
        }
        self.buf = buf;
        self.starts = starts;
        self.offer = Some(o);
        self.phase = ReceivePhase::Receiving;
        Ok(Some(Message::Need { chunks: need }))
    }
}

/// The bytes of a chunk payload encoded with `codec` that must expand to
/// exactly `len` bytes; `None` if it does not.
fn decode(codec: Codec, payload: Vec<u8>, len: usize) -> Option<Vec<u8>> {
    match codec.decoder() {
        None => Some(payload),
        Some(decoder) => decoder.decompress(&payload, len).ok(),
    }
}

/// Length, CRC-32C and SHA-256 of `bytes` against the offer's entry.
fn chunk_matches(c: &ChunkInfo, bytes: &[u8]) -> bool {
    bytes.len() == c.len as usize
        && CRC32C.checksum(bytes) == c.crc
        && <[u8; 32]>::from(Sha256::digest(bytes)) == c.hash
}

impl TransferError {
    /// The nack to send back for a refusal of the peer's message.
    pub fn nack(&self) -> Option<Message> {
        match self {
            Self::Rejected(r) => Some(Message::Nack(*r)),
            _ => None,
        }
    }
}
