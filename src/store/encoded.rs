//! One table's share of a batch, held the way ClickHouse will receive it: RowBinary (with a
//! `RowBinaryWithNamesAndTypes` header) in chunks of about [`CHUNK_BYTES`], each either plain
//! or already compressed in ClickHouse's native LZ4 frame. Rows are encoded as the pipeline
//! builds them, so a batch waiting for ClickHouse costs its encoded size (about half of the
//! same rows as structs, a fifth with LZ4) and a retry sends the same bytes again.

use std::marker::PhantomData;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::migrate::INSERTED_COLUMNS;
use super::rowbinary;
use super::rows::{MutationRow, RequestRow};

/// Size at which the chunk being filled is closed (and compressed): the `clickhouse` crate's
/// own frame size.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A row type the pipeline inserts, with its table and that table's inserted columns.
pub trait TableRow: Serialize + DeserializeOwned {
    const TABLE: &'static str;
    fn columns() -> &'static [(&'static str, &'static str)];
}

fn inserted_columns(table: &str) -> &'static [(&'static str, &'static str)] {
    INSERTED_COLUMNS.iter().find(|(t, _)| *t == table).map(|(_, c)| *c).expect("an inserted table")
}

impl TableRow for RequestRow {
    const TABLE: &'static str = "sync_requests";
    fn columns() -> &'static [(&'static str, &'static str)] {
        inserted_columns(Self::TABLE)
    }
}

impl TableRow for MutationRow {
    const TABLE: &'static str = "sync_mutations";
    fn columns() -> &'static [(&'static str, &'static str)] {
        inserted_columns(Self::TABLE)
    }
}

/// How the chunks are held (and sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Plain RowBinary; the `clickhouse` client compresses on the way if it is set to.
    #[default]
    Plain,
    /// ClickHouse's native LZ4 frames (sent with `decompress=1`): compressed once, when the
    /// chunk closes, instead of at every attempt to send it.
    Lz4,
}

/// Why encoded rows could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Rows(#[from] rowbinary::Error),
    #[error("a compressed chunk is damaged: {0}")]
    Frame(String),
}

/// A position in [`EncodedRows`] to roll back to.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    open: usize,
    rows: usize,
    encoded_bytes: usize,
    chunks: usize,
}

/// The rows of one table in one batch.
pub struct EncodedRows<R> {
    framing: Framing,
    chunks: Vec<Bytes>,
    open: Vec<u8>,
    rows: usize,
    encoded_bytes: usize,
    held_bytes: usize,
    _row: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for EncodedRows<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedRows").field("rows", &self.rows).field("encoded_bytes", &self.encoded_bytes).field("chunks", &self.chunks.len()).finish()
    }
}

impl<R: TableRow> Default for EncodedRows<R> {
    fn default() -> Self {
        Self::new(Framing::Plain)
    }
}

impl<R: TableRow> EncodedRows<R> {
    pub fn new(framing: Framing) -> Self {
        EncodedRows { framing, chunks: Vec::new(), open: Vec::new(), rows: 0, encoded_bytes: 0, held_bytes: 0, _row: PhantomData }
    }

    /// `rows`, encoded.
    pub fn from_rows<'a>(framing: Framing, rows: impl IntoIterator<Item = &'a R>) -> Result<Self, rowbinary::Error>
    where
        R: 'a,
    {
        let mut out = Self::new(framing);
        for r in rows {
            out.push(r)?;
        }
        out.finish();
        Ok(out)
    }

    /// Appends a row (see [`append`](Self::append)) and closes the chunk once it is full.
    pub fn push(&mut self, row: &R) -> Result<(), rowbinary::Error> {
        self.append(row)?;
        self.close_full_chunk();
        Ok(())
    }

    /// Appends a row to the open chunk. A row that cannot be encoded (a bug: our rows hold
    /// only encodable types, and tests encode every one) is refused, and nothing of it is kept.
    pub fn append(&mut self, row: &R) -> Result<(), rowbinary::Error> {
        if self.rows == 0 && self.open.is_empty() {
            self.open = rowbinary::header(R::columns());
        }
        let before = self.open.len();
        rowbinary::encode(row, R::columns(), &mut self.open)?;
        self.encoded_bytes += self.open.len() - before;
        self.rows += 1;
        Ok(())
    }

    /// Where the rows end now, to [`roll_back`](Self::roll_back) to (chunks are only closed
    /// by [`close_full_chunk`](Self::close_full_chunk), so appends since the mark are all in
    /// the open chunk).
    pub fn mark(&self) -> Mark {
        Mark { open: self.open.len(), rows: self.rows, encoded_bytes: self.encoded_bytes, chunks: self.chunks.len() }
    }

    /// Forgets the rows appended since `mark`.
    pub fn roll_back(&mut self, mark: Mark) {
        debug_assert_eq!(mark.chunks, self.chunks.len(), "no chunk closed since the mark");
        self.open.truncate(mark.open);
        self.rows = mark.rows;
        self.encoded_bytes = mark.encoded_bytes;
    }

    /// Closes the open chunk if it reached [`CHUNK_BYTES`].
    pub fn close_full_chunk(&mut self) {
        if self.open.len() >= CHUNK_BYTES {
            self.close_chunk();
        }
    }

    /// Closes the chunk being filled and frees its spare room: the rows are ready to send.
    pub fn finish(&mut self) {
        self.close_chunk();
        self.open = Vec::new();
    }

    fn close_chunk(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let chunk = match self.framing {
            Framing::Plain => Bytes::copy_from_slice(&self.open),
            Framing::Lz4 => lz4_frame(&self.open),
        };
        self.held_bytes += chunk.len();
        self.chunks.push(chunk);
        self.open.clear();
        // A large record leaves a buffer sized for it: let it go rather than hold it for the
        // rest of the batch beside what `batch_bytes` counts.
        if self.open.capacity() > 2 * CHUNK_BYTES {
            self.open = Vec::new();
        }
    }

    /// Every row is in a closed chunk (nothing would be left out of an insert).
    pub fn is_finished(&self) -> bool {
        self.open.is_empty()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// RowBinary bytes of the rows (what ClickHouse parses).
    pub fn encoded_bytes(&self) -> usize {
        self.encoded_bytes
    }

    /// Memory the rows take now: the closed chunks (compressed, with LZ4) and the open one.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes + self.open.capacity()
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The closed chunks, in order (call [`finish`](Self::finish) first).
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The rows back as structs, for the disk spool and the dead letters (rare paths: a batch
    /// ClickHouse could not take).
    pub fn decode(&self) -> Result<Vec<R>, DecodeError> {
        let mut plain = Vec::with_capacity(self.encoded_bytes + 1024);
        for c in &self.chunks {
            match self.framing {
                Framing::Plain => plain.extend_from_slice(c),
                Framing::Lz4 => plain.extend_from_slice(&lz4_unframe(c)?),
            }
        }
        plain.extend_from_slice(&self.open);
        let header = rowbinary::header(R::columns());
        if plain.is_empty() {
            return Ok(Vec::new());
        }
        let body = plain.strip_prefix(header.as_slice()).ok_or_else(|| DecodeError::Frame("the header is not this table's".into()))?;
        Ok(rowbinary::decode_all(body)?)
    }

    /// `INSERT INTO <table> (<columns>) FORMAT RowBinaryWithNamesAndTypes`: the column list
    /// makes a dropped column a refusal (Code 16) instead of a silently skipped field.
    pub fn insert_sql() -> String {
        let names: Vec<&str> = R::columns().iter().map(|c| c.0).collect();
        format!("INSERT INTO {} ({}) FORMAT RowBinaryWithNamesAndTypes", R::TABLE, names.join(", "))
    }
}

/// ClickHouse's native compressed frame (the `clickhouse` crate writes the same one):
/// 16 bytes of CityHash128 (v1.0.2) over the rest, method byte 0x82 (LZ4), the frame's size
/// from the method byte on and the data's uncompressed size (u32 little-endian each), then
/// the LZ4 block. <https://clickhouse.com/docs/native-protocol/columns#compression>
const LZ4_METHOD: u8 = 0x82;
const CHECKSUM: usize = 16;
const META: usize = CHECKSUM + 9;

thread_local! {
    /// The compressor's output buffer, reused: each frame is then copied out at its exact size.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn lz4_frame(plain: &[u8]) -> Bytes {
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        buf.resize(META + lz4_flex::block::get_maximum_output_size(plain.len()), 0);
        let n = lz4_flex::block::compress_into(plain, &mut buf[META..]).expect("the buffer has the maximum output size");
        buf.truncate(META + n);
        buf[CHECKSUM] = LZ4_METHOD;
        buf[CHECKSUM + 1..CHECKSUM + 5].copy_from_slice(&((9 + n) as u32).to_le_bytes());
        buf[CHECKSUM + 5..META].copy_from_slice(&(plain.len() as u32).to_le_bytes());
        let sum = cityhash_rs::cityhash_102_128(&buf[CHECKSUM..]).rotate_right(64);
        buf[..CHECKSUM].copy_from_slice(&sum.to_le_bytes());
        let frame = Bytes::copy_from_slice(buf);
        // Kept for the next chunk, but not at the size of one outsized record.
        if buf.capacity() > 2 * CHUNK_BYTES {
            *buf = Vec::new();
        }
        frame
    })
}

fn lz4_unframe(frame: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let bad = |why: &str| DecodeError::Frame(why.to_owned());
    if frame.len() < META || frame[CHECKSUM] != LZ4_METHOD {
        return Err(bad("not an LZ4 frame"));
    }
    let sum = u128::from_le_bytes(frame[..CHECKSUM].try_into().expect("16 bytes"));
    if cityhash_rs::cityhash_102_128(&frame[CHECKSUM..]).rotate_right(64) != sum {
        return Err(bad("checksum mismatch"));
    }
    let size = |at: usize| u32::from_le_bytes(frame[at..at + 4].try_into().expect("4 bytes")) as usize;
    if size(CHECKSUM + 1) != frame.len() - CHECKSUM {
        return Err(bad("frame size mismatch"));
    }
    lz4_flex::block::decompress(&frame[META..], size(CHECKSUM + 5)).map_err(|e| DecodeError::Frame(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mutation(i: u32) -> MutationRow {
        MutationRow {
            request_id: "r1".into(),
            started_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            position: i,
            mutation_id: format!("m{i}"),
            entity_id: "e".into(),
            model: "todo".into(),
            operation: "update".into(),
            client_id: "c".into(),
            client_timestamp: if i % 2 == 0 { None } else { chrono::DateTime::from_timestamp_millis(1_700_000_000_123) },
            client_timestamp_raw: String::new(),
            version: u64::from(i),
            outcome: "applied".into(),
            reason: String::new(),
            reason_data: String::new(),
            payload: format!("{{\"title\":\"{}\"}}", "x".repeat(i as usize % 300)),
            state_before: "{}".into(),
            state_after: "{\"a\":1}".into(),
            has_state: true,
            detail_kept: true,
            diff: "[]".into(),
            trace_id: "".into(),
            span_id: "".into(),
            redacted_paths: vec!["/password".into()],
            redacted_paths_recorded: true,
        }
    }

    #[test]
    fn rows_come_back_from_either_framing_across_chunks() {
        let rows: Vec<MutationRow> = (0..3000).map(mutation).collect();
        for framing in [Framing::Plain, Framing::Lz4] {
            let enc = EncodedRows::from_rows(framing, &rows).unwrap();
            assert!(enc.chunks().len() > 1, "{framing:?}: more than one chunk");
            assert_eq!(enc.rows(), 3000);
            assert_eq!(enc.decode().unwrap(), rows, "{framing:?}");
            if framing == Framing::Lz4 {
                assert!(enc.held_bytes() * 3 < enc.encoded_bytes(), "LZ4 holds less: {} of {}", enc.held_bytes(), enc.encoded_bytes());
            }
        }
    }

    #[test]
    fn rows_appended_since_a_mark_can_be_rolled_back() {
        let mut enc = EncodedRows::new(Framing::Plain);
        enc.push(&mutation(1)).unwrap();
        let mark = enc.mark();
        enc.append(&mutation(2)).unwrap();
        enc.append(&mutation(3)).unwrap();
        enc.roll_back(mark);
        enc.push(&mutation(4)).unwrap();
        enc.finish();
        assert_eq!(enc.decode().unwrap(), vec![mutation(1), mutation(4)]);
        assert_eq!(enc.rows(), 2);
        assert_eq!(enc.encoded_bytes(), EncodedRows::from_rows(Framing::Plain, &[mutation(1), mutation(4)]).unwrap().encoded_bytes());
    }

    #[test]
    fn an_outsized_record_does_not_leave_its_buffer_behind() {
        let mut big = mutation(1);
        big.payload = "y".repeat(3 * CHUNK_BYTES);
        for framing in [Framing::Plain, Framing::Lz4] {
            let mut enc = EncodedRows::new(framing);
            enc.push(&big).unwrap();
            assert!(enc.is_finished(), "{framing:?}: the outsized row closed its chunk");
            enc.push(&mutation(2)).unwrap();
            assert!(!enc.is_finished());
            assert!(enc.held_bytes() < enc.encoded_bytes() + 2 * CHUNK_BYTES, "{framing:?}: held {} for {} encoded", enc.held_bytes(), enc.encoded_bytes());
            enc.finish();
            assert_eq!(enc.decode().unwrap(), vec![big.clone(), mutation(2)]);
        }
        SCRATCH.with_borrow(|b| assert!(b.capacity() <= 2 * CHUNK_BYTES, "the LZ4 scratch buffer shrank back"));
    }

    #[test]
    fn a_damaged_frame_is_reported_not_decoded() {
        let enc = EncodedRows::from_rows(Framing::Lz4, &[mutation(1)]).unwrap();
        let mut bytes = enc.chunks()[0].to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        assert!(matches!(lz4_unframe(&bytes), Err(DecodeError::Frame(m)) if m == "checksum mismatch"));
        assert!(lz4_unframe(&bytes[..10]).is_err());
    }

    #[test]
    fn the_insert_names_every_column_in_order() {
        let sql = EncodedRows::<MutationRow>::insert_sql();
        assert!(sql.starts_with("INSERT INTO sync_mutations (request_id, started_at, position, mutation_id"), "{sql}");
        assert!(sql.ends_with("redacted_paths, redacted_paths_recorded) FORMAT RowBinaryWithNamesAndTypes"), "{sql}");
    }
}
