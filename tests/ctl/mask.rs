//! What legitimately differs between two servers' answers to the same commands, masked so
//! the rest can be compared byte for byte: cluster and member IDs, addresses, lease IDs, raft
//! terms and indexes, versions, db sizes, hashes, times and a lease's remaining TTL. IDs and
//! addresses are masked by what the test knows ([`Ids`] for one member, [`Labels`] for more).

use super::process::Outcome;

/// Masks what legitimately differs between two servers.
pub struct Ids {
    pub cluster: u64,
    pub member: u64,
    pub client: String,
    pub peer: String,
}

/// JSON fields whose numbers depend on the server, not on the commands.
const SERVER_NUMBERS: &[&str] =
    &["raft_term", "raftTerm", "raftIndex", "raftAppliedIndex", "dbSize", "dbSizeInUse", "hash"];

/// JSON fields whose strings depend on the server or the clock.
const SERVER_STRINGS: &[&str] = &["version", "took"];

/// `fields` lines whose values depend on the server or the clock.
const SERVER_FIELDS: &[&str] = &["RaftTerm", "RaftIndex", "RaftAppliedIndex", "DBSize", "Version", "Hash", "Took"];

impl Ids {
    pub fn mask(&self, outcome: Outcome) -> Outcome {
        let stderr = self.mask_ids(&mask_stderr(&outcome.stderr));
        Outcome { stdout: self.mask_text(&outcome.stdout), stderr, ..outcome }
    }

    fn mask_text(&self, text: &str) -> String {
        self.mask_ids(text).lines().map(mask_line).map(|line| line + "\n").collect()
    }

    fn mask_ids(&self, text: &str) -> String {
        let mut text = text.replace(&self.client, "<client>").replace(&self.peer, "<peer>");
        for (id, name) in [(self.cluster, "<cluster>"), (self.member, "<member>")] {
            text = text.replace(&id.to_string(), name).replace(&format!("{id:x}"), name);
        }
        text
    }
}

/// Values a test knows by name (the IDs and addresses of the members of a small cluster), each
/// replaced by its name; what else differs between servers is masked as [`Ids::mask`] masks it.
#[derive(Default)]
pub struct Labels {
    /// (value, name), in the order they are replaced.
    values: Vec<(String, String)>,
}

impl Labels {
    /// An ID, whether printed after a space as Go's `%16x` (padded with spaces), in hex or in
    /// decimal.
    pub fn id(&mut self, id: u64, name: &str) {
        self.values.push((format!(" {id:16x}"), format!(" <{name}>")));
        for value in [format!("{id:x}"), id.to_string()] {
            self.values.push((value, format!("<{name}>")));
        }
    }

    /// An address (`127.0.0.1:<port>`).
    pub fn address(&mut self, address: &str, name: &str) {
        self.values.push((address.to_string(), format!("<{name}>")));
    }

    pub fn mask(&self, outcome: Outcome) -> Outcome {
        let replace =
            |text: &str| self.values.iter().fold(text.to_string(), |text, (value, name)| text.replace(value, name));
        let stdout = replace(&outcome.stdout).lines().map(mask_line).map(|line| line + "\n").collect();
        Outcome { stdout, stderr: replace(&mask_stderr(&outcome.stderr)), ..outcome }
    }
}

fn mask_line(line: &str) -> String {
    let mut line = line.to_string();
    for key in SERVER_NUMBERS {
        line = mask_json_value(&line, &format!("\"{key}\":"), |c| c.is_ascii_digit());
    }
    for key in SERVER_STRINGS {
        line = mask_json_value(&line, &format!("\"{key}\":\""), |c| c != '"');
    }
    if line.starts_with(['+', '|']) {
        return squeeze_table_line(&line);
    }
    if SERVER_FIELDS.iter().any(|field| line.starts_with(&format!("\"{field}\" :"))) {
        return line.split(" :").next().unwrap_or_default().to_string() + " : <server>";
    }
    mask_simple_listing(&line)
}

/// Replaces the characters matching `part` after each `key` with `<server>`.
fn mask_json_value(line: &str, key: &str, part: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(key) {
        let value_start = at + key.len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        let value_len = rest.find(|c| !part(c)).unwrap_or(rest.len());
        out.push_str("<server>");
        rest = &rest[value_len..];
    }
    out + rest
}

/// A table line with runs of spaces and dashes squeezed, since masked IDs change column widths.
fn squeeze_table_line(line: &str) -> String {
    let mut out = String::new();
    for c in line.chars() {
        if !(matches!(c, ' ' | '-') && out.ends_with(c)) {
            out.push(c);
        }
    }
    out
}

/// `endpoint status` rows (the endpoint given with or without its scheme): version, db size,
/// raft term, raft index and raft applied index.
fn mask_simple_listing(line: &str) -> String {
    let cells: Vec<&str> = line.split(", ").collect();
    if cells.len() != 10 || cells[0].trim_start_matches("http://") != "<client>" {
        return line.to_string();
    }
    let masked = cells.iter().enumerate().map(|(i, c)| if [2, 3, 6, 7, 8].contains(&i) { "<server>" } else { c });
    masked.collect::<Vec<_>>().join(", ")
}

/// stderr without etcdctl's client log lines, with health-check times and raft terms masked.
fn mask_stderr(stderr: &str) -> String {
    let lines = stderr.lines().filter(|line| !line.starts_with("{\"level\""));
    let lines = lines.map(|line| mask_json_value(line, "raft_term:", |c| c.is_ascii_digit()));
    lines.map(|line| line.split(": took = ").next().unwrap_or_default().to_string() + "\n").collect()
}

/// A lease's remaining TTL, which depends on when the question was asked.
pub fn mask_remaining_ttl(text: &str) -> String {
    let text = mask_json_value(text, "remaining(", |c| c.is_ascii_digit());
    let text = mask_json_value(&text, "\"ttl\":", |c| c.is_ascii_digit());
    text.lines()
        .map(|line| match line.strip_prefix("\"TTL\" : ") {
            Some(ttl) if !ttl.starts_with('-') => "\"TTL\" : <server>\n".to_string(),
            _ => format!("{line}\n"),
        })
        .collect()
}

/// Lease IDs differ between servers: each becomes `<lease1>`, `<lease2>`... in the order first
/// seen, whether printed in hex (`lease <id> granted`, `lease list`, the `<name>/<id>` keys of
/// `lock` and `elect`) or in decimal (json and fields). IDs below 2^32 were typed by the test,
/// not chosen by the server, and stay.
#[derive(Default)]
pub struct Leases {
    seen: Vec<u64>,
}

/// Where a decimal lease ID follows.
const DECIMAL_LEASE_KEYS: &[&str] = &["\"ID\":", "\"id\":", "\"lease\":", "\"ID\" : ", "\"Lease\" : "];

impl Leases {
    pub fn mask(&mut self, outcome: Outcome) -> Outcome {
        Outcome { stdout: self.mask_text(&outcome.stdout), stderr: self.mask_text(&outcome.stderr), ..outcome }
    }

    fn mask_text(&mut self, text: &str) -> String {
        text.lines().map(|line| self.mask_line(line) + "\n").collect()
    }

    fn mask_line(&mut self, line: &str) -> String {
        if line.len() == 16 && u64::from_str_radix(line, 16).is_ok() {
            return self.hex(line);
        }
        let mut line = line.to_string();
        for key in DECIMAL_LEASE_KEYS {
            line = self.replace_after(&line, key, |c| c.is_ascii_digit(), |digits| digits.parse().ok());
        }
        line = self.replace_after(&line, "lease ", |c| c.is_ascii_hexdigit(), |hex| u64::from_str_radix(hex, 16).ok());
        self.replace_after(
            &line,
            "/",
            |c| c.is_ascii_hexdigit(),
            |hex| u64::from_str_radix(hex, 16).ok().filter(|_| hex.len() >= 9),
        )
    }

    /// Replaces the number matching `part` after each `key` that `parse` reads as a lease.
    fn replace_after(
        &mut self,
        line: &str,
        key: &str,
        part: impl Fn(char) -> bool,
        parse: impl Fn(&str) -> Option<u64>,
    ) -> String {
        let mut out = String::new();
        let mut rest = line;
        while let Some(at) = rest.find(key) {
            out.push_str(&rest[..at + key.len()]);
            rest = &rest[at + key.len()..];
            let len = rest.find(|c| !part(c)).unwrap_or(rest.len());
            match parse(&rest[..len]).filter(|id| *id >= 1 << 32) {
                Some(id) => out.push_str(&self.label(id)),
                None => out.push_str(&rest[..len]),
            }
            rest = &rest[len..];
        }
        out + rest
    }

    fn hex(&mut self, hex: &str) -> String {
        match u64::from_str_radix(hex, 16) {
            Ok(id) if id >= 1 << 32 => self.label(id),
            _ => hex.to_string(),
        }
    }

    fn label(&mut self, id: u64) -> String {
        let index = self.seen.iter().position(|seen| *seen == id).unwrap_or_else(|| {
            self.seen.push(id);
            self.seen.len() - 1
        });
        format!("<lease{}>", index + 1)
    }
}
