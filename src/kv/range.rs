//! etcd's Range: revision checks, filters, sorting, limit and count, as etcd's apply does them.

use std::cmp::Ordering;

use super::reader::Reader;
use crate::pb::range_request::{SortOrder, SortTarget};
use crate::pb::{KeyValue, RangeRequest, RangeResponse, ResponseHeader};
use crate::{Error, Result};

/// Serves `req` from `reader`, where the store is at `current` and compacted at `compacted`.
pub(crate) fn range(reader: &dyn Reader, req: &RangeRequest, current: i64, compacted: i64) -> Result<RangeResponse> {
    let revision = read_revision(req.revision, current, compacted)?;
    // Like etcd, the scan stops early (one extra key tells `more`) when the request asks for no
    // sort order and no filters, even if a target other than KEY then sorts what was fetched.
    // A limit of 0 or below is none, as in etcd.
    let unsorted = req.sort_order == SortOrder::None as i32;
    let limit = usize::try_from(req.limit).ok().filter(|&limit| limit > 0);
    let early_limit = limit.filter(|_| unsorted && !has_filters(req)).map(|limit| limit.saturating_add(1));
    let fetched = if req.count_only { 0 } else { early_limit.unwrap_or(usize::MAX) };
    let (count, mut kvs) = reader.scan_counted(&req.key, &req.range_end, revision, fetched)?;
    kvs.retain(|kv| passes_filters(req, kv));
    sort(req, &mut kvs)?;
    let more = limit.is_some_and(|limit| kvs.len() > limit);
    if let Some(limit) = limit {
        kvs.truncate(limit);
    }
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    Ok(RangeResponse { header: Some(ResponseHeader { revision: current, ..Default::default() }), kvs, more, count })
}

/// The revision a read at `requested` (<= 0 meaning current) is served at.
pub(crate) fn read_revision(requested: i64, current: i64, compacted: i64) -> Result<i64> {
    if requested <= 0 {
        Ok(current)
    } else if requested > current {
        Err(Error::FutureRevision)
    } else if requested < compacted {
        Err(Error::Compacted)
    } else {
        Ok(requested)
    }
}

fn has_filters(req: &RangeRequest) -> bool {
    req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
}

/// etcd sorts ascending by default when a target other than the key is given, and skips the
/// sort for key-ascending since the scan already yields that order.
fn effective_order(req: &RangeRequest) -> SortOrder {
    let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    match (target, order) {
        (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
        (SortTarget::Key, order) => order,
        (_, SortOrder::None) => SortOrder::Ascend,
        (_, order) => order,
    }
}

fn sort(req: &RangeRequest, kvs: &mut [KeyValue]) -> Result<()> {
    let order = effective_order(req);
    if order == SortOrder::None {
        return Ok(());
    }
    let target = SortTarget::try_from(req.sort_target).map_err(|_| Error::InvalidSortOption)?;
    let compare: fn(&KeyValue, &KeyValue) -> Ordering = match target {
        SortTarget::Key => |a, b| a.key.cmp(&b.key),
        SortTarget::Version => |a, b| a.version.cmp(&b.version),
        SortTarget::Create => |a, b| a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => |a, b| a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => |a, b| a.value.cmp(&b.value),
    };
    // Stable, and descending reverses the comparison rather than the result, so equal targets
    // keep key order either way (as etcd's sort does).
    if order == SortOrder::Descend {
        kvs.sort_by(|a, b| compare(b, a));
    } else {
        kvs.sort_by(compare);
    }
    Ok(())
}
