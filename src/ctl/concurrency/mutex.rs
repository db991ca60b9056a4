//! A distributed mutex (clientv3's `concurrency.Mutex`): the session creates `<name>/<lease>`
//! if it is absent, and holds the lock once every key under `<name>/` created before its own is
//! deleted.

use super::{created_at, first_created, get, get_key, owned_key, put, read_kvs, wait_deletes, Conn};
use crate::ctl::error::CtlError;
use crate::pb;

pub struct Mutex {
    /// `<name>/`.
    prefix: Vec<u8>,
    /// `<name>/<lease>` once locking started.
    key: Vec<u8>,
    /// The create revision of `key`.
    revision: i64,
    /// The header of the answer that gave the lock.
    header: Option<pb::ResponseHeader>,
}

impl Mutex {
    pub fn new(name: &[u8]) -> Mutex {
        Mutex { prefix: [name, b"/"].concat(), key: Vec::new(), revision: -1, header: None }
    }

    /// Waits for the lock; on failure the session's key is deleted again.
    pub async fn lock(&mut self, conn: &Conn, lease: i64) -> Result<(), CtlError> {
        self.key = owned_key(&self.prefix, lease);
        let txn = pb::TxnRequest {
            compare: vec![created_at(&self.key, 0)],
            success: vec![put(&self.key, b"", lease), get(first_created(&self.prefix))],
            failure: vec![get(get_key(&self.key)), get(first_created(&self.prefix))],
        };
        let response = conn.client.clone().txn(conn.deadline(), txn).await?;
        self.revision = response.header.map_or(0, |h| h.revision);
        if !response.succeeded {
            self.revision = read_kvs(&response, 0)?.first().map_or(self.revision, |kv| kv.create_revision);
        }
        let owner = read_kvs(&response, 1)?;
        if owner.first().is_none_or(|kv| kv.create_revision == self.revision) {
            self.header = response.header;
            return Ok(());
        }
        match wait_deletes(conn, &self.prefix, self.revision - 1).await {
            Ok(header) => {
                self.header = header;
                Ok(())
            }
            Err(error) => {
                // The lock was not taken; whether the key goes is secondary to why.
                let _ = self.unlock(conn).await;
                Err(error)
            }
        }
    }

    /// Releases the lock by deleting the session's key (nothing to do before locking began).
    pub async fn unlock(&mut self, conn: &Conn) -> Result<(), CtlError> {
        if self.key.is_empty() {
            return Ok(());
        }
        let delete = pb::DeleteRangeRequest { key: self.key.clone(), ..Default::default() };
        conn.client.clone().delete_range(conn.deadline(), delete).await?;
        self.key = b"\0".to_vec();
        self.revision = -1;
        Ok(())
    }

    /// The session's key, `<name>/<lease>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The header of the answer that gave the lock.
    pub fn header(&self) -> Option<pb::ResponseHeader> {
        self.header
    }
}
