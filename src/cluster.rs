//! Identity: the cluster ID and member IDs, and the data dir that records them.
//!
//! IDs are derived as etcd derives them, so `member list` looks familiar: a bootstrapped member's
//! ID is the first 8 bytes (big endian) of sha1(its sorted peer URLs concatenated + the cluster
//! token), and the cluster ID is the same digest over the sorted member IDs (8 bytes each, big
//! endian).
//!
//! The data dir holds `phoenix.json` (who this member is, which cluster it belongs to, and whether
//! it joined as a learner) and `db/` (sled: Raft log, vote and state machine). A data dir is used
//! only by the member and cluster it was created for.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::config::Config;
use crate::disk::Db;
use crate::kv::KvStore;
use crate::raft::log_store::LogStore;
use crate::raft::{NodeId, PeerNode};
use crate::{Error, Result};

pub fn member_id(peer_urls: &[String], token: &str) -> NodeId {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut hasher = Sha1::new();
    hasher.update(urls.concat().as_bytes());
    hasher.update(token.as_bytes());
    first_u64(&hasher.finalize())
}

/// The ID etcd gives a member added at runtime: the same digest with the time appended.
pub fn added_member_id(peer_urls: &[String], token: &str, unix_seconds: u64) -> NodeId {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut hasher = Sha1::new();
    hasher.update(urls.concat().as_bytes());
    hasher.update(token.as_bytes());
    hasher.update(unix_seconds.to_be_bytes());
    first_u64(&hasher.finalize())
}

pub fn cluster_id(member_ids: impl IntoIterator<Item = NodeId>) -> u64 {
    let mut ids: Vec<NodeId> = member_ids.into_iter().collect();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// Who this member is and which members the cluster starts with.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cluster_id: u64,
    pub member_id: NodeId,
    pub initial_members: BTreeMap<NodeId, PeerNode>,
    /// Whether the running cluster it joins lists it as a learner (`member add --learner`).
    pub learner: bool,
}

impl Identity {
    /// The identity of a member of a new cluster: everything follows from the flags.
    pub fn from_config(config: &Config) -> Identity {
        let initial_members: BTreeMap<NodeId, PeerNode> = config
            .initial_cluster
            .keys()
            .map(|name| {
                let peer_urls = config.peer_urls_of(name);
                (
                    member_id(&peer_urls, &config.initial_cluster_token),
                    PeerNode { name: name.clone(), peer_urls, voter: true },
                )
            })
            .collect();
        let member_id = member_id(&config.peer_urls_of(&config.name), &config.initial_cluster_token);
        Identity { cluster_id: cluster_id(initial_members.keys().copied()), member_id, initial_members, learner: false }
    }

    /// The same member in a cluster restored from the backup whose snapshot hash is
    /// `backup_hash`. Its cluster ID differs from that of a cluster started with the same flags
    /// without a backup (often the very cluster the backup came from), so members of the old
    /// cluster that are still around are refused by the new one.
    pub fn restored_from(self, backup_hash: u32) -> Identity {
        let mut hasher = Sha1::new();
        hasher.update(self.cluster_id.to_be_bytes());
        hasher.update(backup_hash.to_be_bytes());
        Identity { cluster_id: first_u64(&hasher.finalize()), ..self }
    }
}

/// Learns who this member is from the running cluster, for a member started with
/// `--initial-cluster-state existing` after `member add`: it asks the members listed in
/// --initial-cluster for the member list and finds itself by its peer URLs.
pub async fn discover(config: &Config) -> Result<Identity> {
    let mine = config.peer_urls_of(&config.name);
    let mut last_error = String::from("no other member is listed in --initial-cluster");
    for (name, urls) in &config.initial_cluster {
        if *name == config.name {
            continue;
        }
        for url in urls {
            match ask_cluster_info(&crate::config::url_string(url), config).await {
                Ok(info) => return identity_in(info, &mine),
                Err(e) => last_error = format!("{}: {e}", crate::config::url_string(url)),
            }
        }
    }
    Err(Error::Config(format!("cannot join: no member of --initial-cluster answered ({last_error})")))
}

/// Refuses to bootstrap a member that its cluster knows has run (published its name): its data
/// dir was lost or wiped and it starts again with its first flags, as etcd refuses it. With no
/// log and no vote it could help elect a leader that lacks writes it helped commit. Refuses one
/// its cluster removed, too (a host cleaned after a reset, started with its old flags). Every
/// other member of --initial-cluster is asked at once; one that does not answer says nothing.
pub async fn refuse_if_bootstrapped_before(config: &Config, identity: &Identity) -> Result<()> {
    let others = config.initial_cluster.iter().filter(|(name, _)| **name != config.name);
    let asks = others
        .flat_map(|(_, urls)| urls)
        .map(|url| async move { ask_cluster_info(&crate::config::url_string(url), config).await.ok() });
    let answers = futures::future::join_all(asks).await;
    let ours = |info: &&crate::pb::ClusterInfoReply| info.cluster_id == identity.cluster_id;
    // A host cleaned after a reset and started with its old flags: its old ID was removed.
    if answers.iter().flatten().filter(ours).any(|info| info.removed.contains(&identity.member_id)) {
        return Err(Error::Config(format!(
            "member {:x} was removed from this cluster, and its ID is never used again: add this host back as a new \
             member (phoenix --join <client URLs of the cluster>, or etcdctl member add and \
             --initial-cluster-state existing)",
            identity.member_id
        )));
    }
    let has_run = |info: &crate::pb::ClusterInfoReply| {
        info.members.iter().any(|m| m.id == identity.member_id && !m.name.is_empty())
    };
    if answers.iter().flatten().filter(ours).any(has_run) {
        return Err(Error::Config(format!(
            "member {:x} has already been bootstrapped, and data dir {} holds nothing: if this member's data was \
             lost, remove it (etcdctl member remove {:x}) and add this host back as a new member (phoenix --join, \
             or etcdctl member add and --initial-cluster-state existing)",
            identity.member_id,
            config.data_dir.display(),
            identity.member_id
        )));
    }
    Ok(())
}

/// A connection to another member for the few calls made before this one runs. Each call is
/// bounded too: a member that is stopped (SIGSTOP) or hung takes the connection and answers
/// nothing, and must not hold this one's start up for ever when another could answer. The
/// bound is the cluster's request timeout and a little more, so that a member add, which
/// commits through Raft, is given up only after the member answering it would have.
async fn connect(url: String, config: &Config) -> std::result::Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url).map_err(|e| e.to_string())?;
    let call_timeout = config.request_timeout() + Duration::from_secs(1);
    let endpoint = endpoint.connect_timeout(Duration::from_secs(2)).timeout(call_timeout);
    endpoint.connect().await.map_err(|e| e.to_string())
}

async fn ask_cluster_info(peer_url: &str, config: &Config) -> std::result::Result<crate::pb::ClusterInfoReply, String> {
    let channel = connect(peer_url.to_string(), config).await?;
    let mut client = crate::pb::peer_client::PeerClient::new(channel);
    let reply = client.cluster_info(crate::pb::ClusterInfoRequest {}).await.map_err(|e| e.message().to_string())?;
    Ok(reply.into_inner())
}

fn identity_in(info: crate::pb::ClusterInfoReply, peer_urls: &[String]) -> Result<Identity> {
    let mut mine = peer_urls.to_vec();
    mine.sort();
    let me = info.members.iter().find(|m| {
        let mut theirs = m.peer_ur_ls.clone();
        theirs.sort();
        theirs == mine
    });
    let Some(me) = me else {
        return Err(Error::Config(format!(
            "cluster {:x} has no member with peer URLs {}; add this member first (etcdctl member add NAME --peer-urls={})",
            info.cluster_id,
            mine.join(","),
            mine.join(",")
        )));
    };
    // A member publishes its name when it first starts. One that has, and now starts with no
    // data, lost the log and the votes it held: as a voter under its old ID it could help elect a
    // leader that lacks writes it helped commit. It must rejoin as a new member.
    if !me.name.is_empty() {
        return Err(Error::Config(format!(
            "member {} ({:x}) with peer URLs {} has run before and this one starts with no data: remove it first \
             (etcdctl member remove {:x}), then start this one again to join as a new member",
            me.name,
            me.id,
            mine.join(","),
            me.id
        )));
    }
    Ok(Identity {
        cluster_id: info.cluster_id,
        member_id: me.id,
        initial_members: BTreeMap::new(),
        learner: me.is_learner,
    })
}

/// Adds this member to a running cluster through its client API (`phoenix --join`): as a
/// member on its way to voting, which the leader promotes once it has caught up.
pub async fn join(config: &Config, endpoints: &[String]) -> Result<Identity> {
    let mine = config.peer_urls_of(&config.name);
    let mut last_error = String::from("--join lists no endpoint");
    for endpoint in endpoints {
        match add_self(endpoint, &mine, config).await {
            Ok(identity) => return Ok(identity),
            Err(e) => last_error = format!("{endpoint}: {e}"),
        }
    }
    Err(Error::Config(format!("cannot join through {}: {last_error}", endpoints.join(","))))
}

async fn add_self(endpoint: &str, peer_urls: &[String], config: &Config) -> std::result::Result<Identity, String> {
    let endpoint = if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
    let channel = connect(endpoint, config).await?;
    let mut client = crate::pb::cluster_client::ClusterClient::new(channel);
    let request = crate::pb::MemberAddRequest { peer_ur_ls: peer_urls.to_vec(), is_learner: false };
    match client.member_add(request).await {
        Ok(added) => {
            let added = added.into_inner();
            // Running as member 0 would refuse every message meant for the member just added.
            let (Some(header), Some(member)) = (added.header, added.member) else {
                return Err("the answer to member add names no member".to_string());
            };
            Ok(Identity {
                cluster_id: header.cluster_id,
                member_id: member.id,
                initial_members: BTreeMap::new(),
                learner: member.is_learner,
            })
        }
        // Added by an earlier attempt that stopped before its data dir was written.
        Err(status) if status.message() == Error::PeerUrlExists.to_string() => {
            let list = client.member_list(crate::pb::MemberListRequest { linearizable: true }).await;
            let list = list.map_err(|e| e.message().to_string())?.into_inner();
            let cluster_id = list.header.map_or(0, |h| h.cluster_id);
            let info = crate::pb::ClusterInfoReply { cluster_id, members: list.members, removed: Vec::new() };
            identity_in(info, peer_urls).map_err(|e| e.to_string())
        }
        // A member's peer URL answers, but serves only the peer API.
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            Err("it serves no etcd Cluster API: --join takes client URLs, not peer URLs".to_string())
        }
        Err(status) if status.message().is_empty() => Err(format!("{:?}", status.code())),
        Err(status) => Err(status.message().to_string()),
    }
}

/// What `phoenix.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDirMeta {
    pub format: u32,
    pub name: String,
    #[serde(with = "hex_id")]
    pub cluster_id: u64,
    #[serde(with = "hex_id")]
    pub member_id: NodeId,
    /// The snapshot hash of the backup this data dir was restored from, which is part of its
    /// cluster ID (see [`Identity::restored_from`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<u32>,
    /// Set once the member holds Raft state: from then on a log found empty was lost (a wiped
    /// or damaged database), and the member must not bootstrap a cluster again.
    #[serde(default)]
    pub bootstrapped: bool,
    /// Whether the member joined its cluster as a learner (`member add --learner`): what it is
    /// until the first membership that names it reaches it, also across a restart before then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined_as_learner: bool,
}

/// Format 2 stores the state machine's records by revision; opening a data dir of format 1
/// converts it (see [`KvStore::open`]), after which Phoenix builds that read only format 1
/// refuse it rather than find its records missing.
const FORMAT: u32 = 2;
const CONVERTIBLE_FORMAT: u32 = 1;
/// The sled trees of the Raft log and of the state machine.
const LOG_TREE: &str = "raft";
const KV_TREE: &str = "kv";
const META_FILE: &str = "phoenix.json";
/// Written when this member learns it was fenced off: the data dir is never used again.
const FENCED_FILE: &str = "FENCED";
/// sled's page cache: CPU against resident memory. Pages past it are read back from the file
/// (through the kernel's page cache), and a put to a random key then mostly pays for fetching
/// its leaf. 40 MiB beside 64 MiB (benches/cluster, 3 interleaved rounds, once idle blocking
/// threads no longer kept sled's garbage): put-100 1.02x, txn-put-100 1.11x, linearizable gets
/// 1.00x, range-1000 1.06x, catch-up 1.05x, and peak RSS 20-25% lower (97 against 123 MiB in
/// put-100). Before that, 64 MiB had measured 3-6% faster than 32 MiB; 128 MiB gained 10% but
/// took 167 MiB, past etcd's resident memory; the default (1 GiB) grows further still.
const SLED_CACHE_BYTES: u64 = 40 * 1024 * 1024;

/// An opened data dir: its identity and its sled database.
pub struct DataDir {
    pub path: PathBuf,
    pub meta: DataDirMeta,
    pub db: Db,
    /// The one handle on the state machine's tree, so every user shares its key index.
    kv: KvStore,
}

impl DataDir {
    /// Whether `path` holds a Phoenix data dir already (refusing one that holds anything else).
    pub fn exists(path: &Path) -> Result<bool> {
        Ok(read_meta(path)?.is_some())
    }

    /// Records that the member holds Raft state (see [`DataDirMeta::bootstrapped`]).
    pub fn mark_bootstrapped(&mut self) -> Result<()> {
        if !self.meta.bootstrapped {
            self.meta.bootstrapped = true;
            write_meta(&self.path, &self.meta)?;
        }
        Ok(())
    }

    /// Opens the data dir for `identity`, creating it when absent. Refuses one that belongs to
    /// another member or cluster, or that holds something other than Phoenix data.
    pub fn open(config: &Config, identity: &Identity) -> Result<DataDir> {
        let path = config.data_dir.clone();
        let existing = read_meta(&path)?;
        if let Ok(reason) = fs::read_to_string(path.join(FENCED_FILE)) {
            return Err(fenced_off(&path, reason.trim()));
        }
        let meta = match existing {
            Some(meta) => {
                check_belongs(&path, &meta, config)?;
                meta
            }
            None => {
                let meta = DataDirMeta {
                    format: FORMAT,
                    name: config.name.clone(),
                    cluster_id: identity.cluster_id,
                    member_id: identity.member_id,
                    restored_from: None,
                    bootstrapped: false,
                    joined_as_learner: identity.learner,
                };
                create(&path, &meta)?;
                meta
            }
        };
        DataDir::open_db_with(path, meta)
    }

    /// Creates, in the absent or empty directory `path`, the data dir of `identity`'s member of a
    /// cluster restored from the backup whose snapshot hash is `backup_hash`; `fill` loads the
    /// backup into it. The identity file is written last, once everything is flushed, so an
    /// interrupted restore never leaves a data dir a member would start from; a failed one
    /// leaves `path` as it found it. Returns the new member's identity.
    pub fn restore(
        path: &Path,
        name: &str,
        identity: Identity,
        backup_hash: u32,
        fill: impl FnOnce(&DataDir) -> Result<()>,
    ) -> Result<DataDirMeta> {
        let existed = path.exists();
        if existed && fs::read_dir(path).map(|mut d| d.next().is_some()).unwrap_or(true) {
            return Err(Error::Config(format!("data-dir {:?} not empty or could not be read", path.display())));
        }
        let identity = identity.restored_from(backup_hash);
        let meta = DataDirMeta {
            format: FORMAT,
            name: name.to_string(),
            cluster_id: identity.cluster_id,
            member_id: identity.member_id,
            restored_from: Some(backup_hash),
            bootstrapped: false,
            joined_as_learner: false,
        };
        let restored = (|| {
            crate::disk::create_private_dir_all(path)?;
            let data = DataDir::open_db_with(path.to_path_buf(), meta.clone())?;
            fill(&data)?;
            data.db.flush()?;
            drop(data);
            create(path, &meta)
        })();
        if let Err(e) = restored {
            let cleanup = if existed { remove_contents(path) } else { fs::remove_dir_all(path) };
            if let Err(cleanup) = cleanup {
                tracing::warn!(error = %cleanup, path = %path.display(), "could not remove a failed restore");
            }
            return Err(e);
        }
        Ok(meta)
    }

    /// Opens a stopped member's data dir as it is, to inspect it or reset it offline. Refuses a
    /// directory that holds no Phoenix data and one a running member holds (sled locks it).
    pub fn open_stopped(path: &Path) -> Result<DataDir> {
        let Some(meta) = read_meta(path)? else {
            return Err(Error::Config(format!("{} is not a Phoenix data dir (no {META_FILE})", path.display())));
        };
        DataDir::open_db_with(path.to_path_buf(), meta)
    }

    /// Opens the database of the data dir at `path`, whose identity is `meta`, converting a data
    /// dir of the older format.
    fn open_db_with(path: PathBuf, mut meta: DataDirMeta) -> Result<DataDir> {
        check_format(&path, &meta)?;
        let db = open_db(&path, &meta)?;
        // Opening reads every record of the store: sled reports most damage here.
        let kv = db.open_tree(KV_TREE).map_err(Error::from).and_then(KvStore::open).map_err(|e| match e {
            Error::Corrupt(damage) => damaged(&path, &meta, &damage),
            other => other,
        })?;
        if meta.format != FORMAT {
            db.flush()?;
            meta.format = FORMAT;
            write_meta(&path, &meta)?;
        }
        Ok(DataDir { path, meta, db, kv })
    }

    /// Why this data dir must never run again, when its member was removed or fenced off.
    pub fn fenced_reason(&self) -> Option<String> {
        fs::read_to_string(self.path.join(FENCED_FILE)).ok().map(|reason| reason.trim().to_string())
    }

    /// The Raft log and vote.
    pub fn log_store(&self) -> Result<LogStore> {
        Ok(LogStore::new(self.db.clone(), self.db.open_tree(LOG_TREE)?))
    }

    /// The state machine's MVCC store.
    pub fn kv_store(&self) -> KvStore {
        self.kv.clone()
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.path.join("snap")
    }

    /// Removes the record that this member was fenced off, if there is one (see
    /// [`crate::recovery::reset`]).
    pub fn clear_fence(&self) -> Result<()> {
        match fs::remove_file(self.path.join(FENCED_FILE)) {
            Ok(()) => Ok(fs::File::open(&self.path)?.sync_all()?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// What to do with a data dir whose database lost what it held.
    pub fn lost_data_advice(&self) -> String {
        lost_data_advice(&self.meta)
    }

    /// Records that this member was fenced off, so the data dir refuses every later start, and
    /// returns the error that tells the operator what to do.
    pub fn fence(&self, reason: &str) -> Error {
        if let Err(e) = fs::write(self.path.join(FENCED_FILE), reason) {
            tracing::warn!(error = %e, "could not mark the data dir as fenced off");
        }
        fenced_off(&self.path, reason)
    }
}

/// The error for a data dir whose member was removed or fenced off, with the way forward.
pub fn fenced_off(data_dir: &Path, reason: &str) -> Error {
    Error::Config(format!(
        "{reason}; data dir {} must not be used again: move it aside with `phoenixctl clean --data-dir {}` \
         and add the host back as a new member (etcdctl member add, or phoenix --join)",
        data_dir.display(),
        data_dir.display()
    ))
}

/// Opens the data dir's database; sled locks it, so this fails while a member runs on it.
fn open_db(path: &Path, meta: &DataDirMeta) -> Result<Db> {
    Db::open(&path.join("db"), SLED_CACHE_BYTES).map_err(|e| {
        if crate::disk::is_locked(&e) {
            Error::Config(in_use(path, meta))
        } else if let Some(damage) = crate::disk::damage(&e) {
            damaged(path, meta, &damage)
        } else {
            Error::Config(format!("cannot open data dir {}: {e}", path.display()))
        }
    })
}

/// What the operator of a member whose data dir lost data can do.
fn lost_data_advice(meta: &DataDirMeta) -> String {
    format!(
        "remove this member (etcdctl member remove {:x}) and add the host back as a new member with an empty \
         data dir, or, if it was the only member, restore the cluster from a backup",
        meta.member_id
    )
}

/// Why a data dir whose database sled found damaged is refused.
fn damaged(path: &Path, meta: &DataDirMeta, damage: &str) -> Error {
    Error::Config(format!("data dir {} has a damaged database ({damage}); {}", path.display(), lost_data_advice(meta)))
}

/// Why a data dir whose database another process holds open is refused.
pub fn in_use(path: &Path, meta: &DataDirMeta) -> String {
    format!(
        "data dir {} is in use by member {} ({:x}), which is running: stop it first",
        path.display(),
        meta.name,
        meta.member_id
    )
}

fn read_meta(path: &Path) -> Result<Option<DataDirMeta>> {
    let file = path.join(META_FILE);
    match fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Config(format!("data dir {}: {} is unreadable: {e}", path.display(), file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_entries = fs::read_dir(path).map(|mut d| d.next().is_some()).unwrap_or(false);
            if has_entries {
                return Err(Error::Config(format!(
                    "data dir {} is not empty and holds no Phoenix data; choose another --data-dir",
                    path.display()
                )));
            }
            Ok(None)
        }
        Err(e) => Err(Error::Config(format!("data dir {}: {e}", path.display()))),
    }
}

fn check_format(path: &Path, meta: &DataDirMeta) -> Result<()> {
    if meta.format != FORMAT && meta.format != CONVERTIBLE_FORMAT {
        return Err(Error::Config(format!(
            "data dir {} has format {}, this Phoenix reads {FORMAT} (and converts {CONVERTIBLE_FORMAT})",
            path.display(),
            meta.format
        )));
    }
    Ok(())
}

/// A data dir restarts as the member it holds, whatever --initial-cluster and the token now
/// say (etcd ignores them on restart: they are often refreshed after a member add), but only
/// under its own name: a data dir copied from another member, or a wrong --data-dir, would
/// otherwise run a second member under the same ID.
fn check_belongs(path: &Path, meta: &DataDirMeta, config: &Config) -> Result<()> {
    // A reset data dir may have been given a new name (`phoenixctl disaster --name`).
    let reset = crate::recovery::recorded_reset(path)?.is_some();
    if !reset && meta.name != config.name {
        return Err(Error::Config(format!(
            "data dir {} belongs to member {} ({:x}) of cluster {:x}, but --name is {}; start it with --name {}, or \
             use another --data-dir",
            path.display(),
            meta.name,
            meta.member_id,
            meta.cluster_id,
            config.name,
            meta.name
        )));
    }
    Ok(())
}

/// Creates the data dir with its identity file, written whole or not at all.
fn create(path: &Path, meta: &DataDirMeta) -> Result<()> {
    crate::disk::create_private_dir_all(path)
        .map_err(|e| Error::Config(format!("cannot create data dir {}: {e}", path.display())))?;
    write_meta(path, meta)
}

/// Writes the identity file whole or not at all.
fn write_meta(path: &Path, meta: &DataDirMeta) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(crate::disk::replace_file(path, META_FILE, &bytes)?)
}

fn remove_contents(dir: &Path) -> std::io::Result<()> {
    for dirent in fs::read_dir(dir)? {
        let path = dirent?.path();
        if path.is_dir() {
            fs::remove_dir_all(path)?;
        } else {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

/// IDs are written in hex, as etcd prints them.
mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{id:x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_etcds() {
        // etcd 3.4 with no flags reports member 8e9e05c52164694d in cluster cdf818194e3a8c32.
        let id = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id([id])), "cdf818194e3a8c32");
    }
}
