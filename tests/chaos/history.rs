//! What the chaos clients did, as the checker reads it: every operation with when it was invoked,
//! when it completed, and what it was told; and the store's history read back at the end.

use serde::Serialize;

/// A request a client sent. Every put carries a value no other put carries, so the history can
/// say which request wrote what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Call {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// `if mod_revision(key) == expect { put key value } else { get key }`: a compare-and-set.
    Cas {
        key: String,
        expect: i64,
        value: String,
    },
    /// One txn putting several keys at one revision, all or none.
    MultiPut {
        puts: Vec<(String, String)>,
    },
}

impl Call {
    /// The keys this call touches and the values it writes to them (None: a read or a delete).
    pub fn changes(&self) -> Vec<(&str, Option<&str>)> {
        match self {
            Call::Get { key } | Call::Delete { key } => vec![(key, None)],
            Call::Put { key, value } | Call::Cas { key, value, .. } => vec![(key, Some(value))],
            Call::MultiPut { puts } => puts.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))).collect(),
        }
    }

    /// The key of a single-key call (a multi-put's first key).
    pub fn key(&self) -> &str {
        self.changes()[0].0
    }

    /// The value this call writes first, if it writes any: every value is written once, so it
    /// names the call's change in the history.
    pub fn value(&self) -> Option<&str> {
        self.changes()[0].1
    }
}

/// A key's value and mod revision as a read saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub value: String,
    pub mod_revision: i64,
}

/// What a client was told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// A linearizable get at store revision `revision`.
    Got { revision: i64, kv: Option<Seen> },
    /// A put at `revision`.
    Put { revision: i64 },
    /// A delete that removed `deleted` keys; at its own revision if it removed one.
    Deleted { revision: i64, deleted: i64 },
    /// A compare-and-set: written at `revision`, or not, reading `kv` at `revision`.
    Cas { revision: i64, succeeded: bool, kv: Option<Seen> },
    /// No answer (a timeout, a lost connection, an error): it may or may not have taken effect.
    Unknown,
}

impl Outcome {
    /// The revision the answer carries, if it came.
    pub fn revision(&self) -> Option<i64> {
        match self {
            Outcome::Got { revision, .. }
            | Outcome::Put { revision }
            | Outcome::Deleted { revision, .. }
            | Outcome::Cas { revision, .. } => Some(*revision),
            Outcome::Unknown => None,
        }
    }
}

/// One operation of one client. Times are microseconds since the run started.
#[derive(Clone, Debug, Serialize)]
pub struct Op {
    pub client: usize,
    pub call: Call,
    pub invoked: u64,
    /// None when no answer came: the operation may take effect at any time after `invoked`.
    pub completed: Option<u64>,
    pub outcome: Outcome,
}

impl Op {
    /// Whether the answer says this operation changed the store.
    pub fn writes(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Put { .. } | Outcome::Cas { succeeded: true, .. } | Outcome::Deleted { deleted: 1.., .. }
        )
    }

    /// The value this operation was told it wrote (a put, a multi-put, a compare-and-set that
    /// succeeded), which names its change.
    pub fn acknowledged_write(&self) -> Option<&str> {
        match self.outcome {
            Outcome::Put { .. } | Outcome::Cas { succeeded: true, .. } => self.call.value(),
            _ => None,
        }
    }
}

/// One change of the store's history, as a watch from revision 1 reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub revision: i64,
    pub key: String,
    /// None for a deletion.
    pub value: Option<String>,
}

/// An event as a watcher received it, with its prev_kv's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Watched {
    pub event: Event,
    pub prev: Option<String>,
}
