//! The transfer phases on each side: offer → need → chunks → commit → ack,
//! with deduplication against the receiver's replica and the ownership rule
//! (see `docs/protocol.md`, "Ownership and failures").
//!
//! A transfer moves a format-v2 checkpoint as its layout (header and region
//! table) and its chunks, each named by its BLAKE3 hash. The receiver keeps
//! a checkpoint as a [`Replica`]: the chunks, checked one by one as they
//! arrived, and the manifest whose root it checked at the commit. An offer
//! may name a base, the replica the receiver took in the previous round of
//! the same sender: it then lists only the chunks that changed since, and a
//! commit costs the receiver the root, not a pass over the state.

use crate::error::TransferError;
use crate::message::{ChunkInfo, Codec, Hash, Message, NackReason, Offer, Transfer};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use tern_migration::{
    chunk_hash, Capture, Layout, Limits, Manifest, ReadError, Restored, Sink, WriteError,
};

/// Longest transfer chunk a receiver accepts: a v2 checkpoint's chunks are
/// at most 64 KiB; twice that leaves room for writers with larger chunks.
pub const MAX_TRANSFER_CHUNK: u32 = 128 * 1024;

/// Encodes one chunk's bytes for the wire: the codec used and the payload.
pub type ChunkEncoder<'a> = dyn FnMut(&[u8]) -> (Codec, Vec<u8>) + 'a;

/// A whole checkpoint held as its manifest and its chunks, every chunk
/// checked against its hash: a receiver's replica of a task, or a sender's
/// copy of what its receiver holds. Chunks are shared between the replicas
/// of successive rounds, so a round that changed a few chunks costs a few
/// chunks of memory.
#[derive(Debug, Clone)]
pub struct Replica {
    manifest: Manifest,
    chunks: Vec<Rc<[u8]>>,
    by_hash: BTreeMap<Hash, usize>,
}

impl Replica {
    fn new(manifest: Manifest, chunks: Vec<Rc<[u8]>>) -> Self {
        let mut by_hash = BTreeMap::new();
        for (i, h) in manifest.hashes().iter().enumerate() {
            by_hash.entry(*h).or_insert(i);
        }
        Self {
            manifest,
            chunks,
            by_hash,
        }
    }

    /// The replica `capture` makes of `base`: the chunks the capture copied,
    /// and `base`'s where it copied none (the capture was taken against
    /// `base`'s manifest, so those are equal). Fails when a chunk is in
    /// neither.
    pub fn advance(base: Option<&Replica>, capture: Capture) -> Result<Self, TransferError> {
        let Capture { manifest, data, .. } = capture;
        let mut chunks = Vec::with_capacity(data.len());
        for (i, d) in data.into_iter().enumerate() {
            let chunk = match d {
                Some(bytes) => Rc::from(bytes),
                None => base
                    .filter(|b| b.manifest.hashes().get(i) == manifest.hashes().get(i))
                    .and_then(|b| b.chunks.get(i).cloned())
                    .ok_or(TransferError::InvalidCheckpoint)?,
            };
            chunks.push(chunk);
        }
        Ok(Self::new(manifest, chunks))
    }

    /// Reads a whole v2 checkpoint file, checking every chunk and the root.
    pub fn from_file(bytes: &[u8], limits: &Limits) -> Result<Self, ReadError> {
        let mut r = tern_migration::Reader::open(bytes, limits)?;
        if r.header().format_version != tern_migration::FORMAT_VERSION {
            return Err(ReadError::UnsupportedVersion(r.header().format_version));
        }
        if r.header().delta {
            return Err(ReadError::WrongMode { expected: "full" });
        }
        let mut chunks = Vec::new();
        let mut hashes = Vec::new();
        let mut buf = Vec::new();
        while let Some(c) = r.next_chunk(&mut buf)? {
            let tern_migration::ChunkCheck::Blake3(h) = c.check else {
                return Err(ReadError::UnsupportedVersion(1));
            };
            hashes.push(h);
            chunks.push(Rc::from(core::mem::take(&mut buf)));
        }
        let layout = Layout::parse(r.prefix().to_vec(), limits)?;
        r.finish()?;
        Ok(Self::new(Manifest::new(layout, hashes)?, chunks))
    }

    /// Its manifest (layout, chunk hashes, root).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Its identity.
    pub fn root(&self) -> Hash {
        self.manifest.root()
    }

    /// Bytes of the checkpoint as a file.
    pub fn file_len(&self) -> u64 {
        self.manifest.layout().file_len()
    }

    /// Bytes of chunk data held.
    pub fn state_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }

    /// Chunk `i`'s bytes.
    pub fn chunk(&self, i: usize) -> Option<&[u8]> {
        self.chunks.get(i).map(|c| &c[..])
    }

    /// Rebuilds the state (its chunks were checked when they arrived).
    pub fn restore(&self) -> Result<Restored, ReadError> {
        self.manifest.restore(self.chunks.iter().map(|c| &c[..]))
    }

    /// Writes the checkpoint as a v2 file.
    pub fn write_file<S: Sink>(&self, sink: &mut S) -> Result<(), WriteError> {
        self.manifest
            .write_file(self.chunks.iter().map(|c| &c[..]), sink)
    }

    /// The checkpoint as a v2 file's bytes.
    pub fn to_file(&self) -> Result<Vec<u8>, WriteError> {
        let mut out = Vec::new();
        self.write_file(&mut out)?;
        Ok(out)
    }

    fn find(&self, hash: &Hash) -> Option<Rc<[u8]>> {
        self.by_hash.get(hash).map(|&i| self.chunks[i].clone())
    }
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
    replica: Replica,
    queue: Vec<u32>,
    next: usize,
    phase: SendPhase,
}

/// The offer of `replica`: against `base` (the receiver's replica from the
/// same sender's previous round) only the chunks that differ from it, else
/// every chunk.
fn make_offer(
    transfer: Transfer,
    task_id: u64,
    replica: &Replica,
    base: Option<&Manifest>,
) -> Offer {
    let m = &replica.manifest;
    let h = m.header();
    let base = base.filter(|b| b.layout().same_records(m.layout()));
    let chunks = m
        .layout()
        .slots()
        .iter()
        .zip(m.hashes())
        .enumerate()
        .filter(|(i, (_, hash))| base.is_none_or(|b| b.hashes()[*i] != **hash))
        .map(|(i, (s, hash))| ChunkInfo {
            at: i as u32,
            hash: *hash,
            len: s.len,
        })
        .collect();
    Offer {
        transfer,
        task_id,
        kind: h.task_kind.clone(),
        kind_version: h.task_version,
        progress: h.progress,
        progress_total: h.progress_total,
        epoch: h.epoch,
        checkpoint_hash: m.root(),
        total_len: m.layout().file_len(),
        layout: m.layout().prefix().to_vec(),
        base: base.map(Manifest::root),
        chunks,
    }
}

impl Outgoing {
    /// Prepares the transfer of `replica` (a whole checkpoint, written at
    /// the epoch the receiver is to take). With `base`, the replica the
    /// receiver holds from this sender's previous round, the offer names
    /// only the chunks that changed since.
    pub fn new(
        transfer: Transfer,
        task_id: u64,
        replica: Replica,
        base: Option<&Replica>,
    ) -> Result<Self, TransferError> {
        if u32::try_from(replica.chunks.len()).is_err() {
            return Err(TransferError::TooLarge);
        }
        let offer = make_offer(transfer, task_id, &replica, base.map(Replica::manifest));
        Ok(Self {
            offer,
            replica,
            queue: Vec::new(),
            next: 0,
            phase: SendPhase::Offered,
        })
    }

    /// A transfer of the checkpoint file `bytes` (read and checked whole),
    /// offering every chunk.
    pub fn from_file(
        transfer: Transfer,
        task_id: u64,
        bytes: &[u8],
    ) -> Result<Self, TransferError> {
        let replica = Replica::from_file(bytes, &Limits::default())
            .map_err(|_| TransferError::InvalidCheckpoint)?;
        Self::new(transfer, task_id, replica, None)
    }

    /// The offer to send first (again after a reconnection in doubt).
    pub fn offer(&self) -> Message {
        Message::Offer(self.offer.clone())
    }

    /// What the offer announces (task, epoch, size, chunks).
    pub fn offered(&self) -> &Offer {
        &self.offer
    }

    /// The checkpoint being sent (after an ack: what the receiver holds).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The checkpoint, given back (after an ack the sender keeps it as its
    /// copy of the receiver's replica).
    pub fn into_replica(self) -> Replica {
        self.replica
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

    /// Restarts at the offer after a lost connection (keeps the ownership
    /// state). The offer becomes a full one: a reconnected receiver may
    /// hold another base.
    pub fn restart(&mut self) {
        if matches!(
            self.phase,
            SendPhase::Sending | SendPhase::Committed | SendPhase::Failed
        ) {
            self.widen();
        }
    }

    /// Turns the offer into one of every chunk (a receiver without the base
    /// answered [`NackReason::UnknownBase`]) and starts again at the offer;
    /// whether the offer changed.
    pub fn widen(&mut self) -> bool {
        let widened = self.offer.base.is_some();
        if widened {
            self.offer = make_offer(self.offer.transfer, self.offer.task_id, &self.replica, None);
        }
        self.phase = SendPhase::Offered;
        self.queue.clear();
        self.next = 0;
        widened
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
            (SendPhase::Offered | SendPhase::Committed, Message::Ack { epoch, .. })
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
        let at = self.offer.chunks[index as usize].at as usize;
        let (codec, payload) = encode(&self.replica.chunks[at]);
        Some(Message::Chunk {
            index,
            codec,
            payload,
        })
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

/// What a receiver stages while chunks arrive.
struct Staged {
    layout: Layout,
    hashes: Vec<Hash>,
    chunks: Vec<Option<Rc<[u8]>>>,
}

/// The receiving side of one transfer.
pub struct Incoming<'r> {
    policy: Policy,
    replica: Option<ReplicaRef<'r>>,
    offer: Option<Offer>,
    staged: Option<Staged>,
    accepted: Option<Replica>,
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
    /// A receiver applying `policy`, deduplicating against `replica` (and
    /// taking it as the base of an offer that names it).
    pub fn new(policy: Policy, replica: Option<&'r Replica>) -> Self {
        Self {
            policy,
            replica: replica.map(ReplicaRef::Borrowed),
            offer: None,
            staged: None,
            accepted: None,
            missing: BTreeSet::new(),
            phase: ReceivePhase::AwaitOffer,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> ReceivePhase {
        self.phase
    }

    /// The offer being received (or accepted).
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
            self.staged = None;
        }
        r
    }

    /// The accepted checkpoint, once acked (taken).
    pub fn take_replica(&mut self) -> Option<Replica> {
        self.accepted.take()
    }

    /// The accepted checkpoint as a v2 file's bytes, once acked (taken).
    pub fn take_checkpoint(&mut self) -> Option<Vec<u8>> {
        self.accepted.take().and_then(|r| r.to_file().ok())
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
                let (Some(staged), Some(offer)) = (&mut self.staged, &self.offer) else {
                    return reject(NackReason::UnexpectedMessage);
                };
                let info = offer.chunks[index as usize];
                // Decoded output is bounded by the announced chunk length.
                let Some(payload) = decode(codec, payload, info.len as usize) else {
                    return reject(NackReason::BadChunk { index });
                };
                if payload.len() != info.len as usize || chunk_hash(&payload) != info.hash {
                    return reject(NackReason::BadChunk { index });
                }
                staged.chunks[info.at as usize] = Some(Rc::from(payload));
                Ok(None)
            }
            (
                ReceivePhase::Receiving,
                Message::Commit {
                    checkpoint_hash,
                    epoch,
                },
            ) => {
                let (Some(staged), Some(offer)) = (self.staged.take(), &self.offer) else {
                    return reject(NackReason::UnexpectedMessage);
                };
                if !self.missing.is_empty() {
                    return reject(NackReason::MissingChunks);
                }
                if checkpoint_hash != offer.checkpoint_hash || epoch != offer.epoch {
                    return reject(NackReason::HashMismatch);
                }
                // Every chunk was checked on arrival (or came from a
                // replica checked before): the root is all that is left.
                let Ok(manifest) = Manifest::new(staged.layout, staged.hashes) else {
                    return reject(NackReason::InvalidCheckpoint);
                };
                if manifest.root() != checkpoint_hash {
                    return reject(NackReason::HashMismatch);
                }
                let chunks: Option<Vec<_>> = staged.chunks.into_iter().collect();
                let Some(chunks) = chunks else {
                    return reject(NackReason::MissingChunks);
                };
                self.accepted = Some(Replica::new(manifest, chunks));
                self.phase = ReceivePhase::Accepted;
                Ok(Some(Message::Ack {
                    epoch,
                    times: Default::default(),
                }))
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
        if o.transfer == Transfer::Migrate {
            if let Some(k) = &self.policy.known {
                if o.epoch == k.epoch && k.checkpoint_hash == Some(o.checkpoint_hash) {
                    // Already accepted (a repeated offer after a lost ack): ack again.
                    self.phase = ReceivePhase::Accepted;
                    let epoch = o.epoch;
                    self.offer = Some(o);
                    return Ok(Some(Message::Ack {
                        epoch,
                        times: Default::default(),
                    }));
                }
                if o.epoch <= k.epoch {
                    return reject(NackReason::StaleEpoch { known: k.epoch });
                }
            }
        }
        let limits = Limits {
            max_total_bytes: self.policy.max_len,
        };
        // The header and region table pass the reference reader, and say
        // what the offer says.
        let Ok(layout) = Layout::parse(o.layout.clone(), &limits) else {
            return reject(NackReason::InvalidCheckpoint);
        };
        let h = layout.header();
        if h.task_kind != o.kind
            || h.task_version != o.kind_version
            || h.progress != o.progress
            || h.progress_total != o.progress_total
            || h.epoch != o.epoch
            || layout.file_len() != o.total_len
        {
            return reject(NackReason::InvalidCheckpoint);
        }
        let replica = self.replica.as_ref().map(ReplicaRef::get);
        // The base of a round is the replica of the previous one.
        let base = match o.base {
            None => None,
            Some(root) => match replica
                .filter(|r| r.root() == root && r.manifest.layout().same_records(&layout))
            {
                Some(r) => Some(r),
                None => return reject(NackReason::UnknownBase),
            },
        };
        let n = layout.slots().len();
        // Each chunk once, in order, with its slot's length: all of them,
        // or (with a base) those that changed.
        let mut prev = None;
        for (i, c) in o.chunks.iter().enumerate() {
            let in_order = match base {
                None => c.at as usize == i,
                Some(_) => prev.is_none_or(|p| p < c.at),
            };
            let fits = layout
                .slots()
                .get(c.at as usize)
                .is_some_and(|s| s.len == c.len && (1..=MAX_TRANSFER_CHUNK).contains(&c.len));
            if !in_order || !fits {
                return reject(NackReason::UnexpectedMessage);
            }
            prev = Some(c.at);
        }
        if base.is_none() && o.chunks.len() != n {
            return reject(NackReason::UnexpectedMessage);
        }
        let (mut hashes, mut chunks) = match base {
            Some(b) => (
                b.manifest.hashes().to_vec(),
                b.chunks.iter().cloned().map(Some).collect::<Vec<_>>(),
            ),
            None => (alloc::vec![[0; 32]; n], alloc::vec![None; n]),
        };
        let mut need = Vec::new();
        for (i, c) in o.chunks.iter().enumerate() {
            let at = c.at as usize;
            hashes[at] = c.hash;
            chunks[at] = replica.and_then(|r| r.find(&c.hash));
            if chunks[at].is_none() {
                need.push(i as u32);
                self.missing.insert(i as u32);
            }
        }
        self.offer = Some(o);
        self.staged = Some(Staged {
            layout,
            hashes,
            chunks,
        });
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

impl TransferError {
    /// The nack to send back for a refusal of the peer's message.
    pub fn nack(&self) -> Option<Message> {
        match self {
            Self::Rejected(r) => Some(Message::Nack(*r)),
            _ => None,
        }
    }
}
