//! `get`, `put` and `del`: etcdctl 3.4's argument rules and requests (etcd-io/etcd v3.4
//! `get_command.go`, `put_command.go`, `del_command.go` and clientv3's `op.go`), shared with the
//! operations of `txn`.

use std::io::Read;

use super::cli::{DelArgs, GetArgs, PutArgs};
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_BAD_FEATURE};
use super::gofmt::quote;
use super::goparse::parse_int;
use super::{Ctx, Io};
use crate::pb;
use crate::pb::range_request::{SortOrder, SortTarget};

pub async fn get(ctx: &Ctx, args: GetArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let request = range_request(&args)?;
    let mut printer = ctx.printer()?;
    let response = ctx.client()?.range(ctx.deadline(), request).await?;
    if args.print_value_only {
        printer.set_value_only()?;
    }
    printer.print(io.out, &response)
}

pub async fn put(ctx: &Ctx, args: PutArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let request = put_request(&args, Some(&mut *io.input))?;
    let printer = ctx.printer()?;
    let response = ctx.client()?.put(ctx.deadline(), request).await?;
    printer.print(io.out, &response)
}

pub async fn del(ctx: &Ctx, args: DelArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let request = delete_request(&args)?;
    let printer = ctx.printer()?;
    let response = ctx.client()?.delete_range(ctx.deadline(), request).await?;
    printer.print(io.out, &response)
}

/// The Range request for `get`'s arguments (etcdctl's `getGetOp`).
pub fn range_request(args: &GetArgs) -> Result<pb::RangeRequest, CtlError> {
    let Some(key) = args.args.first() else {
        return Err(bad_args("get command needs one argument as key and an optional argument as range_end"));
    };
    check_range_flags(args.prefix, args.from_key)?;
    let serializable = match args.consistency.as_str() {
        "s" => true,
        "l" => false,
        other => {
            return Err(CtlError::new(
                EXIT_BAD_FEATURE,
                format!("unknown consistency flag {}", quote(other.as_bytes())),
            ))
        }
    };
    let range_end = explicit_range_end(&args.args, args.prefix || args.from_key)?;
    let (sort_order, sort_target) = sort(args.order.as_deref().unwrap_or(""), args.sort_by.as_deref().unwrap_or(""))?;
    let (key, range_end) = key_range(bytes(key), range_end, args.prefix, args.from_key);
    Ok(pb::RangeRequest {
        key,
        range_end,
        limit: args.limit,
        revision: args.rev.max(0),
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable,
        keys_only: args.keys_only,
        count_only: false,
        min_mod_revision: args.min_mod_revision,
        max_mod_revision: args.max_mod_revision,
        min_create_revision: args.min_create_revision,
        max_create_revision: args.max_create_revision,
    })
}

/// The Put request for `put`'s arguments (etcdctl's `getPutOp`); the value comes from `stdin`
/// when it is not an argument and a stdin is offered.
pub fn put_request(args: &PutArgs, stdin: Option<&mut dyn Read>) -> Result<pb::PutRequest, CtlError> {
    let missing = || bad_args("put command needs 1 argument and input from stdin or 2 arguments");
    let key = args.args.first().ok_or_else(missing)?;
    if args.ignore_value && args.args.len() > 1 {
        return Err(bad_args("put command needs only 1 argument when 'ignore-value' is set"));
    }
    let value = match (args.ignore_value, args.args.get(1)) {
        (true, _) => Vec::new(),
        (false, Some(value)) => bytes(value),
        (false, None) => read_value(stdin).ok_or_else(missing)?,
    };
    let lease =
        parse_int(&args.lease, 16).map_err(|e| bad_args(&format!("bad lease ID ({e}), expecting ID in Hex")))?;
    Ok(pb::PutRequest {
        key: bytes(key),
        value,
        lease,
        prev_kv: args.prev_kv,
        ignore_value: args.ignore_value,
        ignore_lease: args.ignore_lease,
    })
}

/// The DeleteRange request for `del`'s arguments (etcdctl's `getDelOp`).
pub fn delete_request(args: &DelArgs) -> Result<pb::DeleteRangeRequest, CtlError> {
    if args.args.is_empty() || args.args.len() > 2 {
        return Err(bad_args("del command needs one argument as key and an optional argument as range_end"));
    }
    check_range_flags(args.prefix, args.from_key)?;
    let range_end = explicit_range_end(&args.args, args.prefix || args.from_key)?;
    let (key, range_end) = key_range(bytes(&args.args[0]), range_end, args.prefix, args.from_key);
    Ok(pb::DeleteRangeRequest { key, range_end, prev_kv: args.prev_kv })
}

/// All of stdin, which must not be empty (etcdctl's `argOrStdin`).
fn read_value(stdin: Option<&mut dyn Read>) -> Option<Vec<u8>> {
    let mut value = Vec::new();
    stdin?.read_to_end(&mut value).ok()?;
    (!value.is_empty()).then_some(value)
}

fn check_range_flags(prefix: bool, from_key: bool) -> Result<(), CtlError> {
    if prefix && from_key {
        return Err(bad_args("`--prefix` and `--from-key` cannot be set at the same time, choose one"));
    }
    Ok(())
}

/// The second argument as the range end; it cannot be combined with `--prefix` or `--from-key`.
fn explicit_range_end(args: &[std::ffi::OsString], ranged: bool) -> Result<Vec<u8>, CtlError> {
    match args.get(1) {
        Some(_) if ranged => {
            Err(bad_args("too many arguments, only accept one argument when `--prefix` or `--from-key` is set"))
        }
        Some(end) => Ok(bytes(end)),
        None => Ok(Vec::new()),
    }
}

/// clientv3's `WithPrefix` and `WithFromKey`; an empty key with either means every key.
fn key_range(key: Vec<u8>, range_end: Vec<u8>, prefix: bool, from_key: bool) -> (Vec<u8>, Vec<u8>) {
    match (prefix || from_key, key.is_empty()) {
        (true, true) => (vec![0], vec![0]),
        (true, false) if from_key => (key, vec![0]),
        (true, false) => {
            let end = prefix_end(&key);
            (key, end)
        }
        (false, _) => (key, range_end),
    }
}

/// The first key after every key that starts with `prefix` (clientv3's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|b| *b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// `--order` and `--sort-by`; clientv3 drops an ascending sort by key, which is the natural order.
fn sort(order: &str, target: &str) -> Result<(SortOrder, SortTarget), CtlError> {
    let sort_order = match order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => return Err(CtlError::new(EXIT_BAD_FEATURE, format!("bad sort order {order}"))),
    };
    let sort_target = match target.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => return Err(CtlError::new(EXIT_BAD_FEATURE, format!("bad sort target {target}"))),
    };
    match (sort_order, sort_target) {
        (SortOrder::Ascend, SortTarget::Key) => Ok((SortOrder::None, SortTarget::Key)),
        chosen => Ok(chosen),
    }
}

/// A command-line argument's raw bytes: keys and values need not be UTF-8.
fn bytes(arg: &std::ffi::OsStr) -> Vec<u8> {
    arg.as_encoded_bytes().to_vec()
}

fn bad_args(message: &str) -> CtlError {
    CtlError::new(EXIT_BAD_ARGS, message)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Get {
        #[command(flatten)]
        args: GetArgs,
    }

    fn get(args: &[&str]) -> Result<pb::RangeRequest, CtlError> {
        range_request(&Get::try_parse_from(std::iter::once("get").chain(args.iter().copied())).unwrap().args)
    }

    #[test]
    fn prefix_ends_increment_the_last_byte_below_ff() {
        assert_eq!(prefix_end(b"foo"), b"fop");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn get_builds_clientv3_requests() {
        let request = get(&["foo", "--prefix", "--limit", "2", "--order", "descend", "--sort-by", "modify"]).unwrap();
        assert_eq!((request.key.as_slice(), request.range_end.as_slice()), (&b"foo"[..], &b"fop"[..]));
        assert_eq!(request.limit, 2);
        assert_eq!((request.sort_order, request.sort_target), (SortOrder::Descend as i32, SortTarget::Mod as i32));
        let everything = get(&["", "--prefix"]).unwrap();
        assert_eq!((everything.key, everything.range_end), (vec![0], vec![0]));
        let ascending = get(&["a", "--order", "ASCEND"]).unwrap();
        assert_eq!(ascending.sort_order, SortOrder::None as i32);
        assert!(get(&["a", "--consistency", "s"]).unwrap().serializable);
    }

    #[test]
    fn get_rejects_what_etcdctl_rejects() {
        let message = |args: &[&str]| get(args).unwrap_err().message.unwrap_or_default();
        assert_eq!(message(&[]), "get command needs one argument as key and an optional argument as range_end");
        assert_eq!(
            message(&["a", "b", "--prefix"]),
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set"
        );
        assert_eq!(message(&["a", "--consistency", "x"]), "unknown consistency flag \"x\"");
        assert_eq!(message(&["a", "--order", "up"]), "bad sort order up");
        assert_eq!(get(&["a", "--sort-by", "x"]).unwrap_err().code, EXIT_BAD_FEATURE);
    }
}
