//! Starting and stopping a member: bind the listeners, open the data dir, start Raft and the
//! services, bootstrap a new cluster, and shut everything down in order.
//!
//! Listeners are bound before the data dir is touched, so a port in use leaves nothing behind.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;
use url::Url;

use crate::api::{self, Context, Limits, OnLearner};
use crate::cluster::{DataDir, Identity};
use crate::config::{url_string, ClusterState, Config};
use crate::lease::Lessor;
use crate::pb::{self, recovery_server::RecoveryServer};
use crate::raft::elections;
use crate::raft::leader_flush::LeaderFlush;
use crate::raft::log_store::LogStore;
use crate::raft::network::{
    Peers, MAX_PEER_MESSAGE_BYTES, PEER_CONNECTION_WINDOW_BYTES, PEER_FRAME_BYTES, PEER_WINDOW_BYTES,
};
use crate::raft::node::{Node, StartedWith};
use crate::raft::peer_service::PeerService;
use crate::raft::state_machine::StateMachine;
use crate::raft::Raft;
use crate::recovery::survivor::RecoveryService;
use crate::watch::WatchHub;
use crate::{Error, Result};

/// gRPC allows this much more than --max-request-bytes on the wire, as etcd's server does.
pub(crate) const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// How long a stopping member waits for in-flight requests before closing every connection.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs a member until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let client_listeners = bind_all("--listen-client-urls", &config.listen_client_urls).await?;
    let peer_listeners = bind_all("--listen-peer-urls", &config.listen_peer_urls).await?;
    let identity = identity(&config).await?;
    let reset = prepare_reset(&config).await?;
    let mut data = DataDir::open(&config, &identity)?;
    refuse_if_removed(&data)?;
    if let Some(basis) = reset {
        let peer_urls = config.peer_urls_of(&config.name);
        let report = crate::recovery::reset(&data, &config.name, peer_urls, basis, config.revision_bump)?;
        tracing::warn!(report = %report.summary(), "reset into a one-member cluster (--force-new-cluster)");
    }
    let no_raft_state = holds_no_raft_state(&data)?;
    refuse_if_log_lost(&data, no_raft_state)?;
    // (A reset was checked in `prepare_reset`, before it changed anything.)
    crate::highwater::check(&data)?;
    let needs_bootstrap = config.initial_cluster_state == ClusterState::New && no_raft_state;
    let backups = match config.backup.clone() {
        Some(schedule) => Some(Arc::new(crate::backup::Backups::new(schedule, config.name.clone())?)),
        None => None,
    };
    crate::snapshot::remove_stale_exports(&data.path)?;
    let watchers = WatchHub::default();
    let (node, state_machine) = start_node(&config, &data, watchers.clone()).await?;
    tracing::info!(
        name = %config.name,
        member = format!("{:x}", node.id),
        cluster = format!("{:x}", node.cluster_id),
        data_dir = %data.path.display(),
        "starting member"
    );
    if config.quota_backend_bytes == crate::config::NO_QUOTA {
        tracing::warn!("disabling backend quota (--quota-backend-bytes is negative)");
    }
    // What kind of start this is, as etcd's log says ("restarting member ... at commit index").
    match (needs_bootstrap, no_raft_state) {
        (true, _) => tracing::info!("bootstrapping a new cluster"),
        (false, true) => tracing::info!("joining a running cluster"),
        (false, false) => tracing::info!(revision = data.kv_store().revision()?, "restarting member"),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let log = data.log_store()?;
    let leader_commits = log.commit_watermark().map_err(|e| Error::Storage(e.to_string()))?;
    let recovery = Arc::new(RecoveryService::new(node.clone(), log, config.name.clone(), data.path.clone()));
    let mut servers = Vec::new();
    for listener in peer_listeners {
        let peer = PeerService::new(node.clone(), leader_commits.clone(), stop_rx.clone());
        servers.push(tokio::spawn(serve_peers(listener, peer, recovery.clone(), stop_rx.clone())));
    }
    let ctx = Context {
        node: node.clone(),
        limits: Arc::new(Limits { max_txn_ops: config.max_txn_ops, max_request_bytes: config.max_request_bytes }),
        quota_backend_bytes: config.quota_backend_bytes,
        election_timeout: config.election_timeout,
        data_dir: data.path.clone(),
        reset_summary: crate::recovery::recorded_reset(&data.path)?.map(|report| report.summary()),
        state_machine: state_machine.clone(),
        backups: backups.clone(),
    };
    let recipes = api::Recipes { ctx: ctx.clone(), hub: watchers.clone() };
    let watch = api::WatchService::new(ctx.clone(), watchers, config.watch_progress_notify_interval);
    let health = HealthReporter::new();
    health.set_service_status("", ServingStatus::Serving).await;
    let services = ClientServices::new(ctx, watch, recipes, recovery, health.clone());
    let watch_streams = services.watch.clone();
    if !no_raft_state {
        stored_membership_loaded(&node).await;
    }
    // Clients wait until the peers have been asked whether this member was removed: two old
    // members restarted together after a reset are a quorum of the old configuration, and
    // would otherwise acknowledge writes that the reset cluster never sees.
    if let Some(reason) = crate::raft::membership::removed_by_peers(&node).await {
        node.raft.shutdown().await.map_err(|e| Error::Internal(format!("raft shutdown: {e}")))?;
        return Err(data.fence(&reason));
    }
    for listener in client_listeners {
        servers.push(tokio::spawn(serve_clients(
            listener,
            services.clone(),
            config.max_request_bytes,
            stop_rx.clone(),
        )));
    }

    if needs_bootstrap {
        bootstrap(&node.raft, &identity).await?;
    }
    if needs_bootstrap || !no_raft_state {
        data.mark_bootstrapped()?;
    }
    warn_of_other_peer_urls(&node, &config);
    let mut fenced = node.peers().fenced();
    let mut background = vec![
        tokio::spawn(crate::raft::membership::complete_membership_changes(node.clone(), stop_rx.clone())),
        tokio::spawn(crate::raft::membership::notice_removal(node.clone(), stop_rx.clone())),
        tokio::spawn(publish_attributes(node.clone(), config.clone(), stop_rx.clone())),
        tokio::spawn(elections::break_split_votes(node.clone(), stop_rx.clone())),
        tokio::spawn(elections::campaign_when_leader_silent(node.clone(), stop_rx.clone())),
        tokio::spawn(crate::lease::expire_leases(node.clone(), stop_rx.clone())),
        tokio::spawn(crate::recovery::quorum::monitor(node.clone(), data.path.clone(), health, stop_rx.clone())),
        tokio::spawn(crate::highwater::keep_recording(&data, stop_rx.clone())),
    ];
    if let Some(backups) = backups {
        background.push(tokio::spawn(crate::backup::run(backups, node.clone(), state_machine, stop_rx.clone())));
    }
    tracing::info!("ready to serve client requests");

    let outcome = tokio::select! {
        _ = shutdown => Ok(()),
        Ok(reason) = fenced.wait_for(Option::is_some).map(|r| r.map(|reason| reason.clone().unwrap_or_default())) => {
            Err(data.fence(&reason))
        }
        _ = removed_from_membership(node.clone()) => {
            Err(data.fence(&format!("member {:x} was removed from the cluster", node.id)))
        }
        reason = raft_stopped(&node) => {
            Err(Error::Internal(format!("Raft stopped: {reason}; restart the member once that is mended")))
        }
    };
    tracing::info!("stopping");
    if outcome.is_ok() {
        hand_over_leadership(&node).await;
    } else {
        // A fenced or removed member must commit nothing more, not even the writes its clients
        // still wait for while they drain below: they fail instead of being acknowledged.
        node.raft.shutdown().await.map_err(|e| Error::Internal(format!("raft shutdown: {e}")))?;
    }
    let _ = stop_tx.send(true);
    watch_streams.shutdown();
    let tasks: Vec<_> = servers.into_iter().chain(background).collect();
    let aborts: Vec<_> = tasks.iter().map(|task| task.abort_handle()).collect();
    // In-flight requests get a moment to finish; open streams (watches, keepalives) would
    // otherwise hold the member up forever.
    if tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(tasks)).await.is_err() {
        aborts.iter().for_each(|task| task.abort());
    }
    node.raft.shutdown().await.map_err(|e| Error::Internal(format!("raft shutdown: {e}")))?;
    node.db.flush_async().await?;
    crate::highwater::record_once(&data).await;
    outcome
}

/// A leader that is asked to stop first hands leadership to its most caught-up voter, so the
/// cluster does not wait out an election timeout to notice it is gone.
async fn hand_over_leadership(node: &Arc<Node>) {
    if node.raft.metrics().borrow().current_leader != Some(node.id) {
        return;
    }
    let Some(successor) = node.best_successor() else { return };
    match tokio::time::timeout(node.request_timeout(), node.move_leader(successor)).await {
        Ok(Ok(())) => tracing::info!(successor = format!("{successor:x}"), "handed leadership over before stopping"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not hand leadership over; stopping anyway"),
        Err(_) => tracing::warn!("handing leadership over took too long; stopping anyway"),
    }
}

/// Who this member is: from the flags for a new cluster, or from the running cluster for one
/// joining it (`--initial-cluster-state existing` after `member add`, or `--join`). A member
/// with no data dir that its cluster knows has run before is refused either way.
async fn identity(config: &Config) -> Result<Identity> {
    if DataDir::exists(&config.data_dir)? {
        return Ok(Identity::from_config(config));
    }
    match (config.initial_cluster_state, config.join.is_empty()) {
        (ClusterState::New, _) => {
            let identity = Identity::from_config(config);
            crate::cluster::refuse_if_bootstrapped_before(config, &identity).await?;
            Ok(identity)
        }
        (ClusterState::Existing, true) => crate::cluster::discover(config).await,
        (ClusterState::Existing, false) => crate::cluster::join(config, &config.join).await,
    }
}

/// For --force-new-cluster: refuses a data dir with nothing to recover, ignores the flag on one
/// that was reset already (so members added since stay), refuses to reset a survivor when
/// another member of its cluster objects (see [`crate::recovery::examine_survivor`]), and
/// otherwise backs the data dir up before the reset changes it. Returns what the reset starts
/// from, when one is to be done.
async fn prepare_reset(config: &Config) -> Result<Option<crate::recovery::ResetBasis>> {
    if !config.force_new_cluster {
        return Ok(None);
    }
    if !DataDir::exists(&config.data_dir)? {
        return Err(Error::Config(format!(
            "--force-new-cluster: data dir {} holds no data to recover",
            config.data_dir.display()
        )));
    }
    if let Some(done) = crate::recovery::recorded_reset(&config.data_dir)? {
        tracing::warn!(
            report = %done.summary(),
            "--force-new-cluster ignored: this data dir was reset already; remove the flag"
        );
        return Ok(None);
    }
    let data = DataDir::open_stopped(&config.data_dir)?;
    let examination = crate::recovery::examine_survivor(&data, false).await?;
    if let Some(objection) = examination.objection {
        return Err(Error::Config(format!(
            "--force-new-cluster refused: {objection}; to reset this member anyway, stop it and run \
             `phoenixctl disaster --force --data-dir {}`",
            config.data_dir.display()
        )));
    }
    let backup = crate::recovery::back_up(&data)?;
    Ok(Some(crate::recovery::ResetBasis { backup, not_asked: examination.not_asked }))
}

/// openraft shows the membership it loaded from the data dir only once its core has run: waits
/// for it (within the request timeout), so that the first checks see this member's peers.
async fn stored_membership_loaded(node: &Node) {
    let loaded = |m: &openraft::RaftMetrics<_, _>| m.membership_config.log_id().is_some();
    if node.raft.wait(Some(node.request_timeout())).metrics(loaded, "the stored membership").await.is_err() {
        tracing::warn!("openraft has not shown the stored membership yet; going on without it");
    }
}

/// The cluster reaches a member at the peer URLs its membership holds; as in etcd, a restart
/// ignores --initial-advertise-peer-urls. Says so when they differ (a typo given to a reset, a
/// host that moved): the other members cannot reach this one until `member update`.
fn warn_of_other_peer_urls(node: &Node, config: &Config) {
    let normalized = |urls: &[String]| {
        let mut urls: Vec<String> =
            urls.iter().map(|u| Url::parse(u).map_or_else(|_| u.clone(), |u| url_string(&u))).collect();
        urls.sort();
        urls
    };
    let Some((known, _)) = node.members().remove(&node.id) else { return };
    let flagged = normalized(&config.peer_urls_of(&config.name));
    if normalized(&known.peer_urls) != flagged {
        tracing::warn!(
            cluster_knows = %known.peer_urls.join(","),
            flags_say = %flagged.join(","),
            "this member's peer URLs differ from --initial-advertise-peer-urls, which a restart ignores; change \
             them with `etcdctl member update {:x} --peer-urls={}` if the flags are right",
            node.id,
            flagged.join(",")
        );
    }
}

/// A member removed from the cluster never runs again with its data: it could disturb the
/// cluster (an old log, an old vote) or serve stale reads.
fn refuse_if_removed(data: &DataDir) -> Result<()> {
    let kv = data.kv_store();
    if kv.removed_members()?.contains(&data.meta.member_id) {
        return Err(data.fence(&format!("member {:x} was removed from the cluster", data.meta.member_id)));
    }
    Ok(())
}

/// A member that has held Raft state and now holds none lost its database (wiped, or damaged so
/// that sled opens it empty): bootstrapping again would start an empty cluster under its old
/// IDs, or make it a voter with no log and no vote.
fn refuse_if_log_lost(data: &DataDir, no_raft_state: bool) -> Result<()> {
    if no_raft_state && data.meta.bootstrapped {
        return Err(Error::Config(format!(
            "data dir {} has lost its Raft log: its member ran before, and its database now holds nothing (wiped or \
             damaged); {}",
            data.path.display(),
            data.lost_data_advice()
        )));
    }
    Ok(())
}

/// Completes once this member has applied its own removal (the state machine tombstones removed
/// members). A configuration without it takes effect in openraft once appended, and one only
/// appended may yet be truncated away: fencing on it could fence a member that stays in the
/// cluster.
async fn removed_from_membership(node: Arc<Node>) {
    // Server metrics change only with leadership and membership; the full metrics are sent on
    // every turn of openraft's core loop, and watching them would wake this task on every write.
    let mut metrics = node.raft.server_metrics();
    loop {
        let membership = metrics.borrow_and_update().membership_config.clone();
        let without_me = membership.membership().get_node(&node.id).is_none();
        if let (true, Some(log_id)) = (without_me, membership.log_id()) {
            let wait = node.raft.wait(None);
            let applied = wait.applied_index_at_least(Some(log_id.index), "own removal applied");
            tokio::select! {
                _ = applied => {
                    if node.kv.removed_members().is_ok_and(|removed| removed.contains(&node.id)) {
                        return;
                    }
                }
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                    continue;
                }
            }
        }
        if metrics.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Completes, with openraft's reason, once its core has stopped by itself: on a storage failure
/// it cannot go on from, or a panic. The member can then neither apply nor vote, and must not go
/// on answering clients as if it could.
async fn raft_stopped(node: &Node) -> String {
    let mut metrics = node.raft.server_metrics();
    // The core drops the sender when its task ends, however it ends.
    while metrics.changed().await.is_ok() {}
    match &node.raft.metrics().borrow().running_state {
        Err(fatal) => fatal.to_string(),
        Ok(()) => "its core task ended".to_string(),
    }
}

async fn start_node(config: &Config, data: &DataDir, watchers: WatchHub) -> Result<(Arc<Node>, StateMachine)> {
    let id = data.meta.member_id;
    let cluster_id = data.meta.cluster_id;
    let kv = data.kv_store();
    let log = data.log_store()?;
    let started_with = started_with(&log)?;
    let state_machine = StateMachine::new(kv, data.db.clone(), data.snapshot_dir(), watchers, Lessor::default());
    state_machine.finish_interrupted_install()?;
    if log.resign_leadership_reported_early(id).map_err(|e| Error::Storage(e.to_string()))? {
        tracing::info!("starting as a follower: this member led before it stopped, and leads again only once elected");
    }
    let leader_flush = LeaderFlush::new(data.db.clone());
    let log = log
        .purging_behind(state_machine.applied_index()?)
        .noting_commits_in(&data.path)?
        .flushing_leader_appends_with(id, leader_flush.clone());
    let peers = Peers::new(cluster_id, id).telling_commits_after(leader_flush);
    let raft_config = raft_config(config)?;
    let raft = Raft::new(id, Arc::new(raft_config), peers.clone(), log, state_machine.clone())
        .await
        .map_err(|e| Error::Storage(format!("cannot start Raft: {e}")))?;
    let node = Node::new(raft, data, started_with, peers, &state_machine, config);
    Ok((node, state_machine))
}

/// The term and the end of the log this member starts with (see [`StartedWith`]).
fn started_with(log: &LogStore) -> Result<StartedWith> {
    let state = log.survivor_state().map_err(|e| Error::Storage(e.to_string()))?;
    Ok(StartedWith {
        term: state.vote.map_or(0, |vote| vote.leader_id.term),
        last_log_index: state.last_log_id.map_or(0, |id| id.index),
    })
}

fn raft_config(config: &Config) -> Result<openraft::Config> {
    let millis = |d: Duration| d.as_millis() as u64;
    openraft::Config {
        cluster_name: config.initial_cluster_token.clone(),
        heartbeat_interval: millis(config.heartbeat_interval),
        // A follower campaigns once the leader lease (`election_timeout_max`) and its own
        // timeout (drawn from [min, max)) have run since the leader's last message: 1.5 to 2
        // election timeouts, inside etcd's 1 to 2 (max = 2 x min took 3 to 4).
        election_timeout_min: millis(config.election_timeout) / 2,
        election_timeout_max: millis(config.election_timeout),
        install_snapshot_timeout: millis(crate::raft::network::SNAPSHOT_PART_TIMEOUT),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        // etcd keeps 5000 entries behind a snapshot for slow followers.
        max_in_snapshot_log_to_keep: config.snapshot_count.min(5000),
        purge_batch_size: config.snapshot_count.min(256),
        // Each entry is a batch of many writes; fewer per message keeps a follower's append and
        // fsync well inside the AppendEntries timeout, which openraft 0.9 sets to one heartbeat.
        max_payload_entries: 16,
        snapshot_max_chunk_size: crate::raft::network::SNAPSHOT_CHUNK_BYTES,
        enable_elect: !crate::faults::enabled("stalled-election-timer"),
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::Config(format!("invalid Raft timing: {e}")))
}

/// Whether this member has never taken part in Raft: no vote, no log entry, nothing purged. Such a
/// member of a new cluster bootstraps it, also on a later start if it stopped before doing so.
fn holds_no_raft_state(data: &DataDir) -> Result<bool> {
    let state = data.log_store()?.survivor_state().map_err(|e| Error::Storage(e.to_string()))?;
    Ok(state.vote.is_none() && state.last_log_id.is_none())
}

/// Writes the initial membership on a brand-new member. Every member of a new cluster does the
/// same with the same configuration, which openraft allows.
async fn bootstrap(raft: &Raft, identity: &Identity) -> Result<()> {
    match raft.initialize(identity.initial_members.clone()).await {
        Ok(()) => Ok(()),
        Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(Error::Internal(format!("cannot bootstrap the cluster: {e}"))),
    }
}

async fn bind_all(flag: &str, urls: &[Url]) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for url in urls {
        let addr = socket_addr(url)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(format!("{flag}: cannot listen on {}: {e}", url_string(url))))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn socket_addr(url: &Url) -> Result<SocketAddr> {
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    let port = url.port().unwrap_or_default();
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Error::Config(format!("cannot resolve {}", url_string(url))))
}

/// Accepted connections with Nagle's algorithm off: tonic's `tcp_nodelay` does not reach
/// connections from a listener we bound ourselves, and a small write behind a watch stream
/// would otherwise wait ~40 ms for the delayed ACK.
fn accept_nodelay(listener: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Accepted client connections, each behind [`api::MendedAuthority`] so that
/// etcdctl 3.4's `endpoint status` and the like are served (see there).
fn accept_clients(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<api::MendedAuthority<tokio::net::TcpStream>>> {
    use futures::StreamExt;
    accept_nodelay(listener).map(|accepted| accepted.map(api::MendedAuthority::new))
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn serve_peers(
    listener: TcpListener,
    peer: PeerService,
    recovery: Arc<RecoveryService>,
    stop: watch::Receiver<bool>,
) {
    let service = pb::peer_server::PeerServer::new(peer)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    let result = Server::builder()
        .initial_stream_window_size(PEER_WINDOW_BYTES)
        .initial_connection_window_size(PEER_CONNECTION_WINDOW_BYTES)
        .max_frame_size(PEER_FRAME_BYTES)
        .add_service(service)
        .add_service(RecoveryServer::from_arc(recovery))
        .serve_with_incoming_shutdown(accept_nodelay(listener), stopped(stop))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "peer server failed");
    }
}

/// The etcd services one client listener serves; each listener gets clones of the same ones.
#[derive(Clone)]
struct ClientServices {
    ctx: Context,
    watch: Arc<api::WatchService>,
    lock: Arc<api::LockService>,
    election: Arc<api::ElectionService>,
    recovery: Arc<RecoveryService>,
    health: HealthReporter,
}

impl ClientServices {
    fn new(
        ctx: Context,
        watch: api::WatchService,
        recipes: api::Recipes,
        recovery: Arc<RecoveryService>,
        health: HealthReporter,
    ) -> ClientServices {
        ClientServices {
            ctx,
            watch: Arc::new(watch),
            lock: Arc::new(api::LockService::new(recipes.clone())),
            election: Arc::new(api::ElectionService::new(recipes)),
            recovery,
            health,
        }
    }
}

async fn serve_clients(
    listener: TcpListener,
    services: ClientServices,
    max_request_bytes: usize,
    stop: watch::Receiver<bool>,
) {
    let limit = max_request_bytes + GRPC_OVERHEAD_BYTES;
    let ctx = services.ctx;
    let check = api::call_check(ctx.node.clone(), OnLearner::ByCall);
    let refused_on_learner = api::call_check(ctx.node.clone(), OnLearner::Refused);
    let health = HealthServer::new(HealthService::from_health_reporter(services.health));
    let kv = pb::kv_server::KvServer::new(api::KvService::new(ctx.clone())).max_decoding_message_size(limit);
    let watch = pb::watch_server::WatchServer::from_arc(services.watch).max_decoding_message_size(limit);
    let lease = pb::lease_server::LeaseServer::new(api::LeaseService::new(ctx.clone()));
    let cluster = pb::cluster_server::ClusterServer::new(api::ClusterService::new(ctx.clone()));
    let maintenance = pb::maintenance_server::MaintenanceServer::new(api::MaintenanceService::new(ctx.clone()));
    let lock = pb::v3lockpb::lock_server::LockServer::from_arc(services.lock);
    let election = pb::v3electionpb::election_server::ElectionServer::from_arc(services.election);
    let grpc = Routes::new(InterceptedService::new(kv, check.clone()))
        .add_service(InterceptedService::new(maintenance, check))
        .add_service(InterceptedService::new(watch, refused_on_learner.clone()))
        .add_service(InterceptedService::new(lease, refused_on_learner.clone()))
        .add_service(InterceptedService::new(cluster, refused_on_learner.clone()))
        .add_service(InterceptedService::new(lock, refused_on_learner.clone()))
        .add_service(InterceptedService::new(election, refused_on_learner.clone()))
        .add_service(InterceptedService::new(
            InterceptedService::new(pb::auth_server::AuthServer::new(api::AuthService), api::refuse_auth),
            refused_on_learner.clone(),
        ))
        .add_service(InterceptedService::new(health, refused_on_learner))
        .add_service(RecoveryServer::from_arc(services.recovery));
    let routes = api::http::routes(grpc.into_axum_router(), ctx.clone());
    let result = Server::builder()
        .accept_http1(true)
        .add_routes(routes.into())
        .serve_with_incoming_shutdown(accept_clients(listener), stopped(stop))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "client server failed");
    }
}

/// Announces this member's name and client URLs through the log, as etcd members do on start,
/// retrying until it is committed or the member stops.
async fn publish_attributes(node: Arc<Node>, config: Config, stop: watch::Receiver<bool>) {
    let attributes =
        pb::MemberAttributes { id: node.id, name: config.name.clone(), client_urls: node.client_urls.clone() };
    let published =
        crate::kv::MemberAttributes { name: attributes.name.clone(), client_urls: attributes.client_urls.clone() };
    loop {
        if *stop.borrow() {
            return;
        }
        let already = node.kv.members().ok().and_then(|m| m.get(&node.id).cloned()) == Some(published.clone());
        if already {
            return;
        }
        let command = pb::Command::from(pb::command::Op::MemberAttributes(attributes.clone()));
        match node.propose(command).await {
            Ok(_) => {
                tracing::info!("published member attributes");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "publishing member attributes, will retry"),
        }
        let mut stop = stop.clone();
        let _ = tokio::time::timeout(Duration::from_millis(500), stop.wait_for(|s| *s)).await;
    }
}
