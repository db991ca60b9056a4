//! What became of the writes this member forwarded to its leader.
//!
//! A forward whose connection broke part way (the leader died, or stopped, mid-call) may or may
//! not have been committed. Answering "request timed out" tells a client the truth, but only
//! half of it; sending the write again could apply it twice. Instead the follower finds out:
//!
//! - A forwarded command carries a [`pb::Origin`]: this member, the term of the leader it was
//!   sent to, and a sequence number unique to this process.
//! - The state machine applies a forwarded command only in an entry of its origin's term,
//!   refusing it as "not leader" otherwise, changing nothing. Only that term's leader makes
//!   entries of that term, so a leader that lost and regained leadership with the command still
//!   queued cannot apply it later.
//! - So once this member has applied an entry of a later term, every committed entry of the
//!   forward's term precedes it and has been applied here, and no other can be committed any
//!   more: the command's result was delivered here, or it can be sent again. (A read index from
//!   a later term's leader would not do: it may rest on that leader's first entry before it is
//!   committed, and a third leader may then commit older entries past it.)
//! - Each apply hands the results of the commands this member waits for to their waiters, once
//!   the apply is in the store and before openraft hears of it. A snapshot install applies
//!   entries without looking at them, so it tells every waiter that its outcome is unknown.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::pb;

/// What this member learnt about a forwarded command from its own applies.
#[derive(Debug)]
pub enum Outcome {
    /// Applied here, with this result (the leader's, as the state machine is deterministic).
    Applied(pb::CommandResult),
    /// Perhaps applied, within a snapshot installed here.
    Unknown,
}

type Key = (u64, u64);

/// The forwards this member waits to hear about, shared by its [`crate::raft::node::Node`] and
/// its state machine.
#[derive(Clone)]
pub struct Outcomes {
    next_sequence: Arc<AtomicU64>,
    waiting: Arc<Mutex<HashMap<Key, oneshot::Sender<Outcome>>>>,
}

impl Default for Outcomes {
    fn default() -> Outcomes {
        // Entries forwarded before a restart may be applied again after it: a random start keeps
        // their sequence numbers from meeting this process's.
        let start = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Outcomes { next_sequence: Arc::new(AtomicU64::new(start)), waiting: Arc::default() }
    }
}

impl Outcomes {
    /// Starts waiting for a command `member` forwards to the leader of `term`.
    pub fn register(&self, member: u64, term: u64) -> Waiter {
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
        let origin = pb::Origin { member, term, sequence };
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(key(&origin), sender);
        Waiter { origin, receiver, outcomes: self.clone() }
    }

    /// Whether a command from `origin` is waited for here.
    pub fn awaits(&self, origin: &pb::Origin) -> bool {
        self.lock().contains_key(&key(origin))
    }

    /// Hands applied results to their waiters. Called once the apply is in the store.
    pub fn deliver(&self, applied: Vec<(pb::Origin, pb::CommandResult)>) {
        let mut waiting = self.lock();
        for (origin, result) in applied {
            if let Some(waiter) = waiting.remove(&key(&origin)) {
                let _ = waiter.send(Outcome::Applied(result));
            }
        }
    }

    /// Tells every waiter that its command may have been applied unseen: a snapshot was installed.
    pub fn forget_all(&self) {
        for (_, waiter) in self.lock().drain() {
            let _ = waiter.send(Outcome::Unknown);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, oneshot::Sender<Outcome>>> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn key(origin: &pb::Origin) -> Key {
    (origin.member, origin.sequence)
}

/// One forwarded command's wait; dropping it stops waiting.
pub struct Waiter {
    origin: pb::Origin,
    receiver: oneshot::Receiver<Outcome>,
    outcomes: Outcomes,
}

impl Waiter {
    pub fn origin(&self) -> pb::Origin {
        self.origin
    }

    /// What this member's applies have told about the command so far.
    pub fn outcome(&mut self) -> Option<Outcome> {
        self.receiver.try_recv().ok()
    }

    /// Waits until this member's applies tell about the command.
    pub async fn applied(&mut self) -> Outcome {
        // The registry drops a sender unsent only when it is itself dropped, with its member.
        (&mut self.receiver).await.unwrap_or(Outcome::Unknown)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.outcomes.lock().remove(&key(&self.origin));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_result(revision: i64) -> pb::CommandResult {
        let header = pb::ResponseHeader { revision, ..Default::default() };
        let put = pb::PutResponse { header: Some(header), prev_kv: None };
        pb::CommandResult { result: Some(pb::command_result::Result::Put(put)) }
    }

    #[test]
    fn an_applied_command_reaches_its_waiter_only() {
        let outcomes = Outcomes::default();
        let mut first = outcomes.register(1, 5);
        let mut second = outcomes.register(1, 5);
        assert_ne!(first.origin().sequence, second.origin().sequence);
        assert!(outcomes.awaits(&first.origin()));
        let elsewhere = pb::Origin { member: 2, ..first.origin() };
        assert!(!outcomes.awaits(&elsewhere), "another member's forward with the same number");
        outcomes.deliver(vec![(first.origin(), put_result(7)), (elsewhere, put_result(8))]);
        assert!(matches!(first.outcome(), Some(Outcome::Applied(result)) if result == put_result(7)));
        assert!(second.outcome().is_none());
    }

    #[test]
    fn an_installed_snapshot_leaves_every_waiter_unsure() {
        let outcomes = Outcomes::default();
        let mut waiter = outcomes.register(1, 5);
        outcomes.forget_all();
        assert!(matches!(waiter.outcome(), Some(Outcome::Unknown)));
        assert!(!outcomes.awaits(&waiter.origin()));
    }

    #[test]
    fn a_dropped_waiter_is_no_longer_awaited() {
        let outcomes = Outcomes::default();
        let origin = outcomes.register(1, 5).origin();
        assert!(!outcomes.awaits(&origin));
    }
}
