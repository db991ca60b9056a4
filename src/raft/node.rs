//! One member's Raft handle, and the two paths every client request takes through it.
//!
//! Writes: [`Node::propose`] sends a command to the leader. On the leader a batcher packs the
//! commands that queue up while its one entry in flight commits into the next entry (group
//! commit), because openraft 0.9 writes and fsyncs each `client_write` on its own. On a
//! follower the command is forwarded to the leader over the peer protocol, packed in the same
//! way with the other commands that queue up while the follower's earlier forwards are in
//! flight. A forward whose answer was lost is settled from the follower's own applies
//! ([`super::outcome`]) before anything else.
//!
//! Linearizable reads: [`Node::linearize`] gets a read index from the leader (a quorum-confirmed
//! commit index; concurrent reads on the leader share one confirmation round, and concurrent
//! reads on a follower share one forwarded request) and waits until this member has applied
//! it. Only then may the caller read local state.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use tonic::transport::Channel;

use super::network::Peers;
use super::outcome::{Outcome, Outcomes, Waiter};
use super::state_machine::StateMachine;
use super::{Members, NodeId, PeerNode, Proposal, Raft};
use crate::cluster::DataDir;
use crate::config::{url_string, Config};
use crate::disk::Db;
use crate::kv::KvStore;
use crate::lease::Lessor;
use crate::pb::peer_client::PeerClient;
use crate::pb::{self, command_result, CommandResult};
use crate::{Error, Result};

/// Batches of forwarded writes a follower may have on their way to one leader at once; more
/// queue up and are packed into the next batch. (The leader's own Raft entries go one at a
/// time: see [`run_batcher`].)
const MAX_FORWARDS_IN_FLIGHT: usize = 4;
/// Upper bounds on one batch, so that an entry stays well within a peer message.
const MAX_BATCH_COMMANDS: usize = 1024;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long to wait for news about the leader before retrying a request that found none.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Election timeouts without a leader after which requests stop waiting for one and fail at
/// once with "no leader": long enough for an election (openraft randomises each member's timeout
/// up to twice the configured one) and one split-vote retry.
const ELECTIONS_BEFORE_FAILING_FAST: u32 = 3;
/// How stale the database size the write quota is checked against may be. Measuring it costs
/// several system calls (sled stats its file and lists its blob dir), which every put paid.
const DB_SIZE_MAX_AGE: Duration = Duration::from_millis(100);
/// How stale the store's size in use may be. Measuring it scans the whole store, which only
/// members whose database file has passed the quota do.
const SIZE_IN_USE_MAX_AGE: Duration = Duration::from_secs(2);

/// A measurement of the store's size in use (see [`Node::recent_size_in_use`]).
#[derive(Clone, Copy)]
struct SizeInUse {
    at: Instant,
    bytes: u64,
    /// The database file's size then.
    file_bytes: u64,
    /// The compacted revision then.
    compacted: Option<i64>,
}

struct PendingWrite {
    command: pb::Command,
    reply: oneshot::Sender<Result<CommandResult>>,
}

/// A write on a follower waiting to be forwarded to `leader`.
struct ForwardedWrite {
    leader: NodeId,
    client: PeerClient<Channel>,
    header: pb::PeerHeader,
    write: PendingWrite,
}

type PendingRead = oneshot::Sender<Result<u64>>;

/// A read on a follower waiting for a read index from `leader`.
struct ForwardedRead {
    leader: NodeId,
    client: PeerClient<Channel>,
    header: pb::PeerHeader,
    reply: PendingRead,
}

pub struct Node {
    pub id: NodeId,
    pub cluster_id: u64,
    /// This member's advertised client URLs (--advertise-client-urls), known before it has
    /// published them through Raft.
    pub client_urls: Vec<String>,
    pub raft: Raft,
    pub kv: KvStore,
    pub db: Db,
    pub(super) peers: Peers,
    writes: mpsc::Sender<PendingWrite>,
    forwarded_writes: mpsc::Sender<ForwardedWrite>,
    reads: mpsc::Sender<PendingRead>,
    forwarded_reads: mpsc::Sender<ForwardedRead>,
    request_timeout: Duration,
    /// Lease deadlines, meaningful while this member leads.
    pub lessor: Lessor,
    /// The forwards this member waits to hear about from its state machine.
    outcomes: Outcomes,
    /// Set while this leader hands leadership over: requests are refused as "not leader".
    pub(super) transferring: AtomicBool,
    /// Held by a leadership transfer from start to end (see [`crate::raft::transfer`]).
    pub(super) transfers: tokio::sync::Mutex<()>,
    /// Whether a leadership transfer holds this member's own elections, and how many holds it
    /// has been asked for (see [`Node::set_own_elections`]).
    election_holds: Mutex<ElectionHolds>,
    /// Whether the cluster listed this member as a learner when it joined (its data dir
    /// records it): what it is until the first membership that names it reaches it, also after
    /// a restart before then (see [`Node::is_learner`]).
    joined_as_learner: bool,
    /// Since when this member has known no leader it can count on (see [`Node::has_leader`]).
    leaderless_since: Mutex<Option<Instant>>,
    /// The database size and when it was measured, for [`Node::recent_db_size`].
    db_size: Mutex<Option<(Instant, u64)>>,
    /// The store's last measured size in use, for [`Node::recent_size_in_use`]; held while it
    /// is measured.
    size_in_use: tokio::sync::Mutex<Option<SizeInUse>>,
    /// Held by a membership change on this leader from its checks to its commit, so that each
    /// is checked against the configuration the one before it made.
    pub(super) membership_changes: tokio::sync::Mutex<()>,
}

/// A member's own elections: switched off while a leadership transfer holds them. Both fields
/// and openraft's switch change together, under the one lock.
#[derive(Default)]
pub(super) struct ElectionHolds {
    /// Whether this member's own elections are off.
    pub held: bool,
    /// How many holds its leaders asked for, so that a hold's time limit ends only itself.
    pub generation: u64,
}

impl ElectionHolds {
    /// Switches openraft's election timer on or off, and records it.
    pub fn switch(&mut self, raft: &Raft, on: bool) {
        self.held = !on;
        raft.runtime_config().elect(on);
    }
}

impl Node {
    pub fn new(
        raft: Raft,
        data: &DataDir,
        started_with: StartedWith,
        peers: Peers,
        state_machine: &StateMachine,
        config: &Config,
    ) -> Arc<Node> {
        let request_timeout = config.request_timeout();
        let client_urls = config.advertise_client_urls.iter().map(url_string).collect();
        let (writes, write_queue) = mpsc::channel(4 * MAX_BATCH_COMMANDS);
        let (forwarded_writes, forwarded_write_queue) = mpsc::channel(4 * MAX_BATCH_COMMANDS);
        let (reads, read_queue) = mpsc::channel(4 * MAX_BATCH_COMMANDS);
        let (forwarded_reads, forwarded_queue) = mpsc::channel(4 * MAX_BATCH_COMMANDS);
        tokio::spawn(run_batcher(raft.clone(), write_queue));
        tokio::spawn(run_forwarded_writes(forwarded_write_queue, request_timeout));
        tokio::spawn(run_read_index(raft.clone(), read_queue, started_with));
        tokio::spawn(run_forwarded_reads(forwarded_queue, request_timeout));
        Arc::new(Node {
            id: data.meta.member_id,
            cluster_id: data.meta.cluster_id,
            client_urls,
            raft,
            kv: data.kv_store(),
            db: data.db.clone(),
            peers,
            writes,
            forwarded_writes,
            reads,
            forwarded_reads,
            request_timeout,
            lessor: state_machine.lessor(),
            outcomes: state_machine.outcomes(),
            transferring: AtomicBool::new(false),
            transfers: tokio::sync::Mutex::new(()),
            election_holds: Mutex::new(ElectionHolds::default()),
            joined_as_learner: data.meta.joined_as_learner,
            leaderless_since: Mutex::new(None),
            db_size: Mutex::new(None),
            size_in_use: tokio::sync::Mutex::new(None),
            membership_changes: tokio::sync::Mutex::new(()),
        })
    }

    /// Commits `command` through Raft and returns its result; a deterministic refusal decided
    /// while applying comes back as an error.
    pub async fn propose(&self, command: pb::Command) -> Result<CommandResult> {
        self.with_leader(|leader| {
            let command = command.clone();
            async move {
                if leader == self.id {
                    self.propose_local(command).await.and_then(into_outcome)
                } else {
                    self.forward(leader, command).await
                }
            }
        })
        .await
    }

    /// Runs `attempt` against the current leader until it answers something other than "not
    /// leader" (an attempt that did nothing), within the request timeout.
    pub(super) async fn with_leader<T, F, Fut>(&self, attempt: F) -> Result<T>
    where
        F: Fn(NodeId) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        let mut metrics = self.raft.metrics();
        tokio::time::timeout_at(deadline, async {
            loop {
                let leader = self.wait_for_leader().await?;
                match attempt(leader).await {
                    Err(Error::NotLeader) => {
                        // Stale leadership news: wait for Raft to learn more, then try again.
                        let _ = tokio::time::timeout(RETRY_BACKOFF, metrics.changed()).await;
                    }
                    other => return other,
                }
            }
        })
        .await
        .unwrap_or(Err(Error::Timeout))
    }

    /// Proposes on this member, which must be the leader.
    pub async fn propose_local(&self, command: pb::Command) -> Result<CommandResult> {
        if self.is_transferring() {
            return Err(Error::NotLeader);
        }
        let (reply, result) = oneshot::channel();
        self.writes.send(PendingWrite { command, reply }).await.map_err(|_| Error::Stopped)?;
        result.await.map_err(|_| Error::Stopped)?
    }

    /// Proposes through the leader. Every failure comes back as an error, so that a leader that
    /// turned out not to be one is retried like any other.
    async fn forward(&self, leader: NodeId, mut command: pb::Command) -> Result<CommandResult> {
        let client = self.peers.client(leader, &self.peer_node(leader)?)?;
        let term = self.raft.metrics().borrow().current_term;
        let mut waiter = self.outcomes.register(self.id, term);
        command.origin = Some(waiter.origin());
        let (reply, result) = oneshot::channel();
        let write = PendingWrite { command, reply };
        let forwarded = ForwardedWrite { leader, client, header: self.peers.header(leader), write };
        self.forwarded_writes.send(forwarded).await.map_err(|_| Error::Stopped)?;
        match result.await.map_err(|_| Error::Stopped)?.and_then(into_outcome) {
            // The connection broke, the leader lost leadership or stopped under the write, or
            // the forward timed out: the write may or may not have been committed.
            Err(Error::Timeout | Error::LeaderChanged | Error::Stopped) => self.settle(&mut waiter).await,
            answer => answer,
        }
    }

    /// Finds out what became of a forward whose answer was lost: this member's applies hand it
    /// the command's result, or, once it has applied an entry of a later term, the command was
    /// never applied and never will be, and is sent again (see [`super::outcome`]). Until then,
    /// or if that takes past the request's deadline, its outcome is unknown.
    async fn settle(&self, waiter: &mut Waiter) -> Result<CommandResult> {
        let term = waiter.origin().term;
        let outcome = tokio::select! {
            outcome = waiter.applied() => Some(outcome),
            later = self.wait_applied_term_after(term) => {
                later?;
                None
            }
        };
        // An apply hands out its results before openraft hears of it, so none is missed here.
        match outcome.or_else(|| waiter.outcome()) {
            Some(Outcome::Applied(result)) => into_outcome(result),
            Some(Outcome::Unknown) => Err(Error::Timeout),
            None => Err(Error::NotLeader),
        }
    }

    /// Waits until this member has applied an entry of a term after `term`: every committed
    /// entry of `term` precedes it, so is applied too, and no other entry of `term` can be
    /// committed any more.
    async fn wait_applied_term_after(&self, term: u64) -> Result<()> {
        let mut metrics = self.raft.metrics();
        while metrics.borrow().last_applied.map_or(0, |applied| applied.leader_id.term) <= term {
            metrics.changed().await.map_err(|_| Error::Stopped)?;
        }
        Ok(())
    }

    /// Waits until a read that starts now can be served linearizably from local state.
    pub async fn linearize(&self) -> Result<()> {
        if crate::faults::enabled("stale-reads") {
            return Ok(());
        }
        let index = self
            .with_leader(|leader| async move {
                let index =
                    if leader == self.id { self.read_index().await } else { self.forward_read_index(leader).await };
                // A read index is never ambiguous: any failure to get one can be retried, within
                // the request timeout, as etcd retries its read index. That includes a round that
                // missed a quorum because an AppendEntries timed out on a loaded machine.
                match index {
                    Err(Error::LeaderChanged | Error::Timeout) => Err(Error::NotLeader),
                    other => other,
                }
            })
            .await?;
        let deadline = Instant::now() + self.request_timeout;
        tokio::time::timeout_at(deadline, self.wait_applied(index)).await.unwrap_or(Err(Error::Timeout))
    }

    /// A quorum-confirmed read index from this member, which must be the leader.
    pub async fn read_index(&self) -> Result<u64> {
        if self.is_transferring() {
            // A read-index round would renew the followers' leases and stall the handover.
            return Err(Error::NotLeader);
        }
        let (reply, index) = oneshot::channel();
        self.reads.send(reply).await.map_err(|_| Error::Stopped)?;
        index.await.map_err(|_| Error::Stopped)?
    }

    async fn forward_read_index(&self, leader: NodeId) -> Result<u64> {
        let client = self.peers.client(leader, &self.peer_node(leader)?)?;
        let (reply, index) = oneshot::channel();
        let read = ForwardedRead { leader, client, header: self.peers.header(leader), reply };
        self.forwarded_reads.send(read).await.map_err(|_| Error::Stopped)?;
        index.await.map_err(|_| Error::Stopped)?
    }

    async fn wait_applied(&self, index: u64) -> Result<()> {
        let mut metrics = self.raft.metrics();
        loop {
            if metrics.borrow().last_applied.is_some_and(|applied| applied.index >= index) {
                return Ok(());
            }
            metrics.changed().await.map_err(|_| Error::Stopped)?;
        }
    }

    /// The leader to send a request to. While there is none, waits for an election; once none
    /// has come for [`ELECTIONS_BEFORE_FAILING_FAST`] election timeouts (a lost quorum), fails at
    /// once with etcd's retryable "no leader" instead of letting every request hang.
    async fn wait_for_leader(&self) -> Result<NodeId> {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(leader) = self.usable_leader() {
                return Ok(leader);
            }
            if self.leaderless_for() >= self.leaderless_patience() {
                return Err(Error::NoLeader);
            }
            // Also re-check on a timer: a leader regaining its quorum does not change the metrics.
            let _ = tokio::time::timeout(RETRY_BACKOFF, metrics.changed()).await;
        }
    }

    /// How long this member has known no leader it can count on; zero while it knows one.
    pub fn leaderless_for(&self) -> Duration {
        let has_leader = self.has_leader();
        let mut since = self.leaderless_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match (has_leader, *since) {
            (true, _) => {
                *since = None;
                Duration::ZERO
            }
            (false, Some(since)) => since.elapsed(),
            (false, None) => {
                *since = Some(Instant::now());
                Duration::ZERO
            }
        }
    }

    /// The database's size on disk, measured at most [`DB_SIZE_MAX_AGE`] ago.
    pub fn recent_db_size(&self) -> Result<u64> {
        let lock = || self.db_size.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, size)) = *lock() {
            if at.elapsed() < DB_SIZE_MAX_AGE {
                return Ok(size);
            }
        }
        // Measured without the lock: other requests keep using the old size meanwhile.
        let size = self.kv.size_on_disk(&self.db)?;
        *lock() = Some((Instant::now(), size));
        Ok(size)
    }

    /// The bytes the store's keys and values take, given the database file's size now: measured
    /// at most [`SIZE_IN_USE_MAX_AGE`] ago and before no later compaction, plus what the file
    /// has grown by since (new records, for all this can tell). One measurement at a time:
    /// requests meanwhile wait for its result.
    pub async fn recent_size_in_use(&self, file_bytes: u64) -> Result<u64> {
        // A snapshot install hides the compacted revision; the measurement is then retaken.
        let compacted = self.kv.compacted_revision().ok();
        let mut measured = self.size_in_use.lock().await;
        if let Some(m) = *measured {
            if m.at.elapsed() < SIZE_IN_USE_MAX_AGE && compacted.is_some() && m.compacted == compacted {
                return Ok(m.bytes + file_bytes.saturating_sub(m.file_bytes));
            }
        }
        let kv = self.kv.clone();
        let bytes = crate::disk::spawn_blocking(move || kv.size_in_use())
            .await
            .map_err(|e| Error::Internal(format!("measuring the store's size: {e}")))??;
        *measured = Some(SizeInUse { at: Instant::now(), bytes, file_bytes, compacted });
        Ok(bytes)
    }

    /// `--election-timeout`: openraft's leader lease (`election_timeout_max`); each follower's own
    /// timeout is drawn from half of it up to it.
    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.raft.config().election_timeout_max)
    }

    /// How long without a leader counts as more than an election going on.
    pub fn leaderless_patience(&self) -> Duration {
        self.election_timeout() * ELECTIONS_BEFORE_FAILING_FAST
    }

    pub(super) fn peer_node(&self, id: NodeId) -> Result<PeerNode> {
        let metrics = self.raft.metrics();
        let membership = metrics.borrow().membership_config.clone();
        membership.membership().get_node(&id).cloned().ok_or(Error::NotLeader)
    }

    /// Restarts lease `id`'s countdown on the leader; answers the lease's TTL, 0 if it is unknown.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        self.with_leader(|leader| async move {
            if leader == self.id {
                self.lease_keep_alive_local(id)
            } else {
                let mut client = self.peers.client(leader, &self.peer_node(leader)?)?;
                let request = pb::LeaseForward { header: Some(self.peers.header(leader)), id, keys: false };
                Ok(client.lease_keep_alive(request).await.map_err(idempotent_failure)?.into_inner().ttl)
            }
        })
        .await
    }

    pub fn lease_keep_alive_local(&self, id: i64) -> Result<i64> {
        self.ensure_leading_leases()?;
        // A leader cut off from its quorum may have been replaced, and the new leader counts the
        // lease down: renewing here would tell the client it lives on (etcd's leader checks too).
        if !self.has_leader() {
            return Err(Error::NotLeader);
        }
        let Some(ttl) = self.kv.lease(id)? else { return Ok(0) };
        if crate::faults::enabled("lost-renewals") {
            return Ok(ttl);
        }
        Ok(if self.lessor.keep_alive(id, ttl) { ttl } else { 0 })
    }

    /// Lease `id`'s remaining and granted TTL, as the leader counts them; TTL -1 if unknown.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<pb::LeaseTimeToLiveResponse> {
        self.with_leader(|leader| async move {
            if leader == self.id {
                self.lease_time_to_live_local(id, keys)
            } else {
                let mut client = self.peers.client(leader, &self.peer_node(leader)?)?;
                let request = pb::LeaseForward { header: Some(self.peers.header(leader)), id, keys };
                Ok(client.lease_time_to_live(request).await.map_err(idempotent_failure)?.into_inner())
            }
        })
        .await
    }

    pub fn lease_time_to_live_local(&self, id: i64, keys: bool) -> Result<pb::LeaseTimeToLiveResponse> {
        self.ensure_leading_leases()?;
        let found = if keys { self.kv.lease_with_keys(id)? } else { self.kv.lease(id)?.map(|ttl| (ttl, Vec::new())) };
        let Some((granted_ttl, keys)) = found else {
            return Ok(pb::LeaseTimeToLiveResponse { id, ttl: -1, ..Default::default() });
        };
        let remaining = self.lessor.remaining(id, granted_ttl);
        Ok(pb::LeaseTimeToLiveResponse { header: None, id, ttl: remaining.as_secs() as i64, granted_ttl, keys })
    }

    /// Whether this member knows a leader it can count on. A leader that has not heard from a
    /// quorum for an election timeout counts as none: etcd's leader steps down then
    /// (CheckQuorum), but openraft 0.9 keeps leading, so its followers' acknowledgements decide.
    /// A voter whose leader falls silent campaigns and so forgets it; a learner never campaigns,
    /// so for one the leader counts only while it has been heard from within an election timeout.
    pub fn has_leader(&self) -> bool {
        let (id, leader, millis_since_quorum_ack) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.id, metrics.current_leader, metrics.millis_since_quorum_ack)
        };
        let config = self.raft.config();
        match leader {
            None => false,
            Some(leader) if leader == id => millis_since_quorum_ack.is_some_and(|ms| ms <= config.election_timeout_max),
            Some(leader) => {
                let patience = Duration::from_millis(config.election_timeout_max);
                !self.is_learner() || self.peers.last_contact(leader).is_some_and(|at| at.elapsed() < patience)
            }
        }
    }

    /// The leader this member can count on (see [`Node::has_leader`]), if any.
    pub fn usable_leader(&self) -> Option<NodeId> {
        if self.has_leader() {
            self.raft.metrics().borrow().current_leader
        } else {
            None
        }
    }

    pub(super) fn ensure_leading(&self) -> Result<()> {
        self.leading_term().map(drop)
    }

    /// The term this member leads in, or `NotLeader`.
    fn leading_term(&self) -> Result<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        match metrics.current_leader {
            Some(leader) if leader == self.id => Ok(metrics.current_term),
            _ => Err(Error::NotLeader),
        }
    }

    /// `NotLeader` unless this member leads; a new leader first restarts every lease's countdown
    /// (see [`Lessor::promote`]). Every lease answer a leader gives goes through here, as well as
    /// its expiry task, so no answer is counted from deadlines a new leader has not extended
    /// (the task alone would leave a window after an election).
    pub fn ensure_leading_leases(&self) -> Result<()> {
        let term = self.leading_term()?;
        if !self.lessor.promoted_in(term) {
            self.lessor.promote(term, &self.kv.leases()?, self.election_timeout());
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Peers: the channels to other members, when each last answered, and fencing news.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The response header etcd puts on every answer.
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.raft.metrics().borrow().current_term,
        }
    }

    /// Switches this member's own elections on or off (a leadership transfer holds them).
    pub(super) fn set_own_elections(&self, on: bool) {
        self.lock_election_holds().switch(&self.raft, on);
    }

    /// Whether a leadership transfer holds this member's own elections.
    pub fn elections_held(&self) -> bool {
        self.lock_election_holds().held
    }

    /// The record of this member's election holds (see [`ElectionHolds`]).
    pub(super) fn lock_election_holds(&self) -> std::sync::MutexGuard<'_, ElectionHolds> {
        self.election_holds.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this member is a learner by the operator's choice (see [`PeerNode::is_learner`]).
    /// Asked on every request, so it looks this member up rather than building
    /// [`Node::members`]. A member that joined has no membership naming it until the leader's
    /// log or snapshot brings one; until then it is what the cluster said when it joined.
    pub fn is_learner(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let Some(node) = membership.get_node(&self.id) else { return self.joined_as_learner };
        let votes = !membership.learner_ids().any(|id| id == self.id);
        node.is_learner(votes)
    }

    /// Every member in the current configuration, with whether it votes.
    pub fn members(&self) -> Members {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        super::membership_with_votes(membership.membership())
    }
}

/// A command's result as the caller sees it: a refusal (decided while applying, or by the
/// leader a write was forwarded to) is an error.
fn into_outcome(result: CommandResult) -> Result<CommandResult> {
    match result.result {
        Some(command_result::Result::Error(e)) => Err(Error::from_status(e.code, &e.message)),
        Some(_) => Ok(result),
        None => Err(Error::Internal("empty command result".into())),
    }
}

/// A forwarded request that can safely run twice (a read index, a keepalive) and found no
/// leader at the other end is retried like one refused by a non-leader.
fn idempotent_failure(status: tonic::Status) -> Error {
    let unreachable = status.code() == tonic::Code::Unavailable && !status.message().starts_with("etcdserver:");
    if unreachable {
        Error::NotLeader
    } else {
        Error::from(status)
    }
}

/// Packs this leader's queued writes into Raft entries, one entry at a time (group commit): the
/// writes that arrive while an entry commits go together in the next. Every entry costs the
/// same whatever it holds (a log flush on each member, an AppendEntries round, an apply), and
/// with up to four entries in flight the clients that were answered together were split over
/// several small ones: in interleaved runs, one at a time did put-100 +27% (37 writes per
/// flush against 12), txn-put-100 +12% and put-10 +16% (README); a single client has one write
/// at a time either way.
async fn run_batcher(raft: Raft, mut queue: mpsc::Receiver<PendingWrite>) {
    while let Some(first) = queue.recv().await {
        let batch = fill_batch(first, &mut queue, |write| write);
        if !batch.is_empty() {
            submit_batch(&raft, batch).await;
        }
    }
}

/// `first` and what else is queued, within the bounds of one batch, less the writes whose
/// client stopped waiting (it gave up, or its request timed out): etcd proposes none whose
/// request is done either, and under overload they would only lengthen the queue.
fn fill_batch<T>(first: T, queue: &mut mpsc::Receiver<T>, write: impl Fn(&T) -> &PendingWrite) -> Vec<T> {
    let mut bytes = write(&first).command.encoded_len();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
        let Ok(next) = queue.try_recv() else { break };
        bytes += write(&next).command.encoded_len();
        batch.push(next);
    }
    batch.retain(|queued| !write(queued).reply.is_closed());
    batch
}

async fn submit_batch(raft: &Raft, batch: Vec<PendingWrite>) {
    let (commands, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    match raft.client_write(Proposal(pb::CommandBatch { commands })).await {
        Ok(written) => {
            for (reply, result) in replies.into_iter().zip(written.data.0.results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(err) => {
            let err = match err {
                RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Error::LeaderChanged,
                RaftError::APIError(other) => Error::Internal(other.to_string()),
                RaftError::Fatal(_) => Error::Stopped,
            };
            fail_all(replies, err);
        }
    }
}

/// Forwards a follower's writes to the leader each was meant for. Every leader gets a queue and
/// a forwarder of its own, so writes for a new leader never wait behind forwards stuck at an old
/// one (stopped, or cut off) until those time out. A leader whose queue is full refuses more as
/// "too many requests": nothing was sent, so the client may retry.
async fn run_forwarded_writes(mut queue: mpsc::Receiver<ForwardedWrite>, timeout: Duration) {
    let mut leaders: HashMap<NodeId, mpsc::Sender<ForwardedWrite>> = HashMap::new();
    while let Some(forwarded) = queue.recv().await {
        let to_leader = leaders.entry(forwarded.leader).or_insert_with(|| {
            let (sender, leader_queue) = mpsc::channel(4 * MAX_BATCH_COMMANDS);
            tokio::spawn(forward_to_leader(leader_queue, timeout));
            sender
        });
        if let Err(TrySendError::Full(refused) | TrySendError::Closed(refused)) = to_leader.try_send(forwarded) {
            let _ = refused.write.reply.send(Err(Error::TooManyRequests));
        }
    }
}

/// Forwards one leader's writes, packed like the leader's own batches: those that queue up while
/// [`MAX_FORWARDS_IN_FLIGHT`] earlier forwards are in flight go in the next one. One request per
/// batch instead of one per write: under 100 clients, two thirds of the writes reach a follower,
/// and their forwards were most of the leader's gRPC requests (benches/cluster). A forward lasts
/// at most `timeout`.
async fn forward_to_leader(mut queue: mpsc::Receiver<ForwardedWrite>, timeout: Duration) {
    let in_flight = Arc::new(Semaphore::new(MAX_FORWARDS_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let batch = fill_batch(first, &mut queue, |forwarded| &forwarded.write);
        if batch.is_empty() {
            continue;
        }
        tokio::spawn(async move {
            forward_batch(batch, timeout).await;
            drop(permit);
        });
    }
}

/// Sends `writes`, all meant for one leader, in one request, and hands out the answers.
async fn forward_batch(writes: Vec<ForwardedWrite>, timeout: Duration) {
    let (mut client, header) = (writes[0].client.clone(), writes[0].header);
    let (commands, replies): (Vec<_>, Vec<_>) = writes.into_iter().map(|f| (f.write.command, f.write.reply)).unzip();
    let request = pb::ProposeRequest { header: Some(header), commands };
    let results = match tokio::time::timeout(timeout, client.propose(request)).await {
        Ok(Ok(answer)) => answer.into_inner().results,
        // The leader is down: the writes wait for the next one, as etcd's do, instead of
        // failing as if their outcome were unknown.
        Ok(Err(status)) if crate::error::never_sent(&status) => return fail_all(replies, Error::NotLeader),
        Ok(Err(status)) => return fail_all(replies, Error::from(status)),
        Err(_) => return fail_all(replies, Error::Timeout),
    };
    if results.len() != replies.len() {
        let err = format!("the leader answered {} results for {} proposals", results.len(), replies.len());
        return fail_all(replies, Error::Internal(err));
    }
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(Ok(result));
    }
}

fn fail_all(replies: Vec<oneshot::Sender<Result<CommandResult>>>, err: Error) {
    for reply in replies {
        let _ = reply.send(Err(err.clone()));
    }
}

/// Forwards a follower's reads to the leader: all that arrive while one request is in flight
/// share the next one, which is sent after they arrived, so the leader's read index is fixed
/// after each of them began. One request per round instead of one per read: under 100 clients
/// the followers' forwarded reads were most of the leader's peer traffic (benches/cluster).
/// Reads meant for another leader (it changed meanwhile) wait for a round of their own; a round
/// lasts at most `timeout`, so a leader that stopped answering holds up no read for longer.
async fn run_forwarded_reads(mut queue: mpsc::Receiver<ForwardedRead>, timeout: Duration) {
    let mut waiting: Vec<ForwardedRead> = Vec::new();
    loop {
        while let Ok(next) = queue.try_recv() {
            waiting.push(next);
        }
        if waiting.is_empty() {
            let Some(next) = queue.recv().await else { return };
            waiting.push(next);
            continue;
        }
        let leader = waiting[0].leader;
        let (round, later): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|read| read.leader == leader);
        waiting = later;
        let mut client = round[0].client.clone();
        let request = pb::ReadIndexRequest { header: Some(round[0].header) };
        let index = match tokio::time::timeout(timeout, client.read_index(request)).await {
            Ok(answer) => answer.map(|reply| reply.into_inner().index).map_err(idempotent_failure),
            Err(_) => Err(Error::Timeout),
        };
        for read in round {
            let _ = read.reply.send(index.clone());
        }
    }
}

/// The Raft term and the end of the log this member started with.
///
/// openraft 0.9 restores a member that was the leader as the leader of the same term at once,
/// without a new entry of its own (since a leader's first entry of a term is flushed with a mark
/// that makes the member resign at start, `LogStore::resign_leadership_reported_early`, only one
/// that stopped before that flush); its read index then rests on the commit index the log store
/// saved (not flushed: it rides along with the next append's flush, so a kill can lose it) and on
/// its first entry of the term. An entry committed and acknowledged just before the kill could
/// be left out, and a read would not see an acknowledged write (chaos found this). Every such
/// entry is in the log the member restarted with, so while it leads that same term, no read
/// index is taken below the end of that log. A later term always begins with a new entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartedWith {
    pub term: u64,
    pub last_log_index: u64,
}

impl StartedWith {
    /// The read index to use for one `openraft` gave while this member leads `term`.
    fn read_index(self, term: u64, index: u64) -> u64 {
        if term == self.term {
            index.max(self.last_log_index)
        } else {
            index
        }
    }
}

/// Serves read-index requests; all requests that arrive during one confirmation round are
/// answered by the next round, which starts after they arrived.
async fn run_read_index(raft: Raft, mut queue: mpsc::Receiver<PendingRead>, started_with: StartedWith) {
    while let Some(first) = queue.recv().await {
        let mut waiting = vec![first];
        while let Ok(next) = queue.try_recv() {
            waiting.push(next);
        }
        let result = match raft.get_read_log_id().await {
            Ok((read_log_id, _)) => {
                let term = raft.metrics().borrow().current_term;
                Ok(started_with.read_index(term, read_log_id.map_or(0, |id| id.index)))
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => Err(Error::NotLeader),
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => Err(Error::Timeout),
            Err(RaftError::Fatal(_)) => Err(Error::Stopped),
        };
        for reply in waiting {
            let _ = reply.send(result.clone());
        }
    }
}

#[cfg(test)]
mod started_with_tests {
    use super::StartedWith;

    #[test]
    fn a_restored_leader_reads_no_lower_than_the_log_it_restarted_with() {
        let started = StartedWith { term: 4, last_log_index: 120 };
        assert_eq!(started.read_index(4, 117), 120, "the same term: openraft's index may miss acknowledged entries");
        assert_eq!(started.read_index(4, 130), 130);
        assert_eq!(started.read_index(5, 117), 117, "a later term began with its own entry");
    }
}
