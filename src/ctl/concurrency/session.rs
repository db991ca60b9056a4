//! A session: a lease granted for the recipes and kept alive in the background until the
//! session is dropped (clientv3's `concurrency.Session`). Like etcdctl, phoenixctl never
//! revokes it: the lease simply stops being renewed and expires.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Conn;
use crate::ctl::error::CtlError;
use crate::ctl::keepalive::KeepAlive;

/// clientv3's session TTL when none (or a non-positive one) is given, in seconds.
const DEFAULT_TTL: i64 = 60;

pub struct Session {
    lease: i64,
    /// Becomes true when the lease can no longer be kept alive.
    expired: watch::Receiver<bool>,
    keepalive: JoinHandle<()>,
}

impl Session {
    /// Grants a lease of `ttl` seconds and starts renewing it; the first renewal must come
    /// within `first_renewal`.
    pub async fn new(conn: &Conn, ttl: i64, first_renewal: Duration) -> Result<Session, CtlError> {
        let ttl = if ttl > 0 { ttl } else { DEFAULT_TTL };
        let granted = conn.client.clone().lease_grant(conn.deadline(), ttl).await?;
        let (expire, expired) = watch::channel(false);
        let mut renewals = KeepAlive::new(conn.client.clone(), granted.id, first_renewal);
        let keepalive = tokio::spawn(async move {
            while renewals.next().await.is_some() {}
            let _ = expire.send(true);
        });
        Ok(Session { lease: granted.id, expired, keepalive })
    }

    /// The session's lease ID.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Completes once the lease expired or could not be renewed in time.
    pub async fn done(&mut self) {
        // An error means the keep-alive task is gone, which also ends the session.
        let _ = self.expired.wait_for(|expired| *expired).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}
