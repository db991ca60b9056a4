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
        validate::range(&req)?;
        if !req.serializable {
            self.ctx.refuse_on_learner()?;
            self.ctx.node.linearize().await?;
        }
        let mut response = self.ctx.wait_out_installs(|| ready(self.ctx.node.kv.range(&req))).await?;
        response.header = self.ctx.header(response.header);
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = request.into_inner();
        validate::put(&req)?;
        self.ctx.refuse_on_learner()?;
        validate::size(&req, &self.ctx.limits)?;
        self.ctx.check_quota().await?;
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
        let req = request.into_inner();
        validate::delete_range(&req)?;
        self.ctx.refuse_on_learner()?;
        match self.ctx.propose(command::Op::DeleteRange(req)).await? {
            command_result::Result::DeleteRange(mut response) => {
                response.header = self.ctx.header(response.header);
                Ok(Response::new(response))
            }
            _ => Err(unexpected("delete").into()),
        }
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let req = request.into_inner();
        validate::txn(&req, &self.ctx.limits)?;
        let (read_only, serializable) = (is_read_only(&req), is_serializable(&req));
        if !(read_only && serializable) {
            self.ctx.refuse_on_learner()?;
        }
        validate::size(&req, &self.ctx.limits)?;
        let mut response = if read_only {
            // A read-only txn changes nothing, so like a Range it needs only a read index.
            if !serializable {
                self.ctx.node.linearize().await?;
            }
            self.ctx.wait_out_installs(|| ready(self.ctx.node.kv.read_only_txn(&req))).await?
        } else {
            if crate::kv::takes_space(&req) {
                self.ctx.check_quota().await?;
            }
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
