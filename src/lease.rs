//! Lease expiry: decided by the leader's clock, carried out through Raft.
//!
//! The state machine knows which leases exist, their granted TTL and their keys; it knows
//! nothing of time. The leader keeps a deadline per lease here and, when one passes, proposes
//! a revoke, which deletes the lease's keys in one revision. Deadlines live only in the leader's
//! memory: a new leader starts every lease's countdown afresh, plus an election timeout (etcd's
//! rule), so a failover never expires a lease early; it can only make one live up to a TTL and
//! an election timeout longer. The state machine tells the lessor of every grant and revoke it
//! applies, on whichever member took the request, so a lease revoked and granted again under
//! the same ID never inherits the old lease's countdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::pb::{self, command};
use crate::raft::node::Node;
use crate::Error;

/// How often the leader looks for expired leases (etcd checks every 500 ms too).
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Deadlines of the leases this member has seen while leading. Clones share the deadlines: the
/// node counts them down, the state machine forgets those of leases it grants or revokes.
#[derive(Default, Clone)]
pub struct Lessor {
    countdowns: Arc<Mutex<Countdowns>>,
}

#[derive(Default)]
struct Countdowns {
    deadlines: HashMap<i64, Instant>,
    /// The term whose leadership last restarted the countdowns.
    promoted_in: Option<u64>,
}

impl Lessor {
    fn countdowns(&self) -> std::sync::MutexGuard<'_, Countdowns> {
        self.countdowns.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A keepalive: restarts the countdown and returns true, unless the deadline has passed
    /// already. An expired lease is not brought back: its revoke is due (or on its way), and the
    /// keepalive is answered TTL 0, as etcd answers it.
    pub fn keep_alive(&self, id: i64, ttl_seconds: i64) -> bool {
        let now = Instant::now();
        let mut countdowns = self.countdowns();
        let deadlines = &mut countdowns.deadlines;
        if deadlines.get(&id).is_some_and(|deadline| *deadline <= now) {
            return false;
        }
        deadlines.insert(id, now + ttl(ttl_seconds));
        true
    }

    /// Time left before the lease expires; a lease not seen yet has its whole TTL.
    pub fn remaining(&self, id: i64, ttl_seconds: i64) -> Duration {
        let deadline = *self.countdowns().deadlines.entry(id).or_insert_with(|| Instant::now() + ttl(ttl_seconds));
        deadline.saturating_duration_since(Instant::now())
    }

    /// Sorts leases (ID and TTL) soonest deadline first, as etcd lists them; a lease whose
    /// countdown has not started yet counts from now.
    pub fn sort_by_expiry(&self, leases: &mut [(i64, i64)]) {
        let now = Instant::now();
        let countdowns = self.countdowns();
        let deadlines = &countdowns.deadlines;
        leases.sort_by_key(|&(id, seconds)| (deadlines.get(&id).copied().unwrap_or(now + ttl(seconds)), id));
    }

    /// Drops a lease's countdown: it was revoked, or granted anew (its countdown starts when
    /// the leader next looks at it, in full).
    pub fn forget(&self, id: i64) {
        self.countdowns().deadlines.remove(&id);
    }

    /// Whether the countdowns were restarted for the leadership of `term`.
    pub fn promoted_in(&self, term: u64) -> bool {
        self.countdowns().promoted_in == Some(term)
    }

    /// This member leads in `term`: every lease's countdown restarts at its TTL plus `extension`
    /// (an election timeout), as etcd's `lessor.Promote` extends them, so that a failover costs
    /// no lease whose keepalive was on its way to the old leader. Once per term: a second call
    /// would undo the keepalives and expiries counted since the first.
    pub fn promote(&self, term: u64, leases: &[(i64, i64)], extension: Duration) {
        let now = Instant::now();
        let mut countdowns = self.countdowns();
        if countdowns.promoted_in == Some(term) {
            return;
        }
        countdowns.deadlines = leases.iter().map(|&(id, seconds)| (id, now + ttl(seconds) + extension)).collect();
        countdowns.promoted_in = Some(term);
    }

    /// Given every lease that exists (ID and TTL), starts countdowns for new ones, drops
    /// revoked ones, and returns those whose deadline has passed.
    pub fn expired(&self, leases: &[(i64, i64)]) -> Vec<i64> {
        let now = Instant::now();
        let mut countdowns = self.countdowns();
        let deadlines = &mut countdowns.deadlines;
        let existing: HashMap<i64, i64> = leases.iter().copied().collect();
        deadlines.retain(|id, _| existing.contains_key(id));
        let mut expired = Vec::new();
        for (&id, &ttl_seconds) in &existing {
            let deadline = *deadlines.entry(id).or_insert_with(|| now + ttl(ttl_seconds));
            if deadline <= now {
                expired.push(id);
            }
        }
        expired.sort_unstable();
        expired
    }
}

/// Runs on every member; while it leads, revokes expired leases through Raft.
pub async fn expire_leases(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
    // Leadership changes show in the server metrics: a new leader restarts the countdowns at
    // once, not up to a tick later (its lease calls would do it first if one came sooner).
    let mut metrics = node.raft.server_metrics();
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        if crate::faults::enabled("idle-lease-expiry") {
            continue;
        }
        match node.ensure_leading_leases() {
            Ok(()) => {}
            Err(Error::NotLeader) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the leases to restart their countdowns; will retry");
                continue;
            }
        }
        if let Err(e) = revoke_expired(&node).await {
            tracing::warn!(error = %e, "could not revoke expired leases; will retry");
        }
    }
}

async fn revoke_expired(node: &Node) -> crate::Result<()> {
    let leases = node.kv.leases()?;
    for id in node.lessor.expired(&leases) {
        let revoke = command::Op::LeaseRevoke(pb::LeaseRevokeRequest { id });
        match node.propose(pb::Command::from(revoke)).await {
            Ok(_) => tracing::debug!(lease = format!("{id:x}"), "lease expired and was revoked"),
            Err(Error::LeaseNotFound) => {}
            Err(e) => return Err(e),
        }
        node.lessor.forget(id);
    }
    Ok(())
}

fn ttl(seconds: i64) -> Duration {
    Duration::from_secs(seconds.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leases_expire_after_their_ttl_unless_renewed() {
        let lessor = Lessor::default();
        let leases = [(1, 5), (2, 5)];
        assert!(lessor.expired(&leases).is_empty());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(lessor.keep_alive(2, 5));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(lessor.expired(&leases), [1]);
        assert_eq!(lessor.remaining(2, 5), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_keepalive_after_the_deadline_does_not_bring_the_lease_back() {
        let lessor = Lessor::default();
        let leases = [(3, 2)];
        assert!(lessor.keep_alive(3, 2), "a countdown not started yet starts");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(lessor.keep_alive(3, 2));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!lessor.keep_alive(3, 2), "renewed after its deadline");
        assert_eq!(lessor.expired(&leases), [3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_restarts_every_countdown_with_an_election_timeout_more() {
        let lessor = Lessor::default();
        let leases = [(7, 2)];
        lessor.expired(&leases);
        tokio::time::advance(Duration::from_secs(1)).await;
        lessor.promote(1, &leases, Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(2500)).await;
        assert!(lessor.expired(&leases).is_empty(), "expired early after a leadership change");
        assert_eq!(lessor.remaining(7, 2), Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(lessor.expired(&leases), [7]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leadership_restarts_the_countdowns_once() {
        let lessor = Lessor::default();
        let leases = [(7, 2)];
        lessor.promote(4, &leases, Duration::from_secs(1));
        assert!(lessor.promoted_in(4) && !lessor.promoted_in(5));
        tokio::time::advance(Duration::from_secs(2)).await;
        lessor.promote(4, &leases, Duration::from_secs(1));
        assert_eq!(lessor.remaining(7, 2), Duration::from_secs(1), "extended twice in one term");
        lessor.promote(5, &leases, Duration::from_secs(1));
        assert_eq!(lessor.remaining(7, 2), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn leases_are_listed_soonest_expiry_first() {
        let lessor = Lessor::default();
        lessor.expired(&[(1, 10), (2, 30)]);
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(lessor.keep_alive(1, 10));
        // Deadlines: 1 at 18 s, 2 at 30 s, 3 (not counted down yet) at 8 + 5 s.
        let mut leases = [(2, 30), (1, 10), (3, 5)];
        lessor.sort_by_expiry(&mut leases);
        assert_eq!(leases, [(3, 5), (1, 10), (2, 30)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_granted_again_under_its_id_gets_a_fresh_countdown() {
        let lessor = Lessor::default();
        lessor.expired(&[(9, 2)]);
        tokio::time::advance(Duration::from_millis(1900)).await;
        // Revoked and granted again: the state machine forgets the old countdown.
        lessor.forget(9);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(lessor.expired(&[(9, 2)]).is_empty(), "expired at the old lease's deadline");
        assert_eq!(lessor.remaining(9, 2), Duration::from_secs(2));
    }
}
