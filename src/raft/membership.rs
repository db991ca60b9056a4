//! Membership changes, as etcd's Cluster service describes them, carried out with openraft on
//! the leader (other members forward them).
//!
//! - An added voter joins as a Raft learner marked `voter`, and the leader promotes it once it
//!   has caught up ([`complete_membership_changes`]). Unlike etcd, an empty member never counts
//!   toward the quorum, so adding one cannot make the cluster unavailable.
//! - A new member ID is derived as etcd derives it (peer URLs, cluster token, the time), and is
//!   never one the cluster has used: removed IDs are tombstoned by the state machine.
//! - A removal that would leave fewer started, or fewer reachable, voters than a quorum is
//!   refused, as etcd's `--strict-reconfig-check` does.
//! - openraft changes voters in two steps, through a joint configuration; the leader finishes a
//!   change left between them ([`complete_membership_changes`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tokio::sync::watch;

use super::node::Node;
use super::{Members, NodeId, PeerNode};
use crate::kv::MemberAttributes;
use crate::pb::{self, membership_change::Change};
use crate::{Error, Result};

/// etcd allows one learner (that is not on its way to being a voter) at a time.
const MAX_LEARNERS: usize = 1;
/// etcd's rule: a learner is in sync once it has 90% of the leader's log.
const IN_SYNC_FRACTION: f64 = 0.9;
/// How often the leader looks for members to promote.
const PROMOTION_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Between retries of a change while another is still in progress.
const CHANGE_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Members as etcd lists them, from the Raft configuration (with whether each votes) and the
/// names and client URLs members published.
pub fn describe_members(members: Members, attributes: &BTreeMap<NodeId, MemberAttributes>) -> Vec<pb::Member> {
    members
        .into_iter()
        .map(|(id, (node, is_voter))| {
            let attrs = attributes.get(&id);
            pb::Member {
                id,
                // A member that has not published its attributes has no name, as in etcd.
                name: attrs.map(|a| a.name.clone()).unwrap_or_default(),
                is_learner: node.is_learner(is_voter),
                peer_ur_ls: node.peer_urls,
                client_ur_ls: attrs.map(|a| a.client_urls.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

impl Node {
    /// Runs a membership change on the leader, forwarding it there if needed.
    pub async fn change_members(&self, change: Change) -> Result<pb::MembershipChanged> {
        self.with_leader(|leader| {
            let change = change.clone();
            async move {
                if leader == self.id {
                    self.change_members_local(change).await
                } else {
                    let mut client = self.peers.client(leader, &self.peer_node(leader)?)?;
                    let request =
                        pb::MembershipChange { header: Some(self.peers.header(leader)), change: Some(change) };
                    Ok(client.change_members(request).await?.into_inner())
                }
            }
        })
        .await
    }

    pub async fn change_members_local(&self, change: Change) -> Result<pb::MembershipChanged> {
        self.ensure_leading()?;
        // Two adds of one peer URL at once would otherwise both pass the check.
        let _one_at_a_time = self.membership_changes.lock().await;
        let members = self.configuration().await?;
        let (added, changes) = match change {
            Change::Add(req) => {
                let (id, node) = self.new_member(req, &members)?;
                (Some(id), ChangeMembers::AddNodes(BTreeMap::from([(id, node)])))
            }
            Change::Remove(req) => (None, self.removal(req.id, &members)?),
            Change::Update(req) => (None, self.update(req, &members)?),
            Change::Promote(req) => (None, self.promotion(req.id, &members)?),
        };
        let configuration = self.commit_change(changes).await?;
        // The answer lists the configuration the change committed, not the one in openraft's
        // metrics: those catch up after the change returns, and a member added but missing from
        // its own answer would take ID 0 (`phoenix --join`).
        let members = describe_members(configuration, &self.known_attributes()?);
        let member = match added {
            Some(id) => Some(members.iter().find(|m| m.id == id).cloned().ok_or_else(|| {
                Error::Internal(format!("member {id:x} is missing from the configuration that added it"))
            })?),
            None => None,
        };
        Ok(pb::MembershipChanged { member, members })
    }

    /// Every member as etcd lists it: voters, learners, and members on their way to voting
    /// (listed as voters, as etcd lists an added member that has not started). Refused while a
    /// snapshot install replaces the store, which holds the names and client URLs (MemberList
    /// waits the install out).
    pub async fn member_list(&self) -> Result<Vec<pb::Member>> {
        Ok(describe_members(self.configuration().await?, &self.kv.members()?))
    }

    /// Like [`Node::member_list`], for the cluster's own bookkeeping (discovery, survivor
    /// reports), which must not fail while a snapshot install goes on: then without names and
    /// client URLs.
    pub async fn member_list_as_known(&self) -> Result<Vec<pb::Member>> {
        Ok(describe_members(self.configuration().await?, &self.known_attributes()?))
    }

    /// The members' names and client URLs, or none while a snapshot install hides them.
    fn known_attributes(&self) -> Result<BTreeMap<NodeId, MemberAttributes>> {
        match self.kv.members() {
            Err(Error::Installing) => Ok(BTreeMap::new()),
            known => known,
        }
    }

    /// The configuration openraft works with now (its newest, committed or not), with whether
    /// each member votes. Changes are checked against it, not against openraft's metrics: those
    /// lag a change that has just returned, and a removal right after an add found no member.
    async fn configuration(&self) -> Result<Members> {
        let newest =
            |state: &openraft::RaftState<NodeId, PeerNode, _>| state.membership_state.effective().membership().clone();
        let membership = self.raft.with_raft_state(newest).await.map_err(|_| Error::Stopped)?;
        Ok(super::membership_with_votes(&membership))
    }

    fn new_member(&self, req: pb::MemberAddRequest, members: &Members) -> Result<(NodeId, PeerNode)> {
        let peer_urls = checked_peer_urls(&req.peer_ur_ls)?;
        if members.values().any(|(node, _)| node.peer_urls.iter().any(|u| peer_urls.contains(u))) {
            return Err(Error::PeerUrlExists);
        }
        let learners = members.values().filter(|(node, is_voter)| node.is_learner(*is_voter)).count();
        if req.is_learner && learners >= MAX_LEARNERS {
            return Err(Error::TooManyLearners);
        }
        let id = self.unused_member_id(&peer_urls, members)?;
        Ok((id, PeerNode { name: String::new(), peer_urls, voter: !req.is_learner }))
    }

    /// etcd's ID for a member added at runtime: its peer URLs, the token and the time; skipping
    /// any ID the cluster has ever used, so two incarnations can never be confused.
    fn unused_member_id(&self, peer_urls: &[String], members: &Members) -> Result<NodeId> {
        let removed = self.kv.removed_members()?;
        let token = &self.raft.config().cluster_name;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        (now..)
            .map(|seconds| crate::cluster::added_member_id(peer_urls, token, seconds))
            .find(|id| *id != 0 && !members.contains_key(id) && !removed.contains(id))
            .ok_or(Error::MemberExists)
    }

    fn removal(&self, id: NodeId, members: &Members) -> Result<ChangeMembers<NodeId, PeerNode>> {
        let (_, is_voter) = members.get(&id).ok_or(Error::MemberNotFound)?;
        if !is_voter {
            return Ok(ChangeMembers::RemoveNodes(BTreeSet::from([id])));
        }
        // etcd's two checks: enough of the remaining voters have ever started (published
        // their names), and enough are connected now.
        let remaining: Vec<NodeId> = members.iter().filter(|(m, (_, v))| *v && **m != id).map(|(m, _)| *m).collect();
        let quorum = remaining.len() / 2 + 1;
        let named = self.known_attributes()?;
        if remaining.iter().filter(|m| named.get(*m).is_some_and(|a| !a.name.is_empty())).count() < quorum {
            return Err(Error::NotEnoughStartedMembers);
        }
        if remaining.iter().filter(|m| self.is_reachable(**m)).count() < quorum {
            return Err(Error::Unhealthy);
        }
        Ok(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
    }

    fn update(&self, req: pb::MemberUpdateRequest, members: &Members) -> Result<ChangeMembers<NodeId, PeerNode>> {
        let peer_urls = checked_peer_urls(&req.peer_ur_ls)?;
        let (node, _) = members.get(&req.id).ok_or(Error::MemberNotFound)?;
        let taken = members
            .iter()
            .any(|(id, (other, _))| *id != req.id && other.peer_urls.iter().any(|u| peer_urls.contains(u)));
        if taken {
            return Err(Error::PeerUrlExists);
        }
        let updated = PeerNode { peer_urls, ..node.clone() };
        Ok(ChangeMembers::SetNodes(BTreeMap::from([(req.id, updated)])))
    }

    fn promotion(&self, id: NodeId, members: &Members) -> Result<ChangeMembers<NodeId, PeerNode>> {
        let (node, is_voter) = members.get(&id).cloned().ok_or(Error::MemberNotFound)?;
        if is_voter {
            return Err(Error::MemberNotLearner);
        }
        // etcd checks that the member has caught up before that it is a learner: a member added
        // as a voter (listed as one, as etcd lists it; the leader promotes it once it has caught
        // up) is refused as not ready until then.
        if !self.in_sync(id) {
            return Err(Error::LearnerNotReady);
        }
        if node.voter {
            return Err(Error::MemberNotLearner);
        }
        Ok(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
    }

    /// Whether the leader has heard from `id` within an election timeout (itself always).
    fn is_reachable(&self, id: NodeId) -> bool {
        let timeout = self.election_timeout();
        id == self.id || self.peers.last_contact(id).is_some_and(|at| at.elapsed() < timeout)
    }

    /// Whether learner `id` holds at least 90% of the leader's log (etcd's readiness rule).
    fn in_sync(&self, id: NodeId) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let leader_last = metrics.last_log_index.unwrap_or(0);
        let matched = metrics.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |m| m.index);
        matched as f64 >= leader_last as f64 * IN_SYNC_FRACTION
    }

    /// Promotes member `id`, added as a voter, unless a change made since it was found ready
    /// removed or promoted it; whether it did.
    async fn promote_added_voter(&self, id: NodeId) -> Result<bool> {
        let _one_at_a_time = self.membership_changes.lock().await;
        let still_to_promote = matches!(self.configuration().await?.get(&id), Some((peer, false)) if peer.voter);
        if still_to_promote {
            // Bounded: a leader that lost its quorum would otherwise hold the lock for good.
            let promotion = self.commit_change(ChangeMembers::AddVoterIds(BTreeSet::from([id])));
            tokio::time::timeout(self.request_timeout(), promotion).await.map_err(|_| Error::Timeout)??;
        }
        Ok(still_to_promote)
    }

    /// Finishes a change left in openraft's joint configuration, unless a change in progress
    /// will; whether it did. openraft makes a change's second, uniform step in its caller's
    /// future: a caller cut off between the steps (a client's deadline, the request timeout) or
    /// a leader that died there leaves the joint configuration behind, with a removed member
    /// still listed and never fenced off.
    async fn finish_joint_configuration(&self) -> Result<bool> {
        let Ok(_one_at_a_time) = self.membership_changes.try_lock() else { return Ok(false) };
        let is_joint = |state: &openraft::RaftState<NodeId, PeerNode, _>| {
            state.membership_state.effective().membership().get_joint_config().len() > 1
        };
        if !self.raft.with_raft_state(is_joint).await.map_err(|_| Error::Stopped)? {
            return Ok(false);
        }
        // From a joint configuration, adding no voter moves to its newer half.
        let finish = self.commit_change(ChangeMembers::AddVoterIds(BTreeSet::new()));
        tokio::time::timeout(self.request_timeout(), finish).await.map_err(|_| Error::Timeout)??;
        Ok(true)
    }

    /// Commits `changes`, waiting for a change still in progress to finish first, and returns the
    /// configuration they made (with whether each member votes).
    async fn commit_change(&self, changes: ChangeMembers<NodeId, PeerNode>) -> Result<Members> {
        let deadline = Instant::now() + self.request_timeout();
        loop {
            let change = crate::faults::maybe_give_up_halfway(self.raft.change_membership(changes.clone(), false));
            let Some(outcome) = change.await else { return Err(Error::Timeout) };
            match outcome {
                // openraft answers a membership change with the configuration it committed.
                Ok(committed) => {
                    return Ok(committed
                        .membership
                        .map_or_else(|| self.members(), |m| super::membership_with_votes(&m)))
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => {
                    tokio::time::sleep(CHANGE_RETRY_BACKOFF).await;
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => return Err(Error::LeaderChanged),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::LearnerNotFound(_),
                ))) => return Err(Error::MemberNotFound),
                Err(RaftError::Fatal(_)) => return Err(Error::Stopped),
                Err(e) => return Err(Error::Internal(format!("membership change failed: {e}"))),
            }
        }
    }
}

/// Peer URLs as etcd's server takes them (`types.NewURLs`: `host:port`, no path) and as
/// Phoenix's peers speak (plain http), kept as given (trimmed), as etcd keeps them: a port
/// written out stays, even the scheme's default.
fn checked_peer_urls(urls: &[String]) -> Result<Vec<String>> {
    crate::ctl::gourl::check_urls(urls).map_err(|_| Error::MemberBadUrls)?;
    urls.iter()
        .map(|u| {
            let u = u.trim();
            if url::Url::parse(u).map_err(|_| Error::MemberBadUrls)?.scheme() != "http" {
                return Err(Error::MemberBadUrls);
            }
            Ok(u.to_string())
        })
        .collect()
}

/// Runs on every member; while it leads, finishes membership changes: one left halfway, and the
/// promotion of members added as voters once they caught up.
pub async fn complete_membership_changes(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PROMOTION_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        if node.ensure_leading().is_err() {
            continue;
        }
        match node.finish_joint_configuration().await {
            Ok(true) => tracing::info!("finished a membership change left in its joint configuration"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not finish a joint configuration; will retry"),
        }
        let ready: Vec<NodeId> = node
            .members()
            .into_iter()
            .filter(|(id, (peer, is_voter))| peer.voter && !is_voter && node.in_sync(*id))
            .map(|(id, _)| id)
            .collect();
        for id in ready {
            match node.promote_added_voter(id).await {
                Ok(true) => tracing::info!(member = format!("{id:x}"), "promoted a caught-up member to voter"),
                Ok(false) => {}
                Err(e) => tracing::warn!(member = format!("{id:x}"), error = %e, "could not promote; will retry"),
            }
        }
    }
}

/// How often a member asks a peer whether it is still a member.
const REMOVAL_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Runs on every member: asks its peers now and then whether this member was removed, and fences
/// it off if so. A removed voter also learns it when its votes are refused, but a removed
/// learner never campaigns, and the leader stops talking to a member as soon as it removes it.
/// The first check is [`removed_by_peers`], which the member runs before it serves clients.
pub async fn notice_removal(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let first = tokio::time::Instant::now() + REMOVAL_CHECK_INTERVAL;
    let mut tick = tokio::time::interval_at(first, REMOVAL_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        if let Some(reason) = removed_by_peers(&node).await {
            node.peers.fence(reason);
            return;
        }
    }
}

/// Why this member must stop, if a peer says it was removed from their cluster (a reset
/// survivor says so of every other old member). Every peer is asked at once, each for at most
/// [`REMOVAL_CHECK_INTERVAL`]: one that is stopped or hung must not keep the others from being
/// asked.
pub async fn removed_by_peers(node: &Node) -> Option<String> {
    let peers = node.members().into_iter().filter(|(id, _)| *id != node.id);
    let asks = peers.map(|(peer, (peer_node, _))| {
        tokio::time::timeout(REMOVAL_CHECK_INTERVAL, says_removed(node, peer, peer_node))
    });
    let removed = futures::future::join_all(asks).await.into_iter().any(|said| said == Ok(true));
    removed.then(|| format!("member {:x} was removed from cluster {:x}", node.id, node.cluster_id))
}

/// Whether `peer` says this member was removed from their cluster; not if it cannot be asked.
async fn says_removed(node: &Node, peer: NodeId, peer_node: PeerNode) -> bool {
    let Ok(mut client) = node.peers.client(peer, &peer_node) else { return false };
    let Ok(info) = client.cluster_info(pb::ClusterInfoRequest {}).await else { return false };
    let info = info.into_inner();
    info.cluster_id == node.cluster_id && info.removed.contains(&node.id)
}
