//! clientv3's keep-alive loop for one lease (etcd-io/etcd v3.4 `clientv3/lease.go`), which
//! `lease keep-alive` prints and a session runs in the background.
//!
//! The first renewal is asked for at once, the next a third of the granted TTL after each answer;
//! while an answer is overdue the request is repeated every half second. The loop ends when the
//! server answers TTL 0 (the lease expired or was revoked) or when no answer came for a whole
//! TTL (the first time: `--dial-timeout` plus a second). A broken stream is opened again after
//! half a second.

use std::time::Duration;

use tokio::time::{sleep, sleep_until, Instant};

use super::client::{Client, Duplex};
use crate::pb;

/// clientv3's pause between sends while an answer is overdue, and before reopening a stream.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Keeps one lease alive.
pub struct KeepAlive {
    client: Client,
    id: i64,
    stream: Option<Duplex<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>>,
    /// When to ask for the next renewal.
    next_send: Instant,
    /// When the lease is given up for lost unless renewed.
    deadline: Instant,
}

impl KeepAlive {
    /// Starts keeping lease `id` alive; the first answer must come within `first_timeout`.
    pub fn new(client: Client, id: i64, first_timeout: Duration) -> KeepAlive {
        let now = Instant::now();
        KeepAlive { client, id, stream: None, next_send: now, deadline: now + first_timeout }
    }

    /// The next renewal, or `None` once the lease is gone or went unrenewed for its TTL.
    pub async fn next(&mut self) -> Option<pb::LeaseKeepAliveResponse> {
        loop {
            let request = pb::LeaseKeepAliveRequest { id: self.id };
            let Some(stream) = &mut self.stream else {
                let opened = tokio::select! {
                    opened = self.client.lease_keep_alive(self.deadline, request) => opened,
                    _ = sleep_until(self.deadline) => return None,
                };
                match opened {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        self.next_send = Instant::now() + RETRY_PAUSE;
                    }
                    Err(_) => self.pause().await?,
                }
                continue;
            };
            tokio::select! {
                _ = sleep_until(self.deadline) => return None,
                _ = sleep_until(self.next_send) => {
                    // A stream whose call ended reports it on its answers.
                    let _ = stream.requests.send(request).await;
                    self.next_send = Instant::now() + RETRY_PAUSE;
                }
                answer = stream.responses.message() => match answer {
                    Ok(Some(answer)) if answer.id != self.id => {}
                    Ok(Some(answer)) if answer.ttl <= 0 => return None,
                    Ok(Some(answer)) => {
                        let ttl = Duration::from_secs(answer.ttl.unsigned_abs());
                        let now = Instant::now();
                        self.next_send = now + ttl / 3;
                        self.deadline = now + ttl;
                        return Some(answer);
                    }
                    Ok(None) | Err(_) => {
                        self.stream = None;
                        self.pause().await?;
                    }
                },
            }
        }
    }

    /// Waits before reopening the stream; `None` if the lease's time runs out first.
    async fn pause(&self) -> Option<()> {
        let wake = Instant::now() + RETRY_PAUSE;
        if wake >= self.deadline {
            sleep_until(self.deadline).await;
            return None;
        }
        sleep(RETRY_PAUSE).await;
        Some(())
    }
}
