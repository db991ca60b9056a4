//! Mends the `:authority` etcdctl 3.4 sends on some requests, before the HTTP/2 server reads it.
//!
//! etcdctl 3.4 dials each endpoint of `endpoint status`, `endpoint hashkv`, `defrag` and
//! `move-leader` on its own, and names the endpoint's whole URL (`http://127.0.0.1:2379`) as the
//! requests' authority. etcd's Go server takes that; h2, under tonic, refuses it as malformed and
//! resets the stream (PROTOCOL_ERROR), with no switch to accept it. So every client connection
//! passes through a [`MendedAuthority`], which reads the connection's first header block: if its
//! authority is one h2 accepts (or it has none, or the connection is not HTTP/2), the connection
//! is handed on untouched from then on; if not, every header block on that connection is decoded
//! and sent on re-encoded, its authority's scheme (and any path) taken off.
//!
//! Invariants: the server reads the client's bytes in the order they came, changed only inside
//! header blocks. The server's HPACK decoder stays in step with what it is sent: a connection is
//! re-encoded from its first header block on or not at all, and a re-encoded block holds
//! literals only, so the server's dynamic table stays empty. Frames other than header blocks are
//! handed on as soon as they are whole, so a client that waits for an answer (a PING, the
//! settings) before its first request is never held up. What this cannot parse, or would not
//! take as h2 would not (a header list past h2's limits), is handed on as it came, and from then
//! on everything else, for h2 to refuse: as it would have, on a connection's first block; later
//! on a connection being mended, h2's table is then out of step and it ends the connection.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use loona_hpack::encoder::encode_integer_into;
use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::uri::Authority;
use tonic::transport::server::Connected;

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PRIORITY_BYTES: usize = 5;
/// The largest frame an HTTP/2 peer must accept; the client server announces no larger one.
const MAX_FRAME_BYTES: usize = 16_384;
/// The HPACK dynamic table size every HTTP/2 connection starts with; h2 announces no other.
const HPACK_TABLE_BYTES: usize = 4096;
/// The CONTINUATION frames without END_HEADERS that h2 takes in one header block (with the
/// client server's settings); a longer block is handed on for h2 to refuse.
const MAX_CONTINUATION_FRAMES: usize = 5;
/// The largest header list h2 takes (hyper's default, which the client server keeps), counted
/// as HTTP/2 counts it: each field's name and value and 32 bytes. Past it, h2 refuses the
/// request, so a block is decoded only within it.
const MAX_HEADER_LIST_BYTES: usize = 16 * 1024;
const FIELD_OVERHEAD_BYTES: usize = 32;
// A mended block goes out in one frame (see `push_header_block`).
const _: () = assert!(MAX_HEADER_LIST_BYTES <= MAX_FRAME_BYTES);
/// Huffman-coded strings decoded in one block at most: the decoder builds a table for each, so
/// a block of many tiny ones would cost far more to decode than to send. A client's request
/// headers hold a dozen or so.
const MAX_HUFFMAN_STRINGS: usize = 64;
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A client connection whose header blocks are mended as the module says.
pub struct MendedAuthority<S> {
    inner: S,
    stage: Stage,
    /// Bytes read from the client that are not yet whole frames.
    unread: Vec<u8>,
    /// Bytes ready for the server, from `handed` on.
    ready: Vec<u8>,
    handed: usize,
    /// Whether the client has closed its side.
    closed: bool,
}

enum Stage {
    /// Reading the client's connection preface.
    Preface,
    /// Reading frames up to the end of the first header block.
    FirstBlock,
    /// Re-encoding every header block; the decoder follows the client's dynamic table.
    Mending(Box<Decoder<'static>>),
    /// Handing on everything as it comes.
    Untouched,
}

impl<S> MendedAuthority<S> {
    pub fn new(inner: S) -> MendedAuthority<S> {
        MendedAuthority {
            inner,
            stage: Stage::Preface,
            unread: Vec::new(),
            ready: Vec::new(),
            handed: 0,
            closed: false,
        }
    }

    /// Moves what has been read on as far as it can, to `ready`.
    fn process(&mut self) {
        loop {
            match &mut self.stage {
                Stage::Untouched => return,
                Stage::Preface => {
                    let seen = self.unread.len().min(PREFACE.len());
                    if self.unread[..seen] != PREFACE[..seen] {
                        return self.hand_on_untouched();
                    }
                    if seen < PREFACE.len() {
                        return;
                    }
                    self.pass(PREFACE.len());
                    self.stage = Stage::FirstBlock;
                }
                Stage::FirstBlock | Stage::Mending(_) => match next_unit(&self.unread) {
                    Unit::Incomplete => return,
                    Unit::Unparsable => return self.hand_on_untouched(),
                    Unit::Frame(len) => self.pass(len),
                    Unit::HeaderBlock(block) => self.mend(block),
                },
            }
        }
    }

    /// Hands on a whole header block: re-encoded if the connection is being mended, or if it is
    /// the first block and h2 would refuse its authority; as it came (and from then on
    /// everything) if it is the first block and needs nothing, or if it cannot be decoded.
    fn mend(&mut self, block: HeaderBlock) {
        let (mut decoder, first) = match std::mem::replace(&mut self.stage, Stage::Untouched) {
            Stage::Mending(decoder) => (decoder, false),
            _ => (Box::new(new_decoder()), true),
        };
        let Some(headers) = decode(&mut decoder, &block.fragment) else {
            return self.hand_on_untouched();
        };
        if first && !headers.iter().any(|(name, value)| is_authority(name) && refused(value)) {
            return self.hand_on_untouched();
        }
        self.unread.drain(..block.len);
        push_header_block(&mut self.ready, &block, &mended(headers));
        self.stage = Stage::Mending(decoder);
    }

    /// Moves the first `len` unread bytes on as they are.
    fn pass(&mut self, len: usize) {
        self.ready.extend(self.unread.drain(..len));
    }

    /// Hands on all that is unread as it is, and everything after it.
    fn hand_on_untouched(&mut self) {
        self.ready.append(&mut self.unread);
        // The connection needs neither buffer again once `ready` is read out.
        self.unread = Vec::new();
        self.stage = Stage::Untouched;
    }
}

/// The header list in `fragment`, decoded by the client's dynamic table as `decoder` follows
/// it; `None` if it does not decode, or holds more than h2 takes or than is worth decoding.
fn decode(decoder: &mut Decoder<'static>, fragment: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if huffman_strings(fragment)? > MAX_HUFFMAN_STRINGS {
        return None;
    }
    let (mut headers, mut size) = (Vec::new(), 0);
    let decoded = decoder.decode_with_cb(fragment, |name, value| {
        // Fields from the dynamic table come as often as they are named: keep only what fits.
        size += name.len() + value.len() + FIELD_OVERHEAD_BYTES;
        if size <= MAX_HEADER_LIST_BYTES {
            headers.push((name.into_owned(), value.into_owned()));
        }
    });
    (decoded.is_ok() && size <= MAX_HEADER_LIST_BYTES).then_some(headers)
}

/// How many Huffman-coded strings a header block fragment holds, read from its
/// representations' prefixes alone (RFC 7541, section 6), without decoding a string.
fn huffman_strings(fragment: &[u8]) -> Option<usize> {
    let (mut at, mut count) = (0, 0);
    while let Some(&first) = fragment.get(at) {
        // Indexed (1), literal with incremental indexing (01), size update (001), and the two
        // other literals (0000, 0001): the prefix's bits, and how many strings follow.
        let (prefix_bits, literal) = match first {
            _ if first & 0x80 != 0 => (7, false),
            _ if first & 0xc0 == 0x40 => (6, true),
            _ if first & 0xe0 == 0x20 => (5, false),
            _ => (4, true),
        };
        let (index, used) = integer(&fragment[at..], prefix_bits)?;
        at += used;
        let strings = if !literal {
            0
        } else if index == 0 {
            2
        } else {
            1
        };
        for _ in 0..strings {
            let (len, used) = integer(fragment.get(at..)?, 7)?;
            count += usize::from(fragment[at] & 0x80 != 0);
            at += used + len;
        }
    }
    (at == fragment.len()).then_some(count)
}

/// An integer with an N-bit prefix (RFC 7541, section 5.1) at the start of `bytes`, and the
/// bytes it takes; `None` if it is cut short or above 2^28 (nothing in a header block is).
fn integer(bytes: &[u8], prefix_bits: u32) -> Option<(usize, usize)> {
    let max_prefix = (1 << prefix_bits) - 1;
    let mut value = usize::from(*bytes.first()?) & max_prefix;
    if value < max_prefix {
        return Some((value, 1));
    }
    for (shift, (used, &byte)) in (0..28).step_by(7).zip(bytes.iter().enumerate().skip(1)) {
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, used + 1));
        }
    }
    None
}

fn new_decoder() -> Decoder<'static> {
    let mut decoder = Decoder::new();
    decoder.set_max_allowed_table_size(HPACK_TABLE_BYTES);
    decoder
}

/// What the unread bytes start with.
enum Unit {
    /// Not yet a whole frame or header block.
    Incomplete,
    /// Not HTTP/2 this can follow (a frame larger than announced, a broken header block).
    Unparsable,
    /// A whole frame of this many bytes that is not part of a header block.
    Frame(usize),
    HeaderBlock(HeaderBlock),
}

/// A HEADERS frame and its CONTINUATION frames.
struct HeaderBlock {
    /// The bytes of all its frames.
    len: usize,
    stream: u32,
    end_stream: bool,
    /// The HEADERS frame's priority fields, when it has them.
    priority: Option<[u8; PRIORITY_BYTES]>,
    /// The HPACK-encoded header list, its frames' fragments joined.
    fragment: Vec<u8>,
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: std::ops::Range<usize>,
    end: usize,
}

fn next_unit(bytes: &[u8]) -> Unit {
    let frame = match frame_at(bytes, 0) {
        Ok(Some(frame)) => frame,
        Ok(None) => return Unit::Incomplete,
        Err(()) => return Unit::Unparsable,
    };
    if frame.kind != HEADERS {
        return Unit::Frame(frame.end);
    }
    let Some((priority, first_fragment)) = headers_payload(bytes, &frame) else {
        return Unit::Unparsable;
    };
    // The block's frames are found before anything is copied: a client may send it a byte at a
    // time, and each read looks again.
    let mut continuations = Vec::new();
    let (mut end, mut flags) = (frame.end, frame.flags);
    while flags & END_HEADERS == 0 {
        match frame_at(bytes, end) {
            Ok(Some(next)) if next.kind == CONTINUATION && next.stream == frame.stream => {
                (end, flags) = (next.end, next.flags);
                continuations.push(next.payload);
                if flags & END_HEADERS == 0 && continuations.len() > MAX_CONTINUATION_FRAMES {
                    return Unit::Unparsable;
                }
            }
            Ok(None) => return Unit::Incomplete,
            Ok(Some(_)) | Err(()) => return Unit::Unparsable,
        }
    }
    let mut fragment = bytes[first_fragment].to_vec();
    for payload in continuations {
        fragment.extend_from_slice(&bytes[payload]);
    }
    let end_stream = frame.flags & END_STREAM != 0;
    Unit::HeaderBlock(HeaderBlock { len: end, stream: frame.stream, end_stream, priority, fragment })
}

/// The frame starting at `at`: `None` while it is not whole, an error if it is larger than any
/// the server accepts.
fn frame_at(bytes: &[u8], at: usize) -> Result<Option<Frame>, ()> {
    let Some(header) = bytes.get(at..at + FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    if len > MAX_FRAME_BYTES {
        return Err(());
    }
    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let payload = at + FRAME_HEADER_BYTES..at + FRAME_HEADER_BYTES + len;
    if payload.end > bytes.len() {
        return Ok(None);
    }
    Ok(Some(Frame { kind: header[3], flags: header[4], stream, end: payload.end, payload }))
}

/// A HEADERS frame's priority fields and where its header block fragment lies, its padding
/// taken off; `None` if the padding or priority does not fit in the frame.
fn headers_payload(bytes: &[u8], frame: &Frame) -> Option<(Option<[u8; PRIORITY_BYTES]>, std::ops::Range<usize>)> {
    let (mut start, mut end) = (frame.payload.start, frame.payload.end);
    if frame.flags & PADDED != 0 {
        let padding = usize::from(*bytes.get(start).filter(|_| start < end)?);
        start += 1;
        end = end.checked_sub(padding).filter(|&end| end >= start)?;
    }
    let mut priority = None;
    if frame.flags & PRIORITY != 0 {
        priority =
            Some(bytes.get(start..start + PRIORITY_BYTES).filter(|_| start + PRIORITY_BYTES <= end)?.try_into().ok()?);
        start += PRIORITY_BYTES;
    }
    Some((priority, start..end))
}

fn is_authority(name: &[u8]) -> bool {
    name == b":authority"
}

/// Whether h2 refuses `authority` (it parses it as `http` does).
fn refused(authority: &[u8]) -> bool {
    Authority::try_from(authority).is_err()
}

/// `headers` with each authority h2 would refuse replaced by its host and port, where those are
/// accepted: `http://127.0.0.1:2379` becomes `127.0.0.1:2379`.
fn mended(mut headers: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    for (name, value) in &mut headers {
        if is_authority(name) && refused(value) {
            let after_scheme = value.windows(3).position(|w| w == b"://").map_or(0, |at| at + 3);
            let host = value[after_scheme..].split(|&b| b == b'/').next().unwrap_or_default();
            if !refused(host) {
                *value = host.to_vec();
            }
        }
    }
    headers
}

/// Encodes `headers` as literals that touch no dynamic table (never indexed, as an intermediary
/// must keep the fields a client marked so: RFC 7541, section 6.2.3) in one HEADERS frame
/// framed as `block` was. One frame holds them: a field takes at most 7 bytes besides its name
/// and value, where h2 counts 32, and [`decode`] passes no list larger than h2 takes, which is
/// no larger than a frame.
fn push_header_block(out: &mut Vec<u8>, block: &HeaderBlock, headers: &[(Vec<u8>, Vec<u8>)]) {
    const LITERAL_NEVER_INDEXED_NEW_NAME: u8 = 0x10;
    let mut encoded = Vec::new();
    for (name, value) in headers {
        encoded.push(LITERAL_NEVER_INDEXED_NEW_NAME);
        push_string(&mut encoded, name);
        push_string(&mut encoded, value);
    }
    let priority: &[u8] = block.priority.as_ref().map_or(&[], |fields| &fields[..]);
    let mut flags = END_HEADERS;
    flags |= if block.end_stream { END_STREAM } else { 0 };
    flags |= if priority.is_empty() { 0 } else { PRIORITY };
    push_frame_header(out, priority.len() + encoded.len(), HEADERS, flags, block.stream);
    out.extend_from_slice(priority);
    out.extend_from_slice(&encoded);
}

fn push_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// A string literal without Huffman coding (RFC 7541, section 5.2).
fn push_string(out: &mut Vec<u8>, string: &[u8]) {
    // Its length, an integer with a 7-bit prefix; writing to a Vec cannot fail.
    let _ = encode_integer_into(string.len(), 7, 0, out);
    out.extend_from_slice(string);
}

impl<S: AsyncRead + Unpin> MendedAuthority<S> {
    /// Reads what the client sent next onto `unread`.
    fn read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let filled = self.unread.len();
        self.unread.resize(filled + READ_CHUNK_BYTES, 0);
        let mut buf = ReadBuf::new(&mut self.unread[filled..]);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut buf);
        let read = buf.filled().len();
        self.unread.truncate(filled + read);
        ready!(polled)?;
        self.closed = read == 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MendedAuthority<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.handed < this.ready.len() {
                let len = buf.remaining().min(this.ready.len() - this.handed);
                buf.put_slice(&this.ready[this.handed..this.handed + len]);
                this.handed += len;
                if this.handed == this.ready.len() {
                    this.ready = Vec::new();
                    this.handed = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.stage, Stage::Untouched) {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.closed {
                // A frame the client never finished: the server sees the same end.
                this.hand_on_untouched();
                continue;
            }
            ready!(this.read_more(cx))?;
            this.process();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MendedAuthority<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for MendedAuthority<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use loona_hpack::Encoder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    const DATA: u8 = 0x0;
    const SETTINGS: u8 = 0x4;

    fn request(authority: &str, extra: &[(&str, &str)]) -> Headers {
        let mut headers = vec![(":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.Maintenance/Status")];
        headers.push((":authority", authority));
        headers.extend([("content-type", "application/grpc"), ("te", "trailers")]);
        headers.extend(extra);
        headers.into_iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    /// A client's HPACK encoding of `headers`, which fills its dynamic table as clients do.
    fn encode(encoder: &mut Encoder<'static>, headers: &Headers) -> Vec<u8> {
        encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])))
    }

    /// What the server reads when the client sends `input`, delivered `chunk` bytes at a time.
    async fn served(input: &[u8], chunk: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(chunk);
        let input = input.to_vec();
        let sending = tokio::spawn(async move { client.write_all(&input).await });
        let mut read = Vec::new();
        MendedAuthority::new(server).read_to_end(&mut read).await.expect("read what the client sent");
        sending.await.expect("the client task").expect("the client's write");
        read
    }

    /// The frames after the preface, as (kind, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut at = PREFACE.len();
        let mut frames = Vec::new();
        while at < bytes.len() {
            let Ok(Some(frame)) = frame_at(bytes, at) else { panic!("a broken frame at {at}") };
            frames.push((frame.kind, frame.flags, frame.stream, bytes[frame.payload].to_vec()));
            at = frame.end;
        }
        frames
    }

    /// The header lists the server decodes, with each block's flags, from `bytes`.
    fn header_lists(bytes: &[u8]) -> Vec<(u8, Headers)> {
        let mut decoder = new_decoder();
        let blocks = frames(bytes).into_iter().filter(|(kind, ..)| *kind == HEADERS);
        let list = |(_, flags, _, payload): (u8, u8, u32, Vec<u8>)| {
            assert_eq!(flags & (END_HEADERS | PADDED), END_HEADERS, "a mended block is one frame, unpadded");
            let skip = if flags & PRIORITY != 0 { PRIORITY_BYTES } else { 0 };
            (flags, decoder.decode(&payload[skip..]).expect("the server decodes the block"))
        };
        blocks.map(list).collect()
    }

    fn with_authority(mut headers: Headers, authority: &str) -> Headers {
        for (name, value) in &mut headers {
            if is_authority(name) {
                *value = authority.as_bytes().to_vec();
            }
        }
        headers
    }

    #[tokio::test]
    async fn a_url_authority_is_mended_on_every_request_of_the_connection() {
        let mut encoder = Encoder::new();
        let sent = request("http://127.0.0.1:2379", &[]);
        let (first, second) = (encode(&mut encoder, &sent), encode(&mut encoder, &sent));
        assert!(second.len() < first.len(), "the second request refers to the client's dynamic table");
        // The second block also opens with a dynamic table size update (to 4096, RFC 7541
        // section 6.3) and ends with a field whose name and value are Huffman-coded
        // (`custom-key: custom-value`, from RFC 7541 appendix C.4.3), as Go's encoder writes.
        let mut second_block = vec![0x3f, 0xe1, 0x1f];
        second_block.extend(second);
        second_block.extend([0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f]);
        second_block.extend([0x89, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(SETTINGS, 0, 0, &[]));
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        input.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second_block));
        let expected = with_authority(sent, "127.0.0.1:2379");
        let mut expected_second = expected.clone();
        expected_second.push((b"custom-key".to_vec(), b"custom-value".to_vec()));
        for chunk in [1, 7, 64 * 1024] {
            let output = served(&input, chunk).await;
            assert_eq!(output[..PREFACE.len()], *PREFACE);
            let kinds: Vec<_> =
                frames(&output).iter().map(|(kind, flags, stream, _)| (*kind, *flags, *stream)).collect();
            let expected_kinds = [
                (SETTINGS, 0, 0),
                (HEADERS, END_HEADERS, 1),
                (DATA, END_STREAM, 1),
                (HEADERS, END_HEADERS | END_STREAM, 3),
            ];
            assert_eq!(kinds, expected_kinds, "delivered {chunk} bytes at a time");
            let lists = header_lists(&output);
            assert_eq!(lists.iter().map(|(_, headers)| headers).collect::<Vec<_>>(), [&expected, &expected_second]);
            assert_eq!(frames(&output)[2].3, [0, 0, 0, 0, 0]);
        }
    }

    #[tokio::test]
    async fn a_connection_whose_first_authority_is_accepted_passes_untouched() {
        let mut encoder = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &encode(&mut encoder, &request("127.0.0.1:2379", &[]))));
        input.extend(frame(DATA, END_STREAM, 1, b"hello"));
        input.extend(frame(HEADERS, END_HEADERS, 3, &encode(&mut encoder, &request("127.0.0.1:2379", &[]))));
        assert_eq!(served(&input, 5).await, input);
    }

    #[tokio::test]
    async fn other_protocols_and_broken_frames_pass_untouched() {
        let http1 = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n".to_vec();
        assert_eq!(served(&http1, 3).await, http1);
        let mut cut_short = PREFACE.to_vec();
        cut_short.extend(&frame(HEADERS, END_HEADERS, 1, &[0x82, 0x86, 0x84])[..6]);
        assert_eq!(served(&cut_short, 4).await, cut_short);
        let mut too_large = PREFACE.to_vec();
        too_large.extend(frame(DATA, 0, 1, &vec![0; MAX_FRAME_BYTES + 1]));
        assert_eq!(served(&too_large, 1024).await, too_large);
    }

    #[tokio::test]
    async fn a_block_past_h2s_limits_is_handed_on_untouched_for_h2_to_refuse() {
        let bad_first_request = encode(&mut Encoder::new(), &request("http://127.0.0.1:2379", &[]));
        // 33 fields with a Huffman-coded empty name and value: 66 strings.
        let mut too_many_huffman_strings = bad_first_request.clone();
        too_many_huffman_strings.extend([0x00, 0x80, 0x80].repeat(33));
        let mut too_large = bad_first_request;
        too_large.extend(encode(&mut Encoder::new(), &request("", &[("x-large", &"x".repeat(MAX_HEADER_LIST_BYTES))])));
        for block in [too_many_huffman_strings, too_large] {
            let mut input = PREFACE.to_vec();
            for (i, chunk) in block.chunks(MAX_FRAME_BYTES).enumerate() {
                let kind = if i == 0 { HEADERS } else { CONTINUATION };
                let last = (i + 1) * MAX_FRAME_BYTES >= block.len();
                input.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, chunk));
            }
            assert_eq!(served(&input, 1024).await, input);
        }
        // A CONTINUATION flood is handed on as soon as it passes h2's limit, not held back.
        let mut flood = PREFACE.to_vec();
        flood.extend(frame(HEADERS, 0, 1, &[0x82]));
        // h2 takes five CONTINUATION frames without END_HEADERS, not a sixth.
        for _ in 0..6 {
            flood.extend(frame(CONTINUATION, 0, 1, &[0x82]));
        }
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(&flood).await.expect("send the flood");
        let mut read = vec![0; flood.len()];
        let mut mended = MendedAuthority::new(server);
        let handed_on = tokio::time::timeout(std::time::Duration::from_secs(10), mended.read_exact(&mut read)).await;
        handed_on.expect("the flood is handed on, not held back").expect("read the flood");
        assert_eq!(read, flood);
    }

    #[tokio::test]
    async fn a_mended_block_keeps_its_priority_and_fits_in_one_frame() {
        let large = "x".repeat(MAX_HEADER_LIST_BYTES - 500);
        let sent = request("http://127.0.0.1:2379/", &[("x-large", &large)]);
        let encoded = encode(&mut Encoder::new(), &sent);
        // A padded HEADERS frame with priority fields, then CONTINUATION frames.
        let priority = [0, 0, 0, 0, 15];
        let mut payload = vec![3];
        payload.extend(priority);
        payload.extend(&encoded[..6_000]);
        payload.extend([0; 3]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
        input.extend(frame(CONTINUATION, 0, 1, &encoded[6_000..12_000]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &encoded[12_000..]));
        let output = served(&input, 4096).await;
        let output_frames = frames(&output);
        assert_eq!(output_frames.len(), 1);
        let (kind, flags, stream, first) = &output_frames[0];
        assert_eq!((*kind, *flags, *stream), (HEADERS, END_HEADERS | PRIORITY | END_STREAM, 1));
        assert!(first.len() <= MAX_FRAME_BYTES);
        assert_eq!(first[..PRIORITY_BYTES], priority);
        let lists = header_lists(&output);
        assert_eq!(lists, [(END_HEADERS | PRIORITY | END_STREAM, with_authority(sent, "127.0.0.1:2379"))]);
    }
}
