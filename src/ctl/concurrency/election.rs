//! Leader election (clientv3's `concurrency.Election`): a candidate's session creates
//! `<name>/<lease>` holding its proposal and leads once every key under `<name>/` created before
//! its own is deleted; the leader's key holds the value everyone observes.

use super::{created_at, first_created, get, get_key, owned_key, put, read_kvs, wait_deletes, Conn};
use crate::ctl::error::{CtlError, EXIT_ERROR};
use crate::ctl::watcher::{Update, Watcher};
use crate::pb;
use crate::pb::mvccpb::event::EventType;
use crate::pb::request_op::Request;

/// clientv3's `ErrElectionNotLeader` text.
const NOT_LEADER: &str = "election: not leader";

/// The key a campaign created and the lease that owns it.
struct Candidacy {
    key: Vec<u8>,
    revision: i64,
    lease: i64,
}

pub struct Election {
    /// `<name>/`.
    prefix: Vec<u8>,
    candidacy: Option<Candidacy>,
}

impl Election {
    pub fn new(name: &[u8]) -> Election {
        Election { prefix: [name, b"/"].concat(), candidacy: None }
    }

    /// Puts `value` forward under the session's lease and waits until it leads.
    pub async fn campaign(&mut self, conn: &Conn, lease: i64, value: &[u8]) -> Result<(), CtlError> {
        let key = owned_key(&self.prefix, lease);
        let txn = pb::TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put(&key, value, lease)],
            failure: vec![get(get_key(&key))],
        };
        let response = conn.client.clone().txn(conn.deadline(), txn).await?;
        let mut revision = response.header.map_or(0, |h| h.revision);
        let mut proclaim = false;
        if !response.succeeded {
            if let Some(kv) = read_kvs(&response, 0)?.first() {
                revision = kv.create_revision;
                proclaim = kv.value != value;
            }
        }
        self.candidacy = Some(Candidacy { key, revision, lease });
        if proclaim {
            if let Err(error) = self.proclaim(conn, value).await {
                // The campaign failed; withdrawing is a courtesy.
                let _ = self.resign(conn).await;
                return Err(error);
            }
        }
        if let Err(error) = wait_deletes(conn, &self.prefix, revision - 1).await {
            self.candidacy = None;
            return Err(error);
        }
        Ok(())
    }

    /// Replaces the leader's value, if this session still leads.
    pub async fn proclaim(&mut self, conn: &Conn, value: &[u8]) -> Result<(), CtlError> {
        let Some(candidacy) = &self.candidacy else {
            return Err(CtlError::new(EXIT_ERROR, NOT_LEADER));
        };
        let txn = pb::TxnRequest {
            compare: vec![created_at(&candidacy.key, candidacy.revision)],
            success: vec![put(&candidacy.key, value, candidacy.lease)],
            failure: vec![],
        };
        if !conn.client.clone().txn(conn.deadline(), txn).await?.succeeded {
            self.candidacy = None;
            return Err(CtlError::new(EXIT_ERROR, NOT_LEADER));
        }
        Ok(())
    }

    /// Gives up leadership (or the candidacy) by deleting the session's key, if it is still ours.
    pub async fn resign(&mut self, conn: &Conn) -> Result<(), CtlError> {
        let Some(candidacy) = self.candidacy.take() else { return Ok(()) };
        let delete = pb::DeleteRangeRequest { key: candidacy.key.clone(), ..Default::default() };
        let txn = pb::TxnRequest {
            compare: vec![created_at(&candidacy.key, candidacy.revision)],
            success: vec![pb::RequestOp { request: Some(Request::RequestDeleteRange(delete)) }],
            failure: vec![],
        };
        conn.client.clone().txn(conn.deadline(), txn).await.map(drop)
    }

    /// The campaign's key, `<name>/<lease>`, while it stands.
    pub fn key(&self) -> &[u8] {
        self.candidacy.as_ref().map_or(&[], |c| &c.key)
    }

    /// Hands each leader, and each new value of the leader's key, to `on_leader` as a read of
    /// the key; returns when the observation is lost (clientv3's `Observe` closing).
    pub async fn observe(
        &self,
        conn: &Conn,
        mut on_leader: impl FnMut(&pb::RangeResponse) -> Result<(), CtlError>,
    ) -> Result<(), CtlError> {
        let mut client = conn.client.clone();
        loop {
            let Ok(mut read) = client.range(conn.deadline(), first_created(&self.prefix)).await else {
                return Ok(());
            };
            let leader = match read.kvs.first() {
                Some(kv) => Some((read.header, kv.clone())),
                None => self.first_leader(conn, read.header.map_or(0, |h| h.revision)).await?,
            };
            let Some((header, kv)) = leader else { return Ok(()) };
            on_leader(&pb::RangeResponse { header, kvs: vec![kv.clone()], ..Default::default() })?;
            let mut watcher = Watcher::new(conn.client.clone(), false);
            let from = header.map_or(0, |h| h.revision) + 1;
            let request = pb::WatchCreateRequest { key: kv.key, start_revision: from, ..Default::default() };
            watcher.watch(conn.deadline(), request).await?;
            'leading: loop {
                let Update::Response { response, .. } = watcher.next().await else { return Ok(()) };
                for event in response.events {
                    if event.r#type == EventType::Delete as i32 {
                        break 'leading;
                    }
                    read.header = response.header;
                    read.kvs = event.kv.into_iter().collect();
                    on_leader(&read)?;
                }
            }
        }
    }

    /// Waits, from `revision`, for the first key put under the prefix; `None` if the watch ends.
    async fn first_leader(
        &self,
        conn: &Conn,
        revision: i64,
    ) -> Result<Option<(Option<pb::ResponseHeader>, pb::KeyValue)>, CtlError> {
        let mut watcher = Watcher::new(conn.client.clone(), false);
        let request = pb::WatchCreateRequest {
            key: self.prefix.clone(),
            range_end: super::prefix_end(&self.prefix),
            start_revision: revision,
            ..Default::default()
        };
        watcher.watch(conn.deadline(), request).await?;
        loop {
            let Update::Response { response, error: None, .. } = watcher.next().await else { return Ok(None) };
            let put = response.events.into_iter().find(|e| e.r#type == EventType::Put as i32);
            if let Some(kv) = put.and_then(|event| event.kv) {
                let header = response.header.map(|h| pb::ResponseHeader { revision: kv.mod_revision, ..h });
                return Ok(Some((header, kv)));
            }
        }
    }
}
