//! Go's formatting rules that etcdctl's output inherits, so phoenixctl prints the same bytes:
//! `%q` quoting, `encoding/json` strings and `[]byte` (base64), `time.Duration.String()`, and
//! go-humanize's `Bytes`.

use std::fmt::Write;
use std::time::Duration;

/// Go's `strconv.Quote` (what `%q` prints) of raw bytes: invalid UTF-8 becomes `\xNN`.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            quote_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn quote_char(out: &mut String, c: char) {
    match c {
        '"' | '\\' => {
            out.push('\\');
            out.push(c);
        }
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        c if is_printable(c) => out.push(c),
        c if c < ' ' || c == '\x7f' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// An approximation of Go's `unicode.IsPrint`: graphic characters and the ASCII space.
fn is_printable(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let format_or_private = matches!(c as u32,
        0xAD | 0x600..=0x605 | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    !c.is_control() && !c.is_whitespace() && !format_or_private
}

/// A JSON string as Go's `encoding/json` writes it: HTML-safe, invalid UTF-8 as `\ufffd`.
pub fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Standard base64 with padding, which is how Go's `encoding/json` writes `[]byte`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Go's `time.Duration.String()`: `1.274261ms`, `2.5s`, `1m30s`, `0s`.
pub fn duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (unit, digits) = match nanos {
            n if n < 1_000 => ("ns", 0),
            n if n < 1_000_000 => ("µs", 3),
            _ => ("ms", 6),
        };
        return format!("{}{unit}", fraction(nanos, digits));
    }
    let seconds = fraction(nanos % 60_000_000_000, 9);
    let minutes = nanos / 60_000_000_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / 10^digits` with the fraction's trailing zeros (and a bare point) dropped.
fn fraction(value: u128, digits: u32) -> String {
    let scale = 10u128.pow(digits);
    let (whole, frac) = (value / scale, value % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// go-humanize's `Bytes` (SI units): `24576` is `25 kB`, `2048` is `2.0 kB`.
pub fn human_bytes(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if size < 10 {
        return format!("{size} B");
    }
    let size = size as f64;
    let exponent = (size.ln() / 1000f64.ln()).floor();
    let value = (size / 1000f64.powf(exponent) * 10.0 + 0.5).floor() / 10.0;
    let unit = UNITS[exponent as usize];
    if value < 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(quote(b"foo"), r#""foo""#);
        assert_eq!(quote(b"a\"b\\c\n\x01\x7f"), r#""a\"b\\c\n\x01\x7f""#);
        assert_eq!(quote(b"caf\xc3\xa9 \xff"), "\"caf\u{e9} \\xff\"");
        assert_eq!(quote("\u{a0}\u{200b}".as_bytes()), r#""\u00a0\u200b""#);
    }

    #[test]
    fn json_strings_are_html_safe() {
        assert_eq!(json_string("a<b>&\"c\"\n\u{1}"), r#""a\u003cb\u003e\u0026\"c\"\n\u0001""#);
        assert_eq!(json_string("héllo"), "\"héllo\"");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"aA\xc3\xa9"), "YUHDqQ==");
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_nanos(999)), "999ns");
        assert_eq!(duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(duration(Duration::from_nanos(1_274_261)), "1.274261ms");
        assert_eq!(duration(Duration::from_millis(2_500)), "2.5s");
        assert_eq!(duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn bytes_print_like_humanize() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(24576), "25 kB");
        assert_eq!(human_bytes(2048), "2.0 kB");
        assert_eq!(human_bytes(352256), "352 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
