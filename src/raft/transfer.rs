//! Leadership transfer (etcd's MoveLeader), which openraft 0.9 does not have.
//!
//! A follower grants its vote only once it has not heard from a leader for an election timeout
//! (its leader lease), so the leader makes one caught-up follower win like this: it stops
//! taking requests (they retry and find the new leader), asks the other followers to hold
//! their elections, stops its heartbeats, waits out the leases, and tells the chosen follower
//! to campaign. Whatever happens, it resumes heartbeats and lets everyone campaign again.
//! Requests stall for about one election, as in any leader change.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::node::Node;
use super::NodeId;
use crate::pb;
use crate::{Error, Result};

/// How long the chosen follower gets to win once it campaigns.
const CAMPAIGN_PATIENCE_ELECTIONS: u32 = 3;

impl Node {
    /// Hands leadership to `target`; runs on the leader (other members forward it).
    pub async fn move_leader(&self, target: NodeId) -> Result<()> {
        self.ensure_leading()?;
        if target == self.id {
            return Ok(());
        }
        let voters: BTreeSet<NodeId> = self.members().into_iter().filter(|(_, (_, v))| *v).map(|(id, _)| id).collect();
        if !voters.contains(&target) {
            return Err(Error::BadLeaderTransferee);
        }
        self.wait_caught_up(target).await?;
        let others: Vec<NodeId> = voters.iter().copied().filter(|id| *id != self.id && *id != target).collect();
        self.transferring.store(true, Ordering::SeqCst);
        let result = self.hand_over(target, &others).await;
        self.raft.runtime_config().heartbeat(true);
        self.raft.runtime_config().elect(true);
        for peer in &others {
            let _ = self.hold_elections(*peer, false).await;
        }
        self.transferring.store(false, Ordering::SeqCst);
        result
    }

    async fn hand_over(&self, target: NodeId, others: &[NodeId]) -> Result<()> {
        for peer in others {
            self.hold_elections(*peer, true).await?;
        }
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        // Let every follower's leader lease run out, so that they grant the target's vote.
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        tokio::time::sleep(lease + Duration::from_millis(self.raft.config().heartbeat_interval)).await;
        let mut client = self.peers.client(target, &self.peer_node(target)?)?;
        client.campaign(pb::ReadIndexRequest { header: Some(self.peers.header(target)) }).await?;
        let patience = lease * CAMPAIGN_PATIENCE_ELECTIONS;
        let mut metrics = self.raft.metrics();
        let won = tokio::time::timeout(patience, metrics.wait_for(|m| m.current_leader == Some(target))).await;
        match won {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::Timeout),
        }
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
                return Err(Error::Timeout);
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
