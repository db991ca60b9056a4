//! Identity: the cluster ID and member IDs, and the data dir that records them.
//!
//! IDs are derived as etcd derives them, so `member list` looks familiar: a bootstrapped member's
//! ID is the first 8 bytes (big endian) of sha1(its sorted peer URLs concatenated + the cluster
//! token), and the cluster ID is the same digest over the sorted member IDs (8 bytes each, big
//! endian).
//!
//! The data dir holds `phoenix.json` (who this member is and which cluster it belongs to) and
//! `db/` (sled: Raft log, vote and state machine). A data dir is used only by the member and
//! cluster it was created for.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::config::{ClusterState, Config};
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
}

impl Identity {
    pub fn from_config(config: &Config) -> Identity {
        let initial_members: BTreeMap<NodeId, PeerNode> = config
            .initial_cluster
            .keys()
            .map(|name| {
                let peer_urls = config.peer_urls_of(name);
                (member_id(&peer_urls, &config.initial_cluster_token), PeerNode { name: name.clone(), peer_urls })
            })
            .collect();
        let member_id = member_id(&config.peer_urls_of(&config.name), &config.initial_cluster_token);
        Identity { cluster_id: cluster_id(initial_members.keys().copied()), member_id, initial_members }
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
}

const FORMAT: u32 = 1;
const META_FILE: &str = "phoenix.json";

/// An opened data dir: its identity and its sled database.
pub struct DataDir {
    pub path: PathBuf,
    pub meta: DataDirMeta,
    pub db: sled::Db,
    /// True when the data dir was created by this start.
    pub fresh: bool,
}

impl DataDir {
    /// Opens the data dir for `identity`, creating it when absent. Refuses one that belongs to
    /// another member or cluster, or that holds something other than Phoenix data.
    pub fn open(config: &Config, identity: &Identity) -> Result<DataDir> {
        let path = config.data_dir.clone();
        let existing = read_meta(&path)?;
        let fresh = existing.is_none();
        let meta = match existing {
            Some(meta) => {
                check_belongs(&path, &meta, config, identity)?;
                meta
            }
            None => {
                if config.initial_cluster_state == ClusterState::Existing {
                    return Err(Error::Config(
                        "--initial-cluster-state existing: joining a running cluster is not supported by Phoenix yet"
                            .into(),
                    ));
                }
                let meta = DataDirMeta {
                    format: FORMAT,
                    name: config.name.clone(),
                    cluster_id: identity.cluster_id,
                    member_id: identity.member_id,
                };
                create(&path, &meta)?;
                meta
            }
        };
        let db = sled::Config::new().path(path.join("db")).open().map_err(|e| {
            Error::Config(format!("cannot open data dir {}: {e} (is another member using it?)", path.display()))
        })?;
        Ok(DataDir { path, meta, db, fresh })
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.path.join("snap")
    }
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

fn check_belongs(path: &Path, meta: &DataDirMeta, config: &Config, identity: &Identity) -> Result<()> {
    if meta.format != FORMAT {
        return Err(Error::Config(format!(
            "data dir {} has format {}, this Phoenix reads {FORMAT}",
            path.display(),
            meta.format
        )));
    }
    if config.initial_cluster_state == ClusterState::New
        && (meta.cluster_id != identity.cluster_id || meta.member_id != identity.member_id)
    {
        return Err(Error::Config(format!(
            "data dir {} belongs to member {:x} of cluster {:x}, but the flags describe member {:x} of cluster {:x}; \
             use another --data-dir, or move this one aside",
            path.display(),
            meta.member_id,
            meta.cluster_id,
            identity.member_id,
            identity.cluster_id
        )));
    }
    Ok(())
}

/// Creates the data dir with its identity file, written whole or not at all.
fn create(path: &Path, meta: &DataDirMeta) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::Config(format!("cannot create data dir {}: {e}", path.display())))?;
    let tmp = path.join(format!("{META_FILE}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(meta).map_err(|e| Error::Internal(e.to_string()))?)?;
    file.sync_all()?;
    fs::rename(&tmp, path.join(META_FILE))?;
    fs::File::open(path)?.sync_all()?;
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
