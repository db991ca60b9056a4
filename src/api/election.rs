//! The Election service (etcd's v3election): campaigns are keys `name/<lease hex>`; the leader
//! is the one created first; its value is what it proclaims.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::lock::{create_revision_is, first_kv, get_op, put_op};
use super::recipes::{session_key, CleanupOnDrop, Recipes};
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse,
    ResignRequest, ResignResponse,
};
use crate::pb::{self, request_op, RequestOp};
use crate::{Error, Result};

/// Leader changes queued per Observe stream.
const OBSERVE_BUFFER: usize = 16;

pub struct ElectionService {
    recipes: Arc<Recipes>,
}

impl ElectionService {
    pub fn new(recipes: Recipes) -> ElectionService {
        ElectionService { recipes: Arc::new(recipes) }
    }
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// The txn that changes a leader's value, only while it still leads.
fn proclaim_txn(leader: &LeaderKey, value: &[u8]) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![create_revision_is(&leader.key, leader.rev)],
        success: vec![put_op(&leader.key, value, leader.lease)],
        failure: vec![],
    }
}

impl ElectionService {
    async fn campaign(&self, req: CampaignRequest) -> Result<CampaignResponse> {
        let prefix = prefix_of(&req.name);
        let key = session_key(&prefix, req.lease);
        let txn = pb::TxnRequest {
            compare: vec![create_revision_is(&key, 0)],
            success: vec![put_op(&key, &req.value, req.lease)],
            failure: vec![get_op(&key)],
        };
        let response = self.recipes.txn(txn).await?;
        let mut leader = LeaderKey { name: req.name, key: key.clone(), rev: 0, lease: req.lease };
        leader.rev = match response.succeeded {
            true => response.header.as_ref().map_or(0, |h| h.revision),
            false => {
                let existing = first_kv(&response, 0)?;
                if existing.value != req.value {
                    self.proclaim(&leader_with_rev(&leader, existing.create_revision), &req.value).await?;
                }
                existing.create_revision
            }
        };
        let cleanup = CleanupOnDrop::new(self.recipes.clone(), key);
        self.recipes.wait_deletes(&prefix, leader.rev - 1).await?;
        cleanup.disarm();
        Ok(CampaignResponse { header: response.header, leader: Some(leader) })
    }

    async fn proclaim(&self, leader: &LeaderKey, value: &[u8]) -> Result<pb::ResponseHeader> {
        let response = self.recipes.txn(proclaim_txn(leader, value)).await?;
        if !response.succeeded {
            return Err(Error::ElectionNotLeader);
        }
        Ok(response.header.unwrap_or_default())
    }

    async fn resign(&self, leader: &LeaderKey) -> Result<pb::ResponseHeader> {
        let delete = pb::DeleteRangeRequest { key: leader.key.clone(), ..Default::default() };
        let txn = pb::TxnRequest {
            compare: vec![create_revision_is(&leader.key, leader.rev)],
            success: vec![RequestOp { request: Some(request_op::Request::RequestDeleteRange(delete)) }],
            failure: vec![],
        };
        Ok(self.recipes.txn(txn).await?.header.unwrap_or_default())
    }

    async fn leader(&self, name: &[u8]) -> Result<LeaderResponse> {
        let (response, first) = self.recipes.first_created(&prefix_of(name)).await?;
        let kv = first.ok_or(Error::ElectionNoLeader)?;
        Ok(LeaderResponse { header: response.header, kv: Some(kv) })
    }
}

fn leader_with_rev(leader: &LeaderKey, rev: i64) -> LeaderKey {
    LeaderKey { rev, ..leader.clone() }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        Ok(Response::new(ElectionService::campaign(self, request.into_inner()).await?))
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        let req = request.into_inner();
        let leader = req.leader.ok_or(Error::MissingLeaderKey)?;
        let header = ElectionService::proclaim(self, &leader, &req.value).await?;
        Ok(Response::new(ProclaimResponse { header: Some(header) }))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        Ok(Response::new(ElectionService::leader(self, &request.into_inner().name).await?))
    }

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<BoxStream<LeaderResponse>>, Status> {
        let prefix = prefix_of(&request.into_inner().name);
        let (out, responses) = mpsc::channel(OBSERVE_BUFFER);
        let recipes = self.recipes.clone();
        tokio::spawn(async move {
            if let Err(e) = observe(&recipes, &prefix, &out).await {
                let _ = out.send(Err(e.into())).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let leader = request.into_inner().leader.ok_or(Error::MissingLeaderKey)?;
        let header = ElectionService::resign(self, &leader).await?;
        Ok(Response::new(ResignResponse { header: Some(header) }))
    }
}

type Observer = mpsc::Sender<std::result::Result<LeaderResponse, Status>>;

/// Sends the leader, and again whenever the leader or its value changes, until the client goes.
async fn observe(recipes: &Recipes, prefix: &[u8], out: &Observer) -> Result<()> {
    let mut last_sent: Option<pb::KeyValue> = None;
    loop {
        let mut applied = recipes.hub.subscribe();
        let (response, leader) = recipes.first_created(prefix).await?;
        if let Some(kv) = leader {
            let changed =
                last_sent.as_ref().is_none_or(|last| last.key != kv.key || last.mod_revision != kv.mod_revision);
            if changed {
                let answer = LeaderResponse { header: response.header, kv: Some(kv.clone()) };
                if out.send(Ok(answer)).await.is_err() {
                    return Ok(());
                }
                last_sent = Some(kv);
            }
        }
        // Look again once anything under the prefix changes.
        loop {
            tokio::select! {
                _ = out.closed() => return Ok(()),
                batch = applied.recv() => match batch {
                    Ok(batch) if !batch.reset && !touches(&batch.events, prefix) => continue,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Err(Error::Stopped),
                },
            }
        }
    }
}

fn touches(events: &[pb::mvccpb::Event], prefix: &[u8]) -> bool {
    events.iter().any(|e| e.kv.as_ref().is_some_and(|kv| kv.key.starts_with(prefix)))
}
