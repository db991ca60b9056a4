//! Two gaps in openraft 0.9's election timer, filled from outside it.
//!
//! - A candidate that loses a vote to a longer log adds a backoff of two longest election
//!   timeouts to its next election, and openraft clears that mark only when its own timer next
//!   starts an election (openraft#2087, fixed after 0.9.25). A member that lost one election,
//!   often at bootstrap, and then followed a leader for days still carries it: when that leader
//!   dies it waits out the backoff on top of the leader lease and its timeout, up to four
//!   `--election-timeout`s instead of two, so a failover can outlast a client's deadline.
//!   [`campaign_when_leader_silent`] starts the election itself once openraft's own record of
//!   the leader's last message is older than openraft's timer without the backoff ever waits.
//!   It acts only on a follower of a leader: once a member has campaigned or voted, the
//!   backoff is openraft's to apply (it is right then, for a member that lost to a longer log),
//!   and [`break_split_votes`] ends a stalemate.
//! - openraft draws each member's election timeout once, so two candidates can tie in every
//!   term: [`break_split_votes`] campaigns after a random delay when no leader appears.
//!
//! Invariants: neither campaigns while a leadership transfer holds this member's elections
//! (see [`crate::raft::transfer`]; checked just before each campaign, so a hold that lands in
//! between can still see one, as openraft's own timer can); the first only on a voter that
//! follows another member. Both decide only when to campaign, which Raft's safety never depends
//! on.

use std::sync::Arc;
use std::time::Duration;

use openraft::{RaftState, ServerState};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::node::Node;
use super::{NodeId, PeerNode};

/// On a follower, campaigns when its leader has been silent past [`silence_limit`] and a random
/// share of an election timeout, which keeps two followers that last heard the same heartbeat
/// from tying.
pub async fn campaign_when_leader_silent(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let config = node.raft.config();
    let base = silence_limit(config.election_timeout_max, config.heartbeat_interval);
    let spread = node.election_timeout();
    let mut limit = base + jitter(spread);
    let mut ticks = tokio::time::interval(Duration::from_millis(config.heartbeat_interval));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticks.tick() => {}
        }
        let id = node.id;
        let Ok(Some(silence)) = node.raft.with_raft_state(move |state| leader_silence(state, id)).await else {
            continue;
        };
        if silence <= limit || node.elections_held() {
            continue;
        }
        tracing::info!(
            silent_ms = silence.as_millis() as u64,
            "the leader has been silent past every election timeout; campaigning"
        );
        limit = base + jitter(spread);
        let _ = node.raft.trigger().elect().await;
    }
}

/// How long ago openraft last heard from the leader this voter follows (when it last refreshed
/// its vote, which is what its election timer counts from); none unless it follows one.
fn leader_silence(state: &RaftState<NodeId, PeerNode, Instant>, id: NodeId) -> Option<Duration> {
    let follows = state.server_state == ServerState::Follower && state.vote_ref().is_committed();
    let votes = state.membership_state.effective().voter_ids().any(|voter| voter == id);
    let heard = state.vote_last_modified()?;
    (follows && votes).then(|| heard.elapsed())
}

/// The longest openraft's timer waits after a leader's last message when no backoff applies:
/// the leader lease and the longest election timeout (both `election_timeout_max`), and one of
/// its ticks (every 1.5 heartbeat intervals), so that this never races the timer itself.
fn silence_limit(election_timeout_max: u64, heartbeat_interval: u64) -> Duration {
    Duration::from_millis(2 * election_timeout_max + heartbeat_interval * 3 / 2)
}

/// openraft 0.9 draws each member's election timeout once, so two candidates can tie in every
/// term. When no leader appears for several election timeouts in a row, campaign after a
/// random delay.
pub async fn break_split_votes(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let election_timeout = node.election_timeout();
    // Server metrics, not the full ones: see `removed_from_membership`.
    let mut metrics = node.raft.server_metrics();
    loop {
        let leaderless = metrics.wait_for(|m| m.current_leader.is_none());
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            changed = leaderless => if changed.is_err() { return },
        }
        let patience = election_timeout * 6 + jitter(election_timeout * 2);
        let leader = tokio::time::timeout(patience, metrics.wait_for(|m| m.current_leader.is_some()));
        let found_a_leader = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            found = leader => match found {
                Ok(Ok(_)) => true,
                Ok(Err(_closed)) => return,
                Err(_patience_ran_out) => false,
            },
        };
        if !found_a_leader && !node.elections_held() {
            tracing::info!("no leader for a long time; campaigning to break a split vote");
            let _ = node.raft.trigger().elect().await;
        }
    }
}

/// A delay in [0, max): not part of any state machine decision, so the clock is a fine source.
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    max.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_silence_limit_is_past_openrafts_latest_unpenalised_election() {
        // --election-timeout 1000: lease 2 s, then a timeout under 2 s, checked every 150 ms.
        assert_eq!(silence_limit(2000, 100), Duration::from_millis(4150));
        // The backoff would add 4 s to that.
        assert!(silence_limit(2000, 100) < Duration::from_millis(2000 + 2000 + 4000));
    }
}
