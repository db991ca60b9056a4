//! Go's parsing rules that etcdctl's flags and `txn` input follow, with Go's error texts:
//! `strconv.ParseInt`, `strconv.ParseUint`, `strconv.ParseBool`, `time.ParseDuration` and
//! `strconv.Unquote`.

use std::time::Duration;

use super::gofmt::quote;

/// `strconv.ParseInt(s, base, 64)`; base 0 reads Go's `0x`, `0o`, `0b` and leading-zero prefixes.
pub fn parse_int(s: &str, base: u32) -> Result<i64, String> {
    let error = |why: &str| format!("strconv.ParseInt: parsing {}: {why}", quote(s.as_bytes()));
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (base, digits) = if base == 0 { split_base_prefix(unsigned) } else { (base, unsigned.to_string()) };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(base)) {
        return Err(error("invalid syntax"));
    }
    let magnitude = u64::from_str_radix(&digits, base).map_err(|_| error("value out of range"))?;
    match negative {
        true if magnitude <= i64::MIN.unsigned_abs() => Ok(0i64.wrapping_sub_unsigned(magnitude)),
        false if magnitude <= i64::MAX as u64 => Ok(magnitude as i64),
        _ => Err(error("value out of range")),
    }
}

/// `strconv.ParseUint(s, base, 64)` for a base given (2 to 36): digits only, no sign or prefix.
pub fn parse_uint(s: &str, base: u32) -> Result<u64, String> {
    let error = |why: &str| format!("strconv.ParseUint: parsing {}: {why}", quote(s.as_bytes()));
    if s.is_empty() {
        return Err(error("invalid syntax"));
    }
    // Digit by digit, as Go reports whichever comes first: a bad digit or an overflow.
    s.chars().try_fold(0u64, |n, c| {
        let digit = c.to_digit(base).ok_or_else(|| error("invalid syntax"))?;
        n.checked_mul(u64::from(base))
            .and_then(|n| n.checked_add(u64::from(digit)))
            .ok_or_else(|| error("value out of range"))
    })
}

/// The base a Go integer literal's prefix selects, and its digits without prefix or underscores.
fn split_base_prefix(s: &str) -> (u32, String) {
    let lower = s.to_ascii_lowercase();
    let (base, rest) = match lower.as_bytes() {
        [b'0', b'x', ..] => (16, &s[2..]),
        [b'0', b'b', ..] => (2, &s[2..]),
        [b'0', b'o', ..] => (8, &s[2..]),
        [b'0', _, ..] => (8, &s[1..]),
        _ => (10, s),
    };
    (base, rest.replace('_', ""))
}

/// `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {}: invalid syntax", quote(s.as_bytes()))),
    }
}

/// `time.ParseDuration` (`2s`, `1m30s`, `500ms`, `1.5h`); negative durations count as zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {}", quote(s.as_bytes()));
    let rest = s.strip_prefix(['-', '+']).unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos = 0f64;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", quote(s.as_bytes())));
        }
        let scale = unit_nanos(unit).ok_or_else(|| {
            format!("time: unknown unit {} in duration {}", quote(unit.as_bytes()), quote(s.as_bytes()))
        })?;
        nanos += number.parse::<f64>().map_err(|_| invalid())? * scale;
        rest = &rest[unit_len..];
    }
    Ok(if s.starts_with('-') { Duration::ZERO } else { Duration::from_nanos(nanos as u64) })
}

fn unit_nanos(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1.0,
        "us" | "µs" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    })
}

/// `strconv.Unquote` of a double-quoted Go string literal, as raw bytes (`\xff` stays one byte).
pub fn unquote(literal: &[u8]) -> Option<Vec<u8>> {
    let body = literal.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if body.contains(&b'\n') {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some((&first, tail)) = rest.split_first() {
        rest = match first {
            b'"' => return None,
            b'\\' => unescape(tail, &mut out)?,
            _ => push_char(rest, &mut out),
        };
    }
    Some(out)
}

/// Copies one UTF-8 character (or U+FFFD for an invalid byte, as Go does) and returns the rest.
fn push_char<'a>(s: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
    let chunk = s.utf8_chunks().next();
    match chunk.and_then(|c| c.valid().chars().next()) {
        Some(c) => {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            &s[c.len_utf8()..]
        }
        None => {
            out.extend_from_slice("\u{fffd}".as_bytes());
            &s[1..]
        }
    }
}

/// Decodes the escape after a backslash and returns the rest of the literal.
fn unescape<'a>(s: &'a [u8], out: &mut Vec<u8>) -> Option<&'a [u8]> {
    let (&kind, rest) = s.split_first()?;
    let simple = match kind {
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0b),
        b'\\' | b'"' => Some(kind),
        _ => None,
    };
    if let Some(byte) = simple {
        out.push(byte);
        return Some(rest);
    }
    let (digits, radix) = match kind {
        b'x' => (2, 16),
        b'u' => (4, 16),
        b'U' => (8, 16),
        b'0'..=b'7' => (3, 8),
        _ => return None,
    };
    let text = if radix == 8 { s.get(..3)? } else { rest.get(..digits)? };
    let value = u32::from_str_radix(std::str::from_utf8(text).ok()?, radix).ok()?;
    let rest = if radix == 8 { &s[3..] } else { &rest[digits..] };
    match kind {
        b'x' | b'0'..=b'7' => out.push(u8::try_from(value).ok()?),
        _ => out.extend_from_slice(char::from_u32(value)?.encode_utf8(&mut [0; 4]).as_bytes()),
    }
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_parse_like_strconv() {
        assert_eq!(parse_int("42", 10), Ok(42));
        assert_eq!(parse_int("-7", 10), Ok(-7));
        assert_eq!(parse_int("694d8e2c5bd7e10a", 16), Ok(0x694d8e2c5bd7e10a));
        assert_eq!(parse_int("0x10", 0), Ok(16));
        assert_eq!(parse_int("010", 0), Ok(8));
        assert_eq!(parse_int("1_000", 0), Ok(1000));
        assert_eq!(parse_int("-9223372036854775808", 10), Ok(i64::MIN));
        assert_eq!(parse_int("zz", 16), Err(r#"strconv.ParseInt: parsing "zz": invalid syntax"#.to_string()));
        assert_eq!(parse_int("", 10), Err(r#"strconv.ParseInt: parsing "": invalid syntax"#.to_string()));
        assert_eq!(parse_int("+-1", 10), Err(r#"strconv.ParseInt: parsing "+-1": invalid syntax"#.to_string()));
        assert_eq!(
            parse_int("9223372036854775808", 10),
            Err(r#"strconv.ParseInt: parsing "9223372036854775808": value out of range"#.to_string())
        );
    }

    #[test]
    fn uints_parse_like_strconv() {
        assert_eq!(parse_uint("8e9e05c52164694D", 16), Ok(0x8e9e05c52164694d));
        let error = |s: &str, why: &str| Err(format!("strconv.ParseUint: parsing {s:?}: {why}"));
        assert_eq!(parse_uint("zz", 16), error("zz", "invalid syntax"));
        assert_eq!(parse_uint("-1", 16), error("-1", "invalid syntax"));
        assert_eq!(parse_uint("0x12", 16), error("0x12", "invalid syntax"));
        assert_eq!(parse_uint("", 16), error("", "invalid syntax"));
        assert_eq!(parse_uint("10000000000000000", 16), error("10000000000000000", "value out of range"));
        assert_eq!(parse_uint("10000000000000000zz", 16), error("10000000000000000zz", "value out of range"));
    }

    #[test]
    fn bools_parse_like_strconv() {
        assert_eq!(parse_bool("T"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert_eq!(parse_bool("yes"), Err(r#"strconv.ParseBool: parsing "yes": invalid syntax"#.to_string()));
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("x"), Err(r#"time: invalid duration "x""#.to_string()));
        assert_eq!(parse_duration("5"), Err(r#"time: missing unit in duration "5""#.to_string()));
        assert_eq!(parse_duration("5x"), Err(r#"time: unknown unit "x" in duration "5x""#.to_string()));
    }

    #[test]
    fn unquotes_go_literals() {
        assert_eq!(unquote(br#""a\x41\u00e9""#), Some("aAé".as_bytes().to_vec()));
        assert_eq!(unquote(br#""\xff\101\n""#), Some(b"\xffA\n".to_vec()));
        assert_eq!(unquote(br#""a\q""#), None);
        assert_eq!(unquote(br#""a\'""#), None);
        assert_eq!(unquote(br#""a"b""#), None);
        assert_eq!(unquote(br#"a"#), None);
    }
}
