//! The sandbox's ledger: payments, idempotency records and the behaviour
//! knobs. Everything lives in one mutex-guarded map; a sandbox serves demos
//! and tests, not thousands of merchants.
//!
//! A gateway opened on a journal file ([`Gateway::open`]) remembers, as a
//! real one does: every change is appended to the file as one JSON line
//! before it is applied, and the file is replayed at start, so a restarted
//! sandbox still knows each payment and answers each key as before. The
//! lines reach the operating system before the answer is sent, so killing
//! the process loses nothing; the file is not synced to the disk, so an
//! operating-system crash may (a laptop sandbox). Without a journal the
//! ledger lives in memory only (the in-process sandboxes of tests).
//!
//! Idempotency works as at real gateways: the first answer to a key is kept
//! and replayed for every retry with the same request; the same key with a
//! different request is refused (422), since it is a client bug.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use chassis::Problem;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// How the sandbox misbehaves, on purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Added before each answer, after the payment is recorded: a slow PG
    /// still charges, which is what makes client timeouts dangerous.
    pub latency_ms: u64,
    /// Share of authorisations declined (0–100).
    pub decline_percent: u8,
    /// Share of calls answered 503 before anything is recorded (0–100).
    pub failure_percent: u8,
}

impl Behaviour {
    pub const MAX_LATENCY_MS: u64 = 120_000;

    pub fn validate(&self) -> Result<(), String> {
        if self.decline_percent > 100 || self.failure_percent > 100 {
            return Err("decline_percent and failure_percent are between 0 and 100.".into());
        }
        if self.latency_ms > Self::MAX_LATENCY_MS {
            return Err(format!(
                "latency_ms is at most {} (two minutes).",
                Self::MAX_LATENCY_MS
            ));
        }
        Ok(())
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Approved,
    Declined,
    Refunded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: String,
    /// The merchant's reference (the monolith's order number).
    pub order_id: String,
    pub amount: i64,
    pub status: PaymentStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub refunded_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_reason: Option<String>,
}

/// An answer as it goes on the wire, kept for replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(with = "status_code")]
    pub status: StatusCode,
    pub body: Value,
    /// `application/problem+json` rather than `application/json`.
    pub problem: bool,
}

/// A status code in the journal: its number.
mod status_code {
    use axum::http::StatusCode;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(status: &StatusCode, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_u16(status.as_u16())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<StatusCode, D::Error> {
        StatusCode::from_u16(u16::deserialize(input)?).map_err(D::Error::custom)
    }
}

impl Reply {
    fn payment(status: StatusCode, payment: &Payment) -> Self {
        Self {
            status,
            body: serde_json::to_value(payment).unwrap_or(Value::Null),
            problem: false,
        }
    }
}

impl From<Problem> for Reply {
    fn from(problem: Problem) -> Self {
        Self {
            status: problem.status,
            body: serde_json::to_value(&problem).unwrap_or(Value::Null),
            problem: true,
        }
    }
}

/// What a key was first used for: a retry must ask the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
enum Request {
    Authorise { order_id: String, amount: i64 },
    Refund { payment_id: String },
}

#[derive(Debug)]
struct Record {
    request: Request,
    reply: Reply,
    /// The payment the call created or changed, for look-ups by key.
    payment_id: Option<String>,
}

#[derive(Debug, Default)]
struct Ledger {
    payments: HashMap<String, Payment>,
    by_key: HashMap<String, Record>,
}

/// One change to the ledger, as the journal keeps it: a key's first call,
/// its answer, and the payment as the call left it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: String,
    request: Request,
    reply: Reply,
    payment: Option<Payment>,
}

impl Ledger {
    fn apply(&mut self, entry: Entry) {
        let payment_id = entry.payment.as_ref().map(|p| p.payment_id.clone());
        if let Some(payment) = entry.payment {
            self.payments.insert(payment.payment_id.clone(), payment);
        }
        self.by_key.insert(
            entry.key,
            Record {
                request: entry.request,
                reply: entry.reply,
                payment_id,
            },
        );
    }
}

/// Why a journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the ledger journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the ledger journal {path} is used by another running sandbox")]
    InUse { path: PathBuf },
    #[error(
        "the ledger journal {path} is damaged at line {line} ({reason}); repair or remove that line (removing it forgets one change), or move the file aside to start with an empty ledger"
    )]
    Damaged {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The append-only file a remembering sandbox writes each change to.
#[derive(Debug)]
struct Journal {
    file: File,
    path: PathBuf,
    /// A failed write could not be cut back off: no more writes.
    broken: bool,
}

impl Journal {
    /// Opens (or creates) the journal and reads back its entries. A last
    /// line cut short (the process died while writing it) is dropped and cut
    /// off the file: its change was never applied nor answered. Any other
    /// unreadable line stops the start, since skipping it would forget a
    /// payment.
    fn open(path: &Path) -> Result<(Self, Vec<Entry>), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // One writer per journal: a second sandbox on the same file would
        // interleave its lines with ours.
        file.try_lock().map_err(|error| match error {
            std::fs::TryLockError::WouldBlock => JournalError::InUse {
                path: path.to_owned(),
            },
            std::fs::TryLockError::Error(source) => io(source),
        })?;
        let text = std::fs::read(path).map_err(io)?;
        let mut entries = Vec::new();
        let mut offset = 0;
        let mut line_no = 0;
        while offset < text.len() {
            line_no += 1;
            let end = text[offset..].iter().position(|b| *b == b'\n');
            let line = &text[offset..end.map_or(text.len(), |e| offset + e)];
            match (serde_json::from_slice::<Entry>(line), end) {
                (Ok(entry), end) => {
                    entries.push(entry);
                    if end.is_none() {
                        // Whole, but its newline never came: add it, or the
                        // next line would be glued onto this one.
                        file.write_all(b"\n").map_err(io)?;
                    }
                }
                (Err(_), None) => {
                    tracing::warn!(
                        path = %path.display(),
                        line = line_no,
                        "the ledger journal's last line was cut short; dropping it"
                    );
                    file.set_len(offset as u64).map_err(io)?;
                    break;
                }
                (Err(error), Some(_)) if !line.is_empty() => {
                    return Err(JournalError::Damaged {
                        path: path.to_owned(),
                        line: line_no,
                        reason: error.to_string(),
                    });
                }
                (Err(_), Some(_)) => {}
            }
            offset = end.map_or(text.len(), |e| offset + e + 1);
        }
        let journal = Self {
            file,
            path: path.to_owned(),
            broken: false,
        };
        Ok((journal, entries))
    }

    /// Appends one line. A write that fails part-way is cut back off, so
    /// the next line does not start inside it; when even that fails, the
    /// journal takes no more writes (every call answers 503) rather than
    /// leave a damaged line in the middle of the file.
    fn append(&mut self, entry: &Entry) -> std::io::Result<()> {
        if self.broken {
            return Err(std::io::Error::other(
                "an earlier write failed and could not be undone; restart the sandbox",
            ));
        }
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let before = self.file.metadata()?.len();
        let written = self.file.write_all(&line);
        if written.is_err() && self.file.set_len(before).is_err() {
            self.broken = true;
        }
        written
    }

    /// Forgets everything: the file is emptied.
    fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.broken = false;
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Debug)]
pub struct Gateway {
    /// The journal sits beside the maps under one lock: a change is written,
    /// then applied, before the next call sees the ledger.
    ledger: Mutex<(Ledger, Option<Journal>)>,
    behaviour: Mutex<Behaviour>,
    calls: Family<CallLabels, Counter>,
}

impl Gateway {
    /// A gateway that forgets on restart.
    pub fn new(behaviour: Behaviour, registry: &mut Registry) -> Self {
        let calls = Family::default();
        registry.register(
            "pg_sandbox_calls",
            "Gateway calls by operation and outcome",
            calls.clone(),
        );
        Self {
            ledger: Mutex::default(),
            behaviour: Mutex::new(behaviour),
            calls,
        }
    }

    /// A gateway that remembers: its ledger is read back from the journal
    /// at `path` (created when missing) and every change is appended to it.
    pub fn open(
        behaviour: Behaviour,
        registry: &mut Registry,
        path: &Path,
    ) -> Result<Self, JournalError> {
        let (journal, entries) = Journal::open(path)?;
        let gateway = Self::new(behaviour, registry);
        {
            let mut guard = gateway.lock();
            let (ledger, slot) = &mut *guard;
            let replayed = entries.len();
            for entry in entries {
                ledger.apply(entry);
            }
            tracing::info!(
                path = %journal.path.display(),
                changes = replayed,
                payments = ledger.payments.len(),
                "ledger read back from its journal"
            );
            *slot = Some(journal);
        }
        Ok(gateway)
    }

    /// Forgets every payment and key, in memory and in the journal: for a
    /// demo database reseeded with order numbers starting over (`make seed`),
    /// whose idempotency keys would otherwise meet the old payments.
    pub fn reset(&self) -> std::io::Result<usize> {
        let mut guard = self.lock();
        let (ledger, journal) = &mut *guard;
        if let Some(journal) = journal {
            journal.clear()?;
        }
        let forgotten = ledger.payments.len();
        *ledger = Ledger::default();
        Ok(forgotten)
    }

    /// Every payment, oldest first; `order_id` keeps one merchant
    /// reference's. How a demo or a test counts charges and refunds.
    pub fn payments(&self, order_id: Option<&str>) -> Vec<Payment> {
        let mut payments: Vec<Payment> = self
            .lock()
            .0
            .payments
            .values()
            .filter(|p| order_id.is_none_or(|id| p.order_id == id))
            .cloned()
            .collect();
        payments.sort_by(|a, b| (a.created_at, &a.payment_id).cmp(&(b.created_at, &b.payment_id)));
        payments
    }

    pub fn behaviour(&self) -> Behaviour {
        *self.behaviour.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap_or_else(|e| e.into_inner()) = behaviour;
    }

    /// Authorises (captures) `amount` for `order_id`.
    pub fn authorise(&self, key: &str, order_id: &str, amount: i64) -> Reply {
        let request = Request::Authorise {
            order_id: order_id.to_owned(),
            amount,
        };
        self.idempotent("authorise", key, request, |_, behaviour| {
            let declined = roll(behaviour.decline_percent);
            let payment = Payment {
                payment_id: format!("pay_{}", uuid::Uuid::now_v7().simple()),
                order_id: order_id.to_owned(),
                amount,
                status: if declined {
                    PaymentStatus::Declined
                } else {
                    PaymentStatus::Approved
                },
                created_at: OffsetDateTime::now_utc(),
                refunded_at: None,
                decline_reason: declined.then(|| "insufficient_funds".to_owned()),
            };
            let reply = if declined {
                Problem::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "card-declined",
                    "Card declined",
                )
                .with_detail("The issuer declined the payment: insufficient_funds.")
                .with_extension("payment_id", &payment.payment_id)
                .with_extension("decline_reason", "insufficient_funds")
                .into()
            } else {
                Reply::payment(StatusCode::CREATED, &payment)
            };
            (reply, Some(payment))
        })
    }

    /// Refunds the whole of an approved payment; refunding twice is a no-op.
    pub fn refund(&self, key: &str, payment_id: &str) -> Reply {
        let request = Request::Refund {
            payment_id: payment_id.to_owned(),
        };
        self.idempotent("refund", key, request, |ledger, _| {
            let Some(payment) = ledger.payments.get(payment_id) else {
                let problem = Problem::not_found(format!("No payment {payment_id}."));
                return (problem.into(), None);
            };
            match payment.status {
                PaymentStatus::Declined => {
                    let problem = Problem::new(
                        StatusCode::CONFLICT,
                        "not-refundable",
                        "Payment not refundable",
                    )
                    .with_detail("A declined payment was never charged.");
                    (problem.into(), None)
                }
                PaymentStatus::Approved | PaymentStatus::Refunded => {
                    let mut payment = payment.clone();
                    if payment.status == PaymentStatus::Approved {
                        payment.status = PaymentStatus::Refunded;
                        payment.refunded_at = Some(OffsetDateTime::now_utc());
                    }
                    (Reply::payment(StatusCode::OK, &payment), Some(payment))
                }
            }
        })
    }

    pub fn payment(&self, payment_id: &str) -> Option<Payment> {
        self.lock().0.payments.get(payment_id).cloned()
    }

    /// The payment an authorisation with `key` created: how a client that
    /// timed out learns whether it was charged.
    pub fn payment_by_key(&self, key: &str) -> Option<Payment> {
        let guard = self.lock();
        let ledger = &guard.0;
        let record = ledger.by_key.get(key)?;
        matches!(record.request, Request::Authorise { .. })
            .then_some(())
            .and(record.payment_id.as_ref())
            .and_then(|id| ledger.payments.get(id))
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Ledger, Option<Journal>)> {
        // A panic while holding the lock leaves the maps consistent (every
        // change is applied by one call after it is written), so a poisoned
        // lock is still usable.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idempotent(
        &self,
        operation: &'static str,
        key: &str,
        request: Request,
        act: impl FnOnce(&Ledger, Behaviour) -> (Reply, Option<Payment>),
    ) -> Reply {
        let behaviour = self.behaviour();
        let mut guard = self.lock();
        let (ledger, journal) = &mut *guard;
        let (reply, outcome) = match ledger.by_key.get(key) {
            Some(record) if record.request == request => (record.reply.clone(), "replayed"),
            Some(_) => {
                let problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency key reused",
                )
                .with_detail("This Idempotency-Key was used for a different request.");
                (problem.into(), "key_reused")
            }
            None if roll(behaviour.failure_percent) => {
                let problem = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "gateway-unavailable",
                    "Gateway unavailable",
                )
                .with_detail("The sandbox was told to fail this share of calls.");
                (problem.into(), "failed")
            }
            None => {
                let (reply, payment) = act(ledger, behaviour);
                let entry = Entry {
                    key: key.to_owned(),
                    request,
                    reply,
                    payment,
                };
                let written = journal.as_mut().map_or(Ok(()), |j| j.append(&entry));
                match written {
                    Ok(()) => {
                        let reply = entry.reply.clone();
                        ledger.apply(entry);
                        let outcome = if reply.status.is_success() {
                            "ok"
                        } else {
                            "refused"
                        };
                        (reply, outcome)
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot write the ledger journal; nothing recorded");
                        let problem = Problem::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "ledger-unavailable",
                            "Ledger unavailable",
                        )
                        .with_detail("The sandbox could not record the call; nothing was charged or refunded.");
                        (problem.into(), "failed")
                    }
                }
            }
        };
        drop(guard);
        self.calls
            .get_or_create(&CallLabels { operation, outcome })
            .inc();
        reply
    }
}

fn roll(percent: u8) -> bool {
    percent > 0 && fastrand::u8(0..100) < percent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(behaviour: Behaviour) -> Gateway {
        Gateway::new(behaviour, &mut Registry::default())
    }

    #[test]
    fn a_retried_authorisation_is_answered_from_the_record() {
        let pg = gateway(Behaviour::default());
        let first = pg.authorise("k1", "20261122-000001", 18_000);
        let again = pg.authorise("k1", "20261122-000001", 18_000);
        assert_eq!(first.status, StatusCode::CREATED);
        assert_eq!(first, again);
        assert_eq!(pg.lock().0.payments.len(), 1);
    }

    #[test]
    fn a_key_reused_for_another_request_is_refused() {
        let pg = gateway(Behaviour::default());
        pg.authorise("k1", "20261122-000001", 18_000);
        let other = pg.authorise("k1", "20261122-000001", 19_000);
        assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn declines_are_recorded_and_cannot_be_refunded() {
        let pg = gateway(Behaviour {
            decline_percent: 100,
            ..Behaviour::default()
        });
        let reply = pg.authorise("k1", "o1", 1_000);
        assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
        let payment = pg.payment_by_key("k1").expect("declines are recorded");
        assert_eq!(payment.status, PaymentStatus::Declined);
        assert_eq!(
            pg.refund("r1", &payment.payment_id).status,
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn failures_record_nothing_so_a_retry_can_succeed() {
        let pg = gateway(Behaviour {
            failure_percent: 100,
            ..Behaviour::default()
        });
        assert_eq!(
            pg.authorise("k1", "o1", 1_000).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(pg.payment_by_key("k1").is_none());
        pg.set_behaviour(Behaviour::default());
        assert_eq!(pg.authorise("k1", "o1", 1_000).status, StatusCode::CREATED);
    }

    #[test]
    fn refunding_twice_refunds_once() {
        let pg = gateway(Behaviour::default());
        pg.authorise("k1", "o1", 1_000);
        let id = pg.payment_by_key("k1").expect("approved").payment_id;
        assert_eq!(pg.refund("r1", &id).status, StatusCode::OK);
        assert_eq!(pg.refund("r2", &id).status, StatusCode::OK);
        assert_eq!(
            pg.payment(&id).expect("exists").status,
            PaymentStatus::Refunded
        );
        assert_eq!(pg.refund("r3", "pay_unknown").status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn behaviour_is_validated() {
        assert!(Behaviour::default().validate().is_ok());
        for bad in [
            Behaviour {
                decline_percent: 101,
                ..Behaviour::default()
            },
            Behaviour {
                failure_percent: 200,
                ..Behaviour::default()
            },
            Behaviour {
                latency_ms: 120_001,
                ..Behaviour::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
