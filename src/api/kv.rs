//! The KV service.

use std::future::ready;

use tonic::{Request, Response, Status};

use super::{unexpected, validate, Context};
use crate::pb::{self, command, command_result, kv_server::Kv, request_op};

pub struct KvService {
    ctx: Context,
}

impl KvService {
    pub fn new(ctx: Context) -> KvService {
        KvService { ctx }
    }
}

fn is_read_only(txn: &pb::TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).all(|op| match &op.request {
        Some(request_op::Request::RequestRange(_)) => true,
        Some(request_op::Request::RequestTxn(nested)) => is_read_only(nested),
        Some(_) | None => false,
    })
}

fn is_serializable(txn: &pb::TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).all(|op| match &op.request {
        Some(request_op::Request::RequestRange(r)) => r.serializable,
        Some(request_op::Request::RequestTxn(nested)) => is_serializable(nested),
        _ => true,
    })
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let req = request.into_inner();
        // As etcd's interceptor, before anything else looks at the request.
        if !req.serializable {
            self.ctx.refuse_on_learner()?;
        }
        validate::range(&req)?;
        if !req.serializable {
            self.ctx.node.linearize().await?;
        }
        let mut response = self.ctx.wait_out_installs(|| ready(self.ctx.node.kv.range(&req))).await?;
        response.header = self.ctx.header(response.header);
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.ctx.refuse_on_learner()?;
        let req = request.into_inner();
        validate::put(&req)?;
        validate::size(&req, &self.ctx.limits)?;
        self.ctx.check_quota(crate::kv::put_cost(&req)).await?;
        match self.ctx.propose(command::Op::Put(req)).await? {
            command_result::Result::Put(mut response) => {
                response.header = self.ctx.header(response.header);
                Ok(Response::new(response))
            }
            _ => Err(unexpected("put").into()),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        self.ctx.refuse_on_learner()?;
        let req = request.into_inner();
        validate::delete_range(&req)?;
        validate::size(&req, &self.ctx.limits)?;
        match self.ctx.propose(command::Op::DeleteRange(req)).await? {
            command_result::Result::DeleteRange(mut response) => {
                response.header = self.ctx.header(response.header);
                Ok(Response::new(response))
            }
            _ => Err(unexpected("delete").into()),
        }
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        // etcd's learners serve no txn, not even a serializable read-only one.
        self.ctx.refuse_on_learner()?;
        let req = request.into_inner();
        validate::txn(&req, &self.ctx.limits)?;
        validate::size(&req, &self.ctx.limits)?;
        let mut response = if is_read_only(&req) {
            // A read-only txn changes nothing, so like a Range it needs only a read index.
            if !is_serializable(&req) {
                self.ctx.node.linearize().await?;
            }
            self.ctx.wait_out_installs(|| ready(self.ctx.node.kv.read_only_txn(&req))).await?
        } else {
            self.ctx.check_quota(crate::kv::txn_cost(&req)).await?;
            match self.ctx.propose(command::Op::Txn(req)).await? {
                command_result::Result::Txn(response) => response,
                _ => return Err(unexpected("txn").into()),
            }
        };
        response.header = self.ctx.header(response.header);
        Ok(Response::new(response))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        self.ctx.refuse_on_learner()?;
        // History is removed while the compaction applies, so `physical` is always honoured.
        match self.ctx.propose(command::Op::Compaction(request.into_inner())).await? {
            command_result::Result::Compaction(mut response) => {
                response.header = self.ctx.header(response.header);
                Ok(Response::new(response))
            }
            _ => Err(unexpected("compaction").into()),
        }
    }
}
