//! Bulk regions: arrays of fixed-width numbers with per-chunk dirty tracking.

use crate::format::{chunk_hash, ChunkHash, CHUNK_SIZE};
use alloc::vec::Vec;
use core::cell::OnceCell;
use core::ops::Range;

/// Element type of a bulk region, as stored in the region table (one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ElemType {
    /// Raw bytes; also the element type of typed regions.
    U8 = 0,
    /// `u32`, little-endian.
    U32 = 1,
    /// `i32`, little-endian two's complement.
    I32 = 2,
    /// `u64`, little-endian.
    U64 = 3,
    /// `i64`, little-endian two's complement.
    I64 = 4,
    /// IEEE 754 binary64, little-endian bit pattern.
    F64 = 5,
}

impl ElemType {
    /// Decodes the table byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::U8,
            1 => Self::U32,
            2 => Self::I32,
            3 => Self::U64,
            4 => Self::I64,
            5 => Self::F64,
            _ => return None,
        })
    }
    /// Width of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U32 | Self::I32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }
    /// Short lowercase name, as shown by `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F64 => "f64",
        }
    }
}

/// A number type that can live in a bulk region.
pub trait Elem: Copy + Default + PartialEq + 'static {
    /// Its table code.
    const TYPE: ElemType;
    /// Appends the little-endian encoding of `items` to `out`.
    fn encode(items: &[Self], out: &mut Vec<u8>);
    /// Appends the elements encoded in `bytes` (a multiple of the width) to `out`.
    fn decode(bytes: &[u8], out: &mut Vec<Self>);
    /// Wraps a vector into the matching [`BulkData`] variant.
    fn wrap(v: Vec<Self>) -> BulkData;
    /// Unwraps the matching [`BulkData`] variant.
    fn unwrap(d: BulkData) -> Option<Vec<Self>>;
}

macro_rules! elem {
    ($t:ty, $code:ident, $n:expr) => {
        impl Elem for $t {
            const TYPE: ElemType = ElemType::$code;
            // Sized up front and filled by exact chunks: compiles to a plain
            // copy on little-endian machines, a byte swap on big-endian ones.
            fn encode(items: &[Self], out: &mut Vec<u8>) {
                let start = out.len();
                out.resize(start + items.len() * $n, 0);
                for (c, x) in out[start..].chunks_exact_mut($n).zip(items) {
                    c.copy_from_slice(&x.to_le_bytes());
                }
            }
            fn decode(bytes: &[u8], out: &mut Vec<Self>) {
                out.extend(bytes.chunks_exact($n).map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    <$t>::from_le_bytes(a)
                }));
            }
            fn wrap(v: Vec<Self>) -> BulkData {
                BulkData::$code(v)
            }
            fn unwrap(d: BulkData) -> Option<Vec<Self>> {
                match d {
                    BulkData::$code(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
elem!(u8, U8, 1);
elem!(u32, U32, 4);
elem!(i32, I32, 4);
elem!(u64, U64, 8);
elem!(i64, I64, 8);
elem!(f64, F64, 8);

/// Decoded contents of a bulk region, whatever its element type.
#[derive(Debug, Clone, PartialEq)]
pub enum BulkData {
    /// Bytes.
    U8(Vec<u8>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `u64` elements.
    U64(Vec<u64>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `f64` elements.
    F64(Vec<f64>),
}

macro_rules! each {
    ($self:expr, $v:ident => $e:expr) => {
        match $self {
            BulkData::U8($v) => $e,
            BulkData::U32($v) => $e,
            BulkData::I32($v) => $e,
            BulkData::U64($v) => $e,
            BulkData::I64($v) => $e,
            BulkData::F64($v) => $e,
        }
    };
}

impl BulkData {
    /// An empty vector of the given element type.
    pub fn empty(t: ElemType) -> Self {
        match t {
            ElemType::U8 => Self::U8(Vec::new()),
            ElemType::U32 => Self::U32(Vec::new()),
            ElemType::I32 => Self::I32(Vec::new()),
            ElemType::U64 => Self::U64(Vec::new()),
            ElemType::I64 => Self::I64(Vec::new()),
            ElemType::F64 => Self::F64(Vec::new()),
        }
    }
    /// Its element type.
    pub fn elem(&self) -> ElemType {
        match self {
            Self::U8(_) => ElemType::U8,
            Self::U32(_) => ElemType::U32,
            Self::I32(_) => ElemType::I32,
            Self::U64(_) => ElemType::U64,
            Self::I64(_) => ElemType::I64,
            Self::F64(_) => ElemType::F64,
        }
    }
    /// Length in bytes of the little-endian encoding.
    pub fn len_bytes(&self) -> u64 {
        (each!(self, v => v.len()) * self.elem().size()) as u64
    }
    /// Reserves room for `bytes` more encoded bytes; false when memory is short.
    pub(crate) fn try_reserve_bytes(&mut self, bytes: usize) -> bool {
        let n = bytes / self.elem().size();
        each!(self, v => v.try_reserve_exact(n).is_ok())
    }
    /// Appends decoded elements from little-endian `bytes`.
    pub(crate) fn extend_le(&mut self, bytes: &[u8]) {
        each!(self, v => Elem::decode(bytes, v))
    }
    /// Overwrites elements from element index `at` with little-endian `bytes`
    /// (the caller checked the range).
    pub(crate) fn overwrite_le(&mut self, at: usize, bytes: &[u8]) {
        each!(self, v => {
            let mut tmp = Vec::new();
            Elem::decode(bytes, &mut tmp);
            v[at..at + tmp.len()].copy_from_slice(&tmp);
        })
    }
    /// Appends the encoding of element range `r` to `out`.
    pub fn encode_range(&self, r: Range<usize>, out: &mut Vec<u8>) {
        each!(self, v => Elem::encode(&v[r], out))
    }
    /// Truncates to `elems` elements.
    pub(crate) fn truncate(&mut self, elems: usize) {
        each!(self, v => v.truncate(elems))
    }
}

/// A bulk region owned by a task: a vector of numbers whose writes mark chunks dirty.
///
/// Reads are free; every write path ([`set`](Self::set), [`slice_mut`](Self::slice_mut))
/// marks the chunks it may change, so a delta checkpoint carries only those, and
/// forgets their cached hashes: a chunk's BLAKE3 hash is computed once per
/// dirtying, the first time a capture needs it, and kept until the next write.
#[derive(Debug, Clone)]
pub struct BulkRegion<T: Elem> {
    data: Vec<T>,
    dirty: Vec<bool>,
    hashes: Vec<OnceCell<ChunkHash>>,
}

impl<T: Elem> PartialEq for BulkRegion<T> {
    /// Equal contents and dirty marks (cached hashes follow the contents).
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data && self.dirty == other.dirty
    }
}

impl<T: Elem> BulkRegion<T> {
    /// Elements per chunk (chunks are [`CHUNK_SIZE`] bytes).
    pub const CHUNK_ELEMS: usize = CHUNK_SIZE as usize / core::mem::size_of::<T>();

    /// A region of `len` default elements, all chunks dirty (never captured yet).
    pub fn new(len: usize) -> Self {
        Self::from_vec(alloc::vec![T::default(); len])
    }
    /// Takes ownership of `data`, all chunks dirty.
    pub fn from_vec(data: Vec<T>) -> Self {
        let chunks = data.len().div_ceil(Self::CHUNK_ELEMS);
        Self {
            data,
            dirty: alloc::vec![true; chunks],
            hashes: alloc::vec![OnceCell::new(); chunks],
        }
    }
    /// Rebuilds a region from restored data; chunks clean (the state equals the checkpoint).
    pub fn restored(data: Vec<T>) -> Self {
        let mut r = Self::from_vec(data);
        r.clear_dirty();
        r
    }
    /// Like [`restored`](Self::restored), with the chunk hashes the
    /// checkpoint carried and its reader verified (one per chunk; any other
    /// count is ignored), so the next capture need not hash them again.
    pub fn restored_with_hashes(data: Vec<T>, hashes: &[ChunkHash]) -> Self {
        let mut r = Self::restored(data);
        if hashes.len() == r.hashes.len() {
            r.hashes = hashes.iter().map(|h| OnceCell::from(*h)).collect();
        }
        r
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Read access to the elements.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }
    /// Element `i`, or `None` out of range.
    pub fn get(&self, i: usize) -> Option<T> {
        self.data.get(i).copied()
    }
    /// Marks chunk `c` written: dirty, its hash forgotten.
    fn touch(&mut self, c: usize) {
        self.dirty[c] = true;
        self.hashes[c] = OnceCell::new();
    }
    /// Writes element `i` (marks its chunk dirty); false when out of range.
    pub fn set(&mut self, i: usize, v: T) -> bool {
        match self.data.get_mut(i) {
            Some(slot) => {
                *slot = v;
                self.touch(i / Self::CHUNK_ELEMS);
                true
            }
            None => false,
        }
    }
    /// Mutable access to elements `r` (clamped to the length); marks their chunks dirty.
    pub fn slice_mut(&mut self, r: Range<usize>) -> &mut [T] {
        let end = r.end.min(self.data.len());
        let start = r.start.min(end);
        if start < end {
            for c in start / Self::CHUNK_ELEMS..=(end - 1) / Self::CHUNK_ELEMS {
                self.touch(c);
            }
        }
        &mut self.data[start..end]
    }
    /// Mutable access to everything (marks every chunk dirty).
    pub fn all_mut(&mut self) -> &mut [T] {
        self.slice_mut(0..self.data.len())
    }
    /// Number of chunks.
    pub fn chunk_count(&self) -> usize {
        self.dirty.len()
    }
    /// True when chunk `i` changed since the last [`clear_dirty`](Self::clear_dirty).
    pub fn is_dirty(&self, i: usize) -> bool {
        self.dirty.get(i).copied().unwrap_or(false)
    }
    /// Number of dirty chunks.
    pub fn dirty_count(&self) -> usize {
        self.dirty.iter().filter(|d| **d).count()
    }
    /// Number of chunks whose hash is not cached (written since it was last computed).
    pub fn unhashed_count(&self) -> usize {
        self.hashes.iter().filter(|h| h.get().is_none()).count()
    }
    /// Forgets the dirty marks (call after a capture that becomes a delta base).
    /// Cached hashes stay: they still describe the contents.
    pub fn clear_dirty(&mut self) {
        self.dirty.iter_mut().for_each(|d| *d = false);
    }
    /// Appends the little-endian encoding of chunk `i` to `out`.
    pub fn encode_chunk(&self, i: usize, out: &mut Vec<u8>) {
        let s = (i * Self::CHUNK_ELEMS).min(self.data.len());
        let e = (s + Self::CHUNK_ELEMS).min(self.data.len());
        T::encode(&self.data[s..e], out);
    }
    /// The BLAKE3 hash of chunk `i`'s encoding: cached, or computed now
    /// (encoding it into `scratch`) and cached until the chunk is written.
    pub fn chunk_hash(&self, i: usize, scratch: &mut Vec<u8>) -> ChunkHash {
        *self.hashes[i].get_or_init(|| {
            scratch.clear();
            self.encode_chunk(i, scratch);
            chunk_hash(scratch)
        })
    }
    /// Consumes the region, returning its elements.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
}

/// Object-safe view of a bulk region, used by the writer.
pub(crate) trait BulkSource {
    fn elem(&self) -> ElemType;
    fn len_bytes(&self) -> u64;
    fn chunks(&self) -> usize;
    fn dirty(&self, i: usize) -> bool;
    fn encode(&self, i: usize, out: &mut Vec<u8>);
    /// The hash of chunk `i`, whose encoding is `encoded`: cached, or
    /// computed from `encoded` and cached.
    fn hash_of(&self, i: usize, encoded: &[u8]) -> ChunkHash;
    /// The cached hash of chunk `i`, if it was not written since.
    fn cached(&self, i: usize) -> Option<ChunkHash>;
}

impl<T: Elem> BulkSource for BulkRegion<T> {
    fn elem(&self) -> ElemType {
        T::TYPE
    }
    fn len_bytes(&self) -> u64 {
        (self.data.len() * core::mem::size_of::<T>()) as u64
    }
    fn chunks(&self) -> usize {
        self.chunk_count()
    }
    fn dirty(&self, i: usize) -> bool {
        self.is_dirty(i)
    }
    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        self.encode_chunk(i, out)
    }
    fn hash_of(&self, i: usize, encoded: &[u8]) -> ChunkHash {
        *self.hashes[i].get_or_init(|| chunk_hash(encoded))
    }
    fn cached(&self, i: usize) -> Option<ChunkHash> {
        self.hashes[i].get().copied()
    }
}

/// A bulk region as a snapshot borrows it: a task's own [`BulkRegion`], or
/// bytes it does not own as one (an interpreter's linear memory, see
/// [`crate::Snapshot::bulk_bytes`]), which have no dirty tracking: every
/// chunk counts as changed.
#[derive(Clone, Copy)]
pub(crate) enum BulkRef<'a> {
    Region(&'a dyn BulkSource),
    Bytes(&'a [u8]),
}

impl BulkSource for BulkRef<'_> {
    fn elem(&self) -> ElemType {
        match self {
            Self::Region(r) => r.elem(),
            Self::Bytes(_) => ElemType::U8,
        }
    }
    fn len_bytes(&self) -> u64 {
        match self {
            Self::Region(r) => r.len_bytes(),
            Self::Bytes(b) => b.len() as u64,
        }
    }
    fn chunks(&self) -> usize {
        match self {
            Self::Region(r) => r.chunks(),
            Self::Bytes(b) => b.len().div_ceil(CHUNK_SIZE as usize),
        }
    }
    fn dirty(&self, i: usize) -> bool {
        match self {
            Self::Region(r) => r.dirty(i),
            Self::Bytes(_) => true,
        }
    }
    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        match self {
            Self::Region(r) => r.encode(i, out),
            Self::Bytes(b) => {
                let cs = CHUNK_SIZE as usize;
                let s = (i * cs).min(b.len());
                let e = (s + cs).min(b.len());
                out.extend_from_slice(&b[s..e]);
            }
        }
    }
    fn hash_of(&self, i: usize, encoded: &[u8]) -> ChunkHash {
        match self {
            Self::Region(r) => r.hash_of(i, encoded),
            // Borrowed bytes keep no cache: hashed on every capture.
            Self::Bytes(_) => chunk_hash(encoded),
        }
    }
    fn cached(&self, i: usize) -> Option<ChunkHash> {
        match self {
            Self::Region(r) => r.cached(i),
            Self::Bytes(_) => None,
        }
    }
}
