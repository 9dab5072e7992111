//! A reader for PostgreSQL's built-in `pgoutput` logical decoding format,
//! protocol version 1, as `pg_logical_slot_peek_binary_changes` returns it:
//! one message per row (PostgreSQL docs, "Logical Replication Message
//! Formats"). Only what the change feed needs is kept: transactions, the
//! relations' column names, row images as text, truncations and logical
//! messages.
//!
//! Values arrive in PostgreSQL's text output format, so a row is a list of
//! `(column, Option<text>)`; [`Row::get`] finds a column by name.

use std::collections::HashMap;

use time::OffsetDateTime;

/// A WAL position; shown as PostgreSQL does, `X/Y` in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl std::str::FromStr for Lsn {
    type Err = DecodeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || DecodeError(format!("not an LSN: {text:?}"));
        let (high, low) = text.split_once('/').ok_or_else(bad)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| bad())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| bad())?;
        Ok(Self((u64::from(high) << 32) | u64::from(low)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgoutput: {0}")]
pub struct DecodeError(pub String);

/// One row image: column names with their text values (`None` for NULL or
/// a TOASTed value that did not change).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row(pub Vec<(String, Option<String>)>);

impl Row {
    pub fn get(&self, column: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == column)
            .and_then(|(_, value)| value.as_deref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

/// A row change, with the relation's name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub table: String,
    pub kind: ChangeKind,
    /// The old row: with `REPLICA IDENTITY FULL` the whole row, otherwise
    /// the key (or nothing, when the key did not change).
    pub old: Option<Row>,
    pub new: Option<Row>,
}

/// What happened inside one transaction, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Change(Change),
    Truncate(Vec<String>),
    /// A transactional logical message (`pg_logical_emit_message(true, ...)`).
    Message {
        prefix: String,
        content: Vec<u8>,
    },
}

/// A committed transaction, as the slot hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub xid: u32,
    pub committed_at: OffsetDateTime,
    /// The end of the commit record: the slot may be advanced to it once
    /// the transaction is recorded.
    pub end_lsn: Lsn,
    pub events: Vec<Event>,
}

/// Turns a stream of pgoutput messages into whole transactions. Relation
/// messages come before a relation's first change in each decoding call
/// (and each replication session), so a fresh assembler per call or
/// session knows every relation it meets.
#[derive(Debug, Default)]
pub struct Assembler {
    relations: HashMap<u32, Relation>,
    open: Option<Transaction>,
    done: Vec<Transaction>,
}

#[derive(Debug, Clone)]
struct Relation {
    name: String,
    columns: Vec<String>,
}

/// Microseconds between the Unix epoch and PostgreSQL's, 2000-01-01.
const PG_EPOCH_MICROS: i128 = 946_684_800_000_000;

impl Assembler {
    pub fn push(&mut self, message: &[u8]) -> Result<(), DecodeError> {
        let mut r = Reader::new(message);
        match r.u8()? {
            b'B' => {
                let _final_lsn = r.u64()?;
                let committed_at = r.i64()?;
                let xid = r.u32()?;
                self.begin(xid, committed_at)?;
            }
            b'C' => {
                let _flags = r.u8()?;
                let _commit_lsn = r.u64()?;
                let end_lsn = Lsn(r.u64()?);
                let committed_at = r.i64()?;
                self.commit(end_lsn, committed_at)?;
            }
            b'R' => {
                let id = r.u32()?;
                let _namespace = r.string()?;
                let name = r.string()?;
                let _replica_identity = r.u8()?;
                let count = r.u16()?;
                let mut columns = Vec::with_capacity(count.into());
                for _ in 0..count {
                    let _flags = r.u8()?;
                    columns.push(r.string()?);
                    let _type_oid = r.u32()?;
                    let _type_modifier = r.i32()?;
                }
                self.relations.insert(id, Relation { name, columns });
            }
            b'I' => {
                let relation = self.relation(r.u32()?)?;
                expect(&mut r, b'N')?;
                let new = Some(tuple(&mut r, &relation)?);
                self.event(Event::Change(Change {
                    table: relation.name,
                    kind: ChangeKind::Insert,
                    old: None,
                    new,
                }))?;
            }
            b'U' => {
                let relation = self.relation(r.u32()?)?;
                let mut old = None;
                let mut marker = r.u8()?;
                if marker == b'K' || marker == b'O' {
                    old = Some(tuple(&mut r, &relation)?);
                    marker = r.u8()?;
                }
                if marker != b'N' {
                    return Err(DecodeError(format!("UPDATE: unexpected {marker:#x}")));
                }
                let new = Some(tuple(&mut r, &relation)?);
                self.event(Event::Change(Change {
                    table: relation.name,
                    kind: ChangeKind::Update,
                    old,
                    new,
                }))?;
            }
            b'D' => {
                let relation = self.relation(r.u32()?)?;
                let marker = r.u8()?;
                if marker != b'K' && marker != b'O' {
                    return Err(DecodeError(format!("DELETE: unexpected {marker:#x}")));
                }
                let old = Some(tuple(&mut r, &relation)?);
                self.event(Event::Change(Change {
                    table: relation.name,
                    kind: ChangeKind::Delete,
                    old,
                    new: None,
                }))?;
            }
            b'T' => {
                let count = r.u32()?;
                let _options = r.u8()?;
                let mut tables = Vec::new();
                for _ in 0..count {
                    tables.push(self.relation(r.u32()?)?.name);
                }
                self.event(Event::Truncate(tables))?;
            }
            b'M' => {
                let flags = r.u8()?;
                let _lsn = r.u64()?;
                let prefix = r.string()?;
                let length = r.u32()? as usize;
                let content = r.bytes(length)?.to_vec();
                self.message(flags & 1 == 1, prefix, content)?;
            }
            // Origin and type messages: nothing the feed needs.
            b'O' | b'Y' => {}
            other => {
                return Err(DecodeError(format!(
                    "unknown message type {:?}",
                    char::from(other)
                )));
            }
        }
        Ok(())
    }

    /// A transaction begins; `committed_at` in microseconds since
    /// 2000-01-01, as the protocol sends it.
    pub fn begin(&mut self, xid: u32, committed_at: i64) -> Result<(), DecodeError> {
        if let Some(open) = &self.open {
            return Err(DecodeError(format!(
                "BEGIN of {xid} inside transaction {}",
                open.xid
            )));
        }
        self.open = Some(Transaction {
            xid,
            committed_at: timestamp(committed_at)?,
            end_lsn: Lsn(0),
            events: Vec::new(),
        });
        Ok(())
    }

    /// The open transaction committed; its WAL ends at `end_lsn`.
    pub fn commit(&mut self, end_lsn: Lsn, committed_at: i64) -> Result<(), DecodeError> {
        let mut tx = self
            .open
            .take()
            .ok_or_else(|| DecodeError("COMMIT without BEGIN".into()))?;
        tx.end_lsn = end_lsn;
        tx.committed_at = timestamp(committed_at)?;
        self.done.push(tx);
        Ok(())
    }

    /// A logical decoding message. Non-transactional ones come outside any
    /// transaction; the feed has no use for them.
    pub fn message(
        &mut self,
        transactional: bool,
        prefix: String,
        content: Vec<u8>,
    ) -> Result<(), DecodeError> {
        if transactional {
            self.event(Event::Message { prefix, content })?;
        }
        Ok(())
    }

    /// The transactions completed so far, in commit order.
    pub fn take_committed(&mut self) -> Vec<Transaction> {
        std::mem::take(&mut self.done)
    }

    /// Completed transactions are waiting to be taken.
    pub fn has_committed(&self) -> bool {
        !self.done.is_empty()
    }

    /// How many completed transactions are waiting to be taken.
    pub fn committed(&self) -> usize {
        self.done.len()
    }

    /// A transaction has begun and not committed.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    fn relation(&self, id: u32) -> Result<Relation, DecodeError> {
        self.relations
            .get(&id)
            .cloned()
            .ok_or_else(|| DecodeError(format!("change for relation {id} before its RELATION")))
    }

    fn event(&mut self, event: Event) -> Result<(), DecodeError> {
        self.open
            .as_mut()
            .ok_or_else(|| DecodeError("change outside a transaction".into()))?
            .events
            .push(event);
        Ok(())
    }
}

fn expect(r: &mut Reader<'_>, marker: u8) -> Result<(), DecodeError> {
    let found = r.u8()?;
    if found == marker {
        Ok(())
    } else {
        Err(DecodeError(format!(
            "expected {:?}, found {found:#x}",
            char::from(marker)
        )))
    }
}

fn tuple(r: &mut Reader<'_>, relation: &Relation) -> Result<Row, DecodeError> {
    let count = usize::from(r.u16()?);
    if count > relation.columns.len() {
        return Err(DecodeError(format!(
            "{} has {} columns, the tuple {count}",
            relation.name,
            relation.columns.len()
        )));
    }
    let mut values = Vec::with_capacity(count);
    for column in &relation.columns[..count] {
        let value = match r.u8()? {
            b'n' | b'u' => None,
            b't' => {
                let length = r.u32()? as usize;
                let bytes = r.bytes(length)?;
                Some(
                    String::from_utf8(bytes.to_vec())
                        .map_err(|_| DecodeError(format!("{column}: not UTF-8")))?,
                )
            }
            other => {
                return Err(DecodeError(format!(
                    "{column}: unknown value kind {other:#x}"
                )));
            }
        };
        values.push((column.clone(), value));
    }
    Ok(Row(values))
}

fn timestamp(micros_since_2000: i64) -> Result<OffsetDateTime, DecodeError> {
    let nanos = (i128::from(micros_since_2000) + PG_EPOCH_MICROS) * 1_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| DecodeError(format!("timestamp out of range: {micros_since_2000}")))
}

/// Big-endian fields, as the protocol sends them.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError(format!(
                "message ends early: wanted {n} bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, DecodeError> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| DecodeError("unterminated string".into()))?;
        let text = String::from_utf8(self.bytes[..end].to_vec())
            .map_err(|_| DecodeError("string not UTF-8".into()))?;
        self.bytes = &self.bytes[end + 1..];
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_read_and_print_as_postgresql_shows_them() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("16-B3".parse::<Lsn>().is_err());
        assert!("G/0".parse::<Lsn>().is_err());
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let mut assembler = Assembler::default();
        assert!(assembler.push(b"B\0\0").is_err());
        assert!(assembler.push(b"").is_err());
        assert!(assembler.push(b"Z").is_err());
        // A change before any BEGIN or RELATION.
        assert!(assembler.push(&[b'I', 0, 0, 0, 1, b'N', 0, 0]).is_err());
    }

    #[test]
    fn commit_timestamps_count_from_2000() {
        assert_eq!(
            timestamp(0).unwrap(),
            time::macros::datetime!(2000-01-01 00:00:00 UTC)
        );
    }
}
