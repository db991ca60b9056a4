//! Leadership transfer (etcd's MoveLeader), which openraft 0.9 does not have.
//!
//! A follower grants its vote only once it has not heard from a leader for an election timeout
//! (its leader lease), so the leader makes one caught-up follower win like this: it stops
//! taking requests (they retry and find the new leader), asks the other followers to hold
//! their elections, stops its heartbeats, waits out the leases, and tells the chosen follower
//! to campaign. Whatever happens, it resumes heartbeats and lets everyone campaign again.
//! Requests stall for about one election, as in any leader change.
//!
//! Invariants: a transfer runs in a task of its own, so a caller that gives up (a client's
//! deadline, a stopping member's time limit) never cuts it off between switching elections off
//! and on again; transfers run one at a time; and a follower holds its elections for at most
//! [`hold_limit`], so one whose leader died part way campaigns again.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::node::Node;
use super::NodeId;
use crate::pb;
use crate::{Error, Result};

/// How long the chosen follower gets to win once it campaigns.
const CAMPAIGN_PATIENCE_ELECTIONS: u32 = 3;

/// The longest a follower holds its elections for a transfer: longer than any transfer takes
/// (the leases waited out, then the campaign's patience), in its own election timeouts.
pub fn hold_limit(election_timeout_max: Duration) -> Duration {
    election_timeout_max * (CAMPAIGN_PATIENCE_ELECTIONS + 3)
}

impl Node {
    /// Hands leadership to `target`; runs on the leader (other members forward it).
    pub async fn move_leader(self: &Arc<Self>, target: NodeId) -> Result<()> {
        let node = self.clone();
        tokio::spawn(async move { node.transfer(target).await })
            .await
            .map_err(|e| Error::Internal(format!("leader transfer: {e}")))?
    }

    async fn transfer(&self, target: NodeId) -> Result<()> {
        // A client whose deadline cut it off retries: it waits for the transfer it started.
        let _one_at_a_time = self.transfers.lock().await;
        if target == self.id || self.raft.metrics().borrow().current_leader == Some(target) {
            return Ok(());
        }
        self.ensure_leading()?;
        let voters: BTreeSet<NodeId> = self.members().into_iter().filter(|(_, (_, v))| *v).map(|(id, _)| id).collect();
        if !voters.contains(&target) {
            return Err(Error::BadLeaderTransferee);
        }
        self.wait_caught_up(target).await?;
        let others: Vec<NodeId> = voters.iter().copied().filter(|id| *id != self.id && *id != target).collect();
        self.transferring.store(true, Ordering::SeqCst);
        let result = self.hand_over(target, &others).await;
        self.raft.runtime_config().heartbeat(true);
        self.set_own_elections(true);
        for peer in &others {
            let _ = tokio::time::timeout(self.request_timeout(), self.hold_elections(*peer, false)).await;
        }
        self.transferring.store(false, Ordering::SeqCst);
        result
    }

    async fn hand_over(&self, target: NodeId, others: &[NodeId]) -> Result<()> {
        for peer in others {
            self.hold_elections(*peer, true).await?;
        }
        tracing::info!(
            target = format!("{target:x}"),
            "handing leadership over: the other voters hold their elections"
        );
        self.raft.runtime_config().heartbeat(false);
        self.set_own_elections(false);
        // Let every follower's leader lease run out, so that they grant the target's vote.
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        tokio::time::sleep(lease + Duration::from_millis(self.raft.config().heartbeat_interval)).await;
        let mut client = self.peers.client(target, &self.peer_node(target)?)?;
        let campaign = client.campaign(pb::ReadIndexRequest { header: Some(self.peers.header(target)) }).await;
        if let Err(status) = campaign {
            // etcd's leader cannot tell either: its message to the target is lost, and it times out.
            tracing::warn!(target = format!("{target:x}"), error = %status, "the transfer's target did not campaign");
            return Err(Error::LeaderTransferTimeout);
        }
        let patience = lease * CAMPAIGN_PATIENCE_ELECTIONS;
        let mut metrics = self.raft.metrics();
        let won = tokio::time::timeout(patience, metrics.wait_for(|m| m.current_leader == Some(target))).await;
        match won {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::LeaderTransferTimeout),
        }
    }

    /// On a follower, asked by its leader: holds its own elections, or resumes them. A hold
    /// ends by itself after [`hold_limit`], in case the leader died before resuming them.
    pub fn hold_own_elections(self: &Arc<Self>, hold: bool) {
        let generation = {
            let mut holds = self.lock_election_holds();
            holds.generation += 1;
            holds.switch(&self.raft, !hold);
            holds.generation
        };
        if !hold {
            return;
        }
        let node = self.clone();
        let limit = hold_limit(Duration::from_millis(self.raft.config().election_timeout_max));
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            let mut holds = node.lock_election_holds();
            if holds.generation == generation {
                tracing::warn!("resuming elections: the leader that held them for a transfer did not resume them");
                holds.switch(&node.raft, true);
            }
        });
    }

    /// Waits until `target` has every entry the leader has.
    async fn wait_caught_up(&self, target: NodeId) -> Result<()> {
        let deadline = Instant::now() + self.request_timeout();
        let mut metrics = self.raft.metrics();
        loop {
            let caught_up = {
                let m = metrics.borrow_and_update();
                let matched = m.replication.as_ref().and_then(|r| r.get(&target).cloned().flatten());
                matched.map(|id| id.index) >= m.last_log_index
            };
            if caught_up {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline.into(), metrics.changed()).await.is_err() {
                return Err(Error::LeaderTransferTimeout);
            }
        }
    }

    async fn hold_elections(&self, peer: NodeId, hold: bool) -> Result<()> {
        let mut client = self.peers.client(peer, &self.peer_node(peer)?)?;
        client.hold_elections(pb::HoldElectionsRequest { header: Some(self.peers.header(peer)), hold }).await?;
        Ok(())
    }

    /// Whether requests must wait: leadership is being handed over.
    pub fn is_transferring(&self) -> bool {
        self.transferring.load(Ordering::SeqCst)
    }

    /// Picks the voter with the most of the log to hand leadership to, for a leader that stops.
    pub fn best_successor(&self) -> Option<NodeId> {
        let metrics = self.raft.metrics().borrow().clone();
        let replication = metrics.replication?;
        self.members()
            .into_iter()
            .filter(|(id, (_, is_voter))| *is_voter && *id != self.id)
            .filter_map(|(id, _)| replication.get(&id).cloned().flatten().map(|matched| (matched.index, id)))
            .max()
            .map(|(_, id)| id)
    }
}
