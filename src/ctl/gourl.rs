//! The peer URL checks etcd makes on `MemberAdd` and `MemberUpdate` (clientv3 before it sends
//! them, and the server again), with Go's error texts: etcd's `types.NewURLs` over Go's
//! `url.Parse` and `net.SplitHostPort` (etcd-io/etcd v3.4 `pkg/types/urls.go`, Go's `net/url`).
//!
//! Only what decides whether a URL passes, and which error it fails with, is modelled: the
//! scheme, the authority (host, port, which characters user info may hold), the path and
//! percent-escapes. Queries and
//! fragments are allowed, as they are by etcd.

use super::gofmt::quote;

/// etcd's `types.NewURLs`: every URL (trimmed) must be http(s) or unix(s), `host:port`, no path.
pub fn check_urls(urls: &[String]) -> Result<(), String> {
    if urls.is_empty() {
        return Err("no valid URLs given".to_string());
    }
    for url in urls {
        let url = url.trim();
        let parsed = parse(url)?;
        if !["http", "https", "unix", "unixs"].contains(&parsed.scheme.as_str()) {
            return Err(format!("URL scheme must be http, https, unix, or unixs: {url}"));
        }
        if !splits_host_port(&parsed.host) {
            return Err(format!("URL address does not have the form \"host:port\": {url}"));
        }
        if !parsed.path.is_empty() {
            return Err(format!("URL must not contain a path: {url}"));
        }
    }
    Ok(())
}

/// What `url.Parse` found: the lower-cased scheme, the unescaped host and path.
struct Parsed {
    scheme: String,
    host: String,
    path: String,
}

/// Go's `url.Parse`; errors read `parse "<url>": <why>`.
fn parse(raw: &str) -> Result<Parsed, String> {
    let without_fragment = raw.split_once('#').map_or(raw, |(url, _)| url);
    parse_reference(without_fragment).map_err(|why| format!("parse {}: {why}", quote(without_fragment.as_bytes())))
}

fn parse_reference(raw: &str) -> Result<Parsed, String> {
    if raw.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err("net/url: invalid control character in URL".to_string());
    }
    let (scheme, rest) = split_scheme(raw)?;
    let rest = rest.split_once('?').map_or(rest, |(rest, _)| rest);
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            // A rootless path after a scheme is opaque: no host, no path.
            return Ok(Parsed { scheme, host: String::new(), path: String::new() });
        }
        if rest.split('/').next().is_some_and(|segment| segment.contains(':')) {
            return Err("first path segment in URL cannot contain colon".to_string());
        }
    }
    let (host, path) = match rest.strip_prefix("//") {
        Some(after) if !scheme.is_empty() || !rest.starts_with("///") => {
            let (authority, path) = after.find('/').map_or((after, ""), |i| after.split_at(i));
            (parse_authority(authority)?, path)
        }
        _ => (String::new(), rest),
    };
    Ok(Parsed { scheme, host, path: unescape(path, false)? })
}

/// Go's `getScheme`: letters, then digits, `+`, `-` or `.`, up to the first colon.
fn split_scheme(raw: &str) -> Result<(String, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".to_string()),
            b':' => return Ok((raw[..i].to_ascii_lowercase(), &raw[i + 1..])),
            _ => break,
        }
    }
    Ok((String::new(), raw))
}

/// The host of `[user@]host[:port]`, checked as Go's `parseAuthority` and `parseHost` check it.
fn parse_authority(authority: &str) -> Result<String, String> {
    let (user, host) = authority.rsplit_once('@').map_or((None, authority), |(user, host)| (Some(user), host));
    let port = if host.starts_with('[') {
        let end = host.rfind(']').ok_or("missing ']' in host")?;
        &host[end + 1..]
    } else {
        host.rfind(':').map_or("", |i| &host[i..])
    };
    let valid_port = port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if !valid_port {
        return Err(format!("invalid port {} after host", quote(port.as_bytes())));
    }
    let host = unescape(host, true)?;
    if user.is_some_and(|user| !user.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&b))) {
        return Err("net/url: invalid userinfo".to_string());
    }
    Ok(host)
}

/// Go's `unescape` for a host (`in_host`) or a path: `%XX` escapes, and only the characters a
/// host may hold.
fn unescape(s: &str, in_host: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let escape = bytes.get(i + 1..i + 3).filter(|hex| hex.iter().all(u8::is_ascii_hexdigit));
                let Some(hex) = escape else {
                    let bad = &s[i..(i + 3).min(s.len())];
                    return Err(format!("invalid URL escape {}", quote(bad.as_bytes())));
                };
                // Go refuses an escaped ASCII character in a host, except `%25` (a zone's `%`).
                if in_host && hex[0] < b'8' && hex != b"25" {
                    return Err(format!("invalid URL escape {}", quote(&bytes[i..i + 3])));
                }
                out.push(hex_value(hex[0]) << 4 | hex_value(hex[1]));
                i += 3;
            }
            b if in_host && b < 0x80 && !host_char(b) => {
                return Err(format!("invalid character {} in host name", quote(&[b])));
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        _ => (digit | 0x20) - b'a' + 10,
    }
}

/// The ASCII characters Go leaves unescaped in a host.
fn host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&b)
}

/// Whether `net.SplitHostPort` accepts `hostport`: one colon before the port, or a bracketed host.
fn splits_host_port(hostport: &str) -> bool {
    let Some(colon) = hostport.rfind(':') else {
        return false;
    };
    // Where the host starts (after a bracket) and where the port's colon is.
    let (host_start, port_colon) = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(end) if end + 1 == colon => (1, colon),
            _ => return false,
        }
    } else if hostport[..colon].contains(':') {
        return false;
    } else {
        (0, 0)
    };
    !hostport[host_start..].contains('[') && !hostport[port_colon..].contains(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str) -> Result<(), String> {
        check_urls(&[url.to_string()])
    }

    #[test]
    fn good_peer_urls_pass() {
        for url in
            ["http://127.0.0.1:2380", " http://c:1 ", "http://[::1]:1", "unix://a:1", "http://u@a:1", "http://a:1?q"]
        {
            assert_eq!(check(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn bad_peer_urls_fail_as_in_etcdctl() {
        let cases = [
            ("127.0.0.1:1", r#"parse "127.0.0.1:1": first path segment in URL cannot contain colon"#),
            ("localhost:1", "URL scheme must be http, https, unix, or unixs: localhost:1"),
            ("ftp://a:1", "URL scheme must be http, https, unix, or unixs: ftp://a:1"),
            ("http://a", r#"URL address does not have the form "host:port": http://a"#),
            ("http:a:1", r#"URL address does not have the form "host:port": http:a:1"#),
            ("http://a:1:2", r#"URL address does not have the form "host:port": http://a:1:2"#),
            ("http://a:1/", "URL must not contain a path: http://a:1/"),
            ("HTTP://a:1/%41", "URL must not contain a path: HTTP://a:1/%41"),
            ("http://a b:1", r#"parse "http://a b:1": invalid character " " in host name"#),
            ("http://a{:1", r#"parse "http://a{:1": invalid character "{" in host name"#),
            ("http://a:x", r#"parse "http://a:x": invalid port ":x" after host"#),
            ("http://a:1%zz", r#"parse "http://a:1%zz": invalid port ":1%zz" after host"#),
            ("http://[::1", r#"parse "http://[::1": missing ']' in host"#),
            ("http://a%2:1", r#"parse "http://a%2:1": invalid URL escape "%2:""#),
            ("%zz", r#"parse "%zz": invalid URL escape "%zz""#),
            (":1", r#"parse ":1": missing protocol scheme"#),
        ];
        for (url, error) in cases {
            assert_eq!(check(url), Err(error.to_string()), "{url}");
        }
    }

    #[test]
    fn every_url_of_a_list_is_checked() {
        let urls = ["http://a:1".to_string(), "http://b".to_string()];
        assert_eq!(check_urls(&urls), Err(r#"URL address does not have the form "host:port": http://b"#.to_string()));
    }
}
