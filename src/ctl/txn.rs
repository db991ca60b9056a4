//! `txn`: reads compares, then success operations, then failure operations from stdin, one per
//! line, each section ended by an empty line, exactly as etcdctl 3.4 does (etcd-io/etcd v3.4
//! `txn_command.go`), then commits them as one transaction.
//!
//! A compare is `<target>("<key>") <op> "<value>"` with target `ver`/`version`, `c`/`create`,
//! `m`/`mod`, `val`/`value` or `lease`, op `=`, `!=`, `<` or `>`, and Go-quoted key and value. An
//! operation is a `get`, `put` or `del` command line with its flags; arguments are split as
//! etcdctl's `argify` splits them.
//!
//! Where etcdctl 3.4 panics or misparses, phoenixctl follows etcd's later fixes: `lease("k") = "1a"`
//! compares the key's lease (hex), an unknown operator is an error, and a single-quoted argument
//! is its text without the quotes.

use std::ffi::OsString;
use std::io::{BufRead, Write};

use clap::{Parser, Subcommand};

use super::cli::{parse, DelArgs, GetArgs, PutArgs, TxnArgs};
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_INVALID_INPUT};
use super::gofmt::quote;
use super::goparse::{parse_int, unquote};
use super::kv::{delete_request, put_request, range_request};
use super::printer::write_error;
use super::{Ctx, Io};
use crate::pb;
use crate::pb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::request_op::Request;

pub async fn txn(ctx: &Ctx, args: TxnArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    if !args.args.is_empty() {
        return Err(CtlError::new(EXIT_BAD_ARGS, "txn command does not accept argument"));
    }
    let printer = ctx.printer()?;
    let mut client = ctx.client()?;
    prompt(io.out, args.interactive, "compares:")?;
    let compare = read_section(&mut *io.input, parse_compare)?;
    prompt(io.out, args.interactive, "success requests (get, put, del):")?;
    let success = read_section(&mut *io.input, parse_op)?;
    prompt(io.out, args.interactive, "failure requests (get, put, del):")?;
    let failure = read_section(&mut *io.input, parse_op)?;
    let response = client.txn(ctx.deadline(), pb::TxnRequest { compare, success, failure }).await?;
    printer.print(io.out, &response)
}

fn prompt(out: &mut dyn Write, interactive: bool, text: &str) -> Result<(), CtlError> {
    if interactive {
        writeln!(out, "{text}").and_then(|()| out.flush()).map_err(write_error)?;
    }
    Ok(())
}

/// Parses lines until an empty one; input that ends before it is etcdctl's `Error: EOF`.
fn read_section<T>(input: &mut dyn BufRead, parse: fn(&[u8]) -> Result<T, CtlError>) -> Result<Vec<T>, CtlError> {
    let mut items = Vec::new();
    loop {
        let mut line = Vec::new();
        input.read_until(b'\n', &mut line).map_err(|e| invalid_input(e.to_string()))?;
        if line.last() != Some(&b'\n') {
            return Err(invalid_input("EOF"));
        }
        match line.trim_ascii() {
            [] => return Ok(items),
            line => items.push(parse(line)?),
        }
    }
}

fn parse_compare(line: &[u8]) -> Result<pb::Compare, CtlError> {
    let line = String::from_utf8_lossy(line);
    let Some((target, rest)) = line.split_once('(') else {
        return Err(invalid_input(format!("malformed comparison: {line}")));
    };
    let scanned = scan_compare(rest);
    if scanned.count != 3 {
        let (key, op, value) = (quote(&scanned.key), &scanned.op, quote(&scanned.value));
        return Err(invalid_input(format!("malformed comparison: {line}; got {target}({key}) {op} {value}")));
    }
    let value = String::from_utf8_lossy(&scanned.value).into_owned();
    let number =
        |base| parse_int(&value, base).map_err(|_| invalid_input(format!("invalid txn compare request: {line}")));
    let (target, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(number(10)?)),
        "c" | "create" => (CompareTarget::Create, TargetUnion::CreateRevision(number(10)?)),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number(10)?)),
        "val" | "value" => (CompareTarget::Value, TargetUnion::Value(scanned.value.clone())),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(number(16)?)),
        other => return Err(invalid_input(format!("malformed comparison: {line} (unknown target {other})"))),
    };
    let result = match scanned.op.as_str() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        op => return Err(invalid_input(format!("malformed comparison: {line} (unknown operator {op})"))),
    };
    Ok(pb::Compare {
        result: result as i32,
        target: target as i32,
        key: scanned.key,
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// What Go's `fmt.Sscanf(rest, "%q) %s %q", &key, &op, &value)` assigned, and how many.
#[derive(Debug, Default, PartialEq)]
struct Scanned {
    key: Vec<u8>,
    op: String,
    value: Vec<u8>,
    count: usize,
}

fn scan_compare(rest: &str) -> Scanned {
    let mut scan = Scanner { rest };
    let mut scanned = Scanned::default();
    let Some(key) = scan.quoted() else { return scanned };
    (scanned.key, scanned.count) = (key, 1);
    if !scan.literal(')') || !scan.spaces() {
        return scanned;
    }
    let Some(op) = scan.word() else { return scanned };
    (scanned.op, scanned.count) = (op, 2);
    if !scan.spaces() {
        return scanned;
    }
    if let Some(value) = scan.quoted() {
        (scanned.value, scanned.count) = (value, 3);
    }
    scanned
}

/// The input side of Go's `fmt` scanning, for the verbs `parseCompare` uses.
struct Scanner<'a> {
    rest: &'a str,
}

impl Scanner<'_> {
    /// `%q`: a Go string literal in double quotes or back quotes, after optional spaces.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        self.rest = self.rest.trim_start();
        let bytes = self.rest.as_bytes();
        let end = match bytes.first()? {
            b'`' => self.rest[1..].find('`')? + 1,
            b'"' => closing_quote(bytes)?,
            _ => return None,
        };
        let literal = &self.rest[..=end];
        self.rest = &self.rest[end + 1..];
        match bytes[0] {
            b'`' => Some(literal.as_bytes()[1..end].to_vec()),
            _ => unquote(literal.as_bytes()),
        }
    }

    /// A literal character of the format.
    fn literal(&mut self, c: char) -> bool {
        self.rest.strip_prefix(c).map(|rest| self.rest = rest).is_some()
    }

    /// A space of the format: one or more spaces, or the end of the input.
    fn spaces(&mut self) -> bool {
        let trimmed = self.rest.trim_start();
        let matched = trimmed.len() < self.rest.len() || self.rest.is_empty();
        self.rest = trimmed;
        matched
    }

    /// `%s`: the next run of non-space characters.
    fn word(&mut self) -> Option<String> {
        self.rest = self.rest.trim_start();
        let end = self.rest.find(char::is_whitespace).unwrap_or(self.rest.len());
        let word = (end > 0).then(|| self.rest[..end].to_string());
        self.rest = &self.rest[end..];
        word
    }
}

/// The index of the quote that closes the double-quoted literal at the start of `bytes`.
fn closing_quote(bytes: &[u8]) -> Option<usize> {
    let mut i = 1;
    loop {
        match *bytes.get(i)? {
            b'"' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// One `get`, `put` or `del` line of a txn, parsed as its command would be.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, infer_subcommands = true, disable_help_subcommand = true)]
struct OpLine {
    #[command(subcommand)]
    op: Op,
}

#[derive(Subcommand, Debug)]
enum Op {
    Get(GetArgs),
    Put(PutArgs),
    Del(DelArgs),
}

fn parse_op(line: &[u8]) -> Result<pb::RequestOp, CtlError> {
    let text = String::from_utf8_lossy(line);
    let args = argify(line)?;
    if args.len() < 2 {
        return Err(invalid_input(format!("invalid txn compare request: {text}")));
    }
    let line = parse::<OpLine>(args.into_iter().map(os_string))
        .map_err(|_| invalid_input(format!("invalid txn request: {text}")))?;
    let request = match line.op {
        Op::Get(args) => Request::RequestRange(range_request(&args)?),
        Op::Put(args) => Request::RequestPut(put_request(&args, None)?),
        Op::Del(args) => Request::RequestDeleteRange(delete_request(&args)?),
    };
    Ok(pb::RequestOp { request: Some(request) })
}

/// etcdctl's `argify`: the tokens of `"(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?`, with
/// double-quoted ones unquoted as Go literals and single-quoted ones stripped of their quotes.
pub fn argify(line: &[u8]) -> Result<Vec<Vec<u8>>, CtlError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let Some(len) = double_quoted(rest).or_else(|| single_quoted(rest)).or_else(|| bare(rest)) else {
            i += 1;
            continue;
        };
        let token = &rest[..len];
        args.push(match token[0] {
            b'"' => unquote(token).ok_or_else(|| invalid_input("invalid syntax"))?,
            b'\'' => token[1..len - 1].to_vec(),
            _ => token.to_vec(),
        });
        i += len;
    }
    Ok(args)
}

fn double_quoted(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    loop {
        match *s.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' if s.get(i + 1).is_some_and(|c| *c != b'\n') => i += 2,
            b'\\' => return None,
            _ => i += 1,
        }
    }
}

fn single_quoted(s: &[u8]) -> Option<usize> {
    let close = s.strip_prefix(b"'")?.iter().position(|b| *b == b'\'')?;
    Some(close + 2)
}

fn bare(s: &[u8]) -> Option<usize> {
    match s.first()? {
        b'\'' | b'"' => None,
        b if is_regexp_space(*b) => None,
        _ => Some(s.iter().position(|b| is_regexp_space(*b)).unwrap_or(s.len())),
    }
}

/// RE2's `\s`.
fn is_regexp_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

/// Raw bytes as a command-line argument, so keys need not be UTF-8.
pub fn os_string(bytes: Vec<u8>) -> OsString {
    #[cfg(unix)]
    {
        std::os::unix::ffi::OsStringExt::from_vec(bytes)
    }
    #[cfg(not(unix))]
    {
        OsString::from(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn invalid_input(message: impl Into<String>) -> CtlError {
    CtlError::new(EXIT_INVALID_INPUT, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(result: Result<impl std::fmt::Debug, CtlError>) -> String {
        result.unwrap_err().message.unwrap_or_default()
    }

    #[test]
    fn argify_splits_like_etcdctl() {
        let args = argify(br#"put "a b" 'c d' e"f g"#).unwrap();
        assert_eq!(args, [b"put".to_vec(), b"a b".to_vec(), b"c d".to_vec(), b"e\"f".to_vec(), b"g".to_vec()]);
        assert_eq!(argify(br#"put "a\x41\u00e9" v"#).unwrap()[1], "aAé".as_bytes());
        assert_eq!(error(argify(br#"put "a\q" v"#)), "invalid syntax");
    }

    #[test]
    fn compares_parse_like_etcdctl() {
        let compare = parse_compare(br#"value("a") = "1""#).unwrap();
        assert_eq!(compare.key, b"a");
        assert_eq!(compare.target_union, Some(TargetUnion::Value(b"1".to_vec())));
        let compare = parse_compare(br#"mod("key1")  >  "0""#).unwrap();
        assert_eq!((compare.target, compare.result), (CompareTarget::Mod as i32, CompareResult::Greater as i32));
        assert_eq!(parse_compare(b"val(`k`) != `v`").unwrap().result, CompareResult::NotEqual as i32);
        assert_eq!(parse_compare(br#"lease("k") = "1a""#).unwrap().target_union, Some(TargetUnion::Lease(26)));
    }

    #[test]
    fn malformed_compares_report_like_etcdctl() {
        assert_eq!(
            error(parse_compare(br#"value("a") = 1"#)),
            r#"malformed comparison: value("a") = 1; got value("a") = """#
        );
        assert_eq!(
            error(parse_compare(br#"value(a) = "1""#)),
            r#"malformed comparison: value(a) = "1"; got value("")  """#
        );
        assert_eq!(
            error(parse_compare(br#"value("a")="1""#)),
            r#"malformed comparison: value("a")="1"; got value("a")  """#
        );
        assert_eq!(
            error(parse_compare(br#"vx("a") = "1""#)),
            r#"malformed comparison: vx("a") = "1" (unknown target vx)"#
        );
        assert_eq!(error(parse_compare(br#"ver("a") = "x""#)), r#"invalid txn compare request: ver("a") = "x""#);
        assert_eq!(error(parse_compare(b"nothing")), "malformed comparison: nothing");
    }

    #[test]
    fn ops_parse_like_etcdctl() {
        let op = parse_op(b"get a --prefix").unwrap();
        let Some(Request::RequestRange(range)) = op.request else { panic!("not a range") };
        assert_eq!((range.key, range.range_end), (b"a".to_vec(), b"b".to_vec()));
        assert!(matches!(parse_op(b"p k v --prev-kv").unwrap().request, Some(Request::RequestPut(_))));
        assert_eq!(error(parse_op(b"put")), "invalid txn compare request: put");
        assert_eq!(error(parse_op(b"foo bar")), "invalid txn request: foo bar");
        assert_eq!(error(parse_op(b"put a")), "put command needs 1 argument and input from stdin or 2 arguments");
    }

    #[test]
    fn sections_end_at_an_empty_line_and_need_it() {
        let mut input: &[u8] = b"put a 1\n  \nrest";
        assert_eq!(read_section(&mut input, parse_op).unwrap().len(), 1);
        assert_eq!(input, b"rest");
        let mut unterminated: &[u8] = b"put a 1\n";
        assert_eq!(error(read_section(&mut unterminated, parse_op)), "EOF");
    }
}
