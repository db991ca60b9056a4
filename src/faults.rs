//! Deliberately broken behaviours, for proving that the chaos checker catches what they break.
//!
//! They exist only in test builds: the `test-faults` feature, which nothing but the test suite's
//! dev-dependency on this package turns on. A member built with it still behaves correctly unless
//! its environment names a fault (`PHOENIX_TEST_FAULTS=a,b`): `stale-reads` serves linearizable
//! reads from local state without a read index; `lost-renewals` answers lease keep-alives
//! without renewing the lease; `failing-storage` fails every state machine apply, as a broken
//! disk would; `failing-reports` answers the Recovery service's `Survivor` with an error, as a
//! member that cannot read its own log would; `slow-snapshot-export` waits 6 s before it copies
//! the store for a Snapshot call, as the copy of a large store would take;
//! `half-membership-changes` gives up on every membership change once its joint configuration
//! is applied, as a caller cut off by its deadline between openraft's two steps would;
//! `stalled-election-timer` starts openraft with its own election timer off, as its sticky
//! backoff after a lost election delays it (see [`crate::raft::elections`]), here until a
//! leadership transfer switches it on again; `idle-lease-expiry` keeps the leader's lease expiry
//! task from doing anything, as a task that has not run yet after an election;
//! `no-snapshot-streams` answers a snapshot stream Unimplemented, as a member from before such
//! streams does, so that it is sent openraft's chunks.
//!
//! `PHOENIX_TEST_PEER_ROUTES=URL=PROXY,...` sends this member's Raft traffic for the member at
//! peer URL `URL` through `PROXY` instead, so a test can cut any one direction of any link.
//!
//! `PHOENIX_TEST_HOLD_INSTALL=PATH` holds every snapshot install part way, with the store
//! emptied, for as long as a file exists at `PATH`, so a test can see what a member answers then.
//! `PHOENIX_TEST_HOLD_FORWARDED_PROPOSALS=PATH` and `PHOENIX_TEST_HOLD_FORWARDED_ANSWERS=PATH`
//! hold a leader's handling of a write forwarded to it before it proposes the write, and after
//! the write is applied but before the answer goes back, as a leader killed there would leave it.
//! `PHOENIX_TEST_HOLD_LEADER_FLUSH=PATH` holds the flush of a leader's own log appends, which runs
//! beside their replication (see [`crate::raft::leader_flush`]), as a slow disk would.

/// Whether `fault` is switched on for this process.
#[cfg(feature = "test-faults")]
pub fn enabled(fault: &str) -> bool {
    static FAULTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let faults = FAULTS.get_or_init(|| {
        let listed = std::env::var("PHOENIX_TEST_FAULTS").unwrap_or_default();
        let faults: Vec<String> = listed.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect();
        if !faults.is_empty() {
            tracing::warn!(?faults, "running with deliberately broken behaviours (PHOENIX_TEST_FAULTS)");
        }
        faults
    });
    faults.iter().any(|f| f == fault)
}

/// Where to dial the peer at `url`, when a test routes it through a proxy.
#[cfg(feature = "test-faults")]
pub fn peer_route(url: &str) -> Option<String> {
    static ROUTES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        let listed = std::env::var("PHOENIX_TEST_PEER_ROUTES").unwrap_or_default();
        listed.split(',').filter_map(|route| route.split_once('=')).map(|(a, b)| (a.into(), b.into())).collect()
    });
    routes.iter().find(|(from, _)| from == url).map(|(_, to)| to.clone())
}

/// Where to dial the peer at `url`: where it is, in a build without `test-faults`.
#[cfg(not(feature = "test-faults"))]
pub fn peer_route(_url: &str) -> Option<String> {
    None
}

/// How often a hold looks whether its file is still there.
#[cfg(feature = "test-faults")]
const HOLD_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// The file the variable `var` names, if it exists: a hold is asked for.
#[cfg(feature = "test-faults")]
fn hold_file(var: &str, what: &str) -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from(std::env::var_os(var)?);
    let exists = path.exists();
    if exists {
        tracing::warn!(path = %path.display(), "holding {what} while this file exists");
    }
    exists.then_some(path)
}

/// Waits while the file `PHOENIX_TEST_HOLD_INSTALL` names exists. Called on a blocking thread.
#[cfg(feature = "test-faults")]
pub fn hold_install() {
    let Some(path) = hold_file("PHOENIX_TEST_HOLD_INSTALL", "the snapshot install") else { return };
    while path.exists() {
        std::thread::sleep(HOLD_POLL);
    }
}

/// Waits while the file `PHOENIX_TEST_HOLD_FORWARDED_PROPOSALS` names exists.
#[cfg(feature = "test-faults")]
pub async fn hold_forwarded_proposals() {
    hold_async("PHOENIX_TEST_HOLD_FORWARDED_PROPOSALS", "forwarded proposals").await;
}

/// Waits while the file `PHOENIX_TEST_HOLD_FORWARDED_ANSWERS` names exists.
#[cfg(feature = "test-faults")]
pub async fn hold_forwarded_answers() {
    hold_async("PHOENIX_TEST_HOLD_FORWARDED_ANSWERS", "the answers to forwarded proposals").await;
}

/// Waits while the file `PHOENIX_TEST_HOLD_LEADER_FLUSH` names exists.
#[cfg(feature = "test-faults")]
pub async fn hold_leader_flush() {
    hold_async("PHOENIX_TEST_HOLD_LEADER_FLUSH", "the leader's log flush").await;
}

#[cfg(feature = "test-faults")]
async fn hold_async(var: &str, what: &str) {
    let Some(path) = hold_file(var, what) else { return };
    while path.exists() {
        tokio::time::sleep(HOLD_POLL).await;
    }
}

/// Holds nothing, in a build without `test-faults`.
#[cfg(not(feature = "test-faults"))]
pub fn hold_install() {}

/// Holds nothing, in a build without `test-faults`.
#[cfg(not(feature = "test-faults"))]
pub async fn hold_forwarded_proposals() {}

/// Holds nothing, in a build without `test-faults`.
#[cfg(not(feature = "test-faults"))]
pub async fn hold_forwarded_answers() {}

/// Holds nothing, in a build without `test-faults`.
#[cfg(not(feature = "test-faults"))]
pub async fn hold_leader_flush() {}

/// Whether `fault` is switched on for this process: never, in a build without `test-faults`.
#[cfg(not(feature = "test-faults"))]
pub fn enabled(_fault: &str) -> bool {
    false
}

/// Counts the joint configurations this process has applied, for `half-membership-changes`.
#[cfg(feature = "test-faults")]
static JOINT_CONFIGURATIONS_APPLIED: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Called by the state machine when it applies a joint configuration.
#[cfg(feature = "test-faults")]
pub fn joint_configuration_applied() {
    JOINT_CONFIGURATIONS_APPLIED.send_modify(|count| *count += 1);
}

/// Nothing to count, in a build without `test-faults`.
#[cfg(not(feature = "test-faults"))]
pub fn joint_configuration_applied() {}

/// Runs the membership change `change` to its end, or with `half-membership-changes`, gives up on
/// it (`None`) once its joint configuration is applied. openraft answers the first step only
/// after applying it, and proposes the second only when `change` is polled again; this looks for
/// the applied joint configuration first, so it always gives up before the second step.
#[cfg(feature = "test-faults")]
pub async fn maybe_give_up_halfway<F: std::future::Future>(change: F) -> Option<F::Output> {
    if !enabled("half-membership-changes") {
        return Some(change.await);
    }
    let mut applied = JOINT_CONFIGURATIONS_APPLIED.subscribe();
    tokio::select! {
        biased;
        _ = applied.changed() => None,
        output = change => Some(output),
    }
}

/// Runs `change` to its end, in a build without `test-faults`.
#[cfg(not(feature = "test-faults"))]
pub async fn maybe_give_up_halfway<F: std::future::Future>(change: F) -> Option<F::Output> {
    Some(change.await)
}
