//! The `table` format, drawn as the tablewriter version etcdctl 3.4 vendors draws it
//! (olekukonko/tablewriter @a0225b3): centred upper-case headers, right-aligned cells, and cells
//! wider than 30 columns wrapped at spaces with minimal raggedness. The same rows, joined with
//! `, `, are the simple format of these listings.

use std::io::{Result, Write};

use super::{EpHashKv, EpHealth, EpStatus};
use crate::ctl::gofmt::human_bytes;
use crate::pb;

/// tablewriter's `MAX_ROW_WIDTH`: wider cells wrap.
const MAX_CELL_WIDTH: usize = 30;

/// tablewriter's penalty for a line that is longer than the limit.
const TOO_LONG_PENALTY: usize = 100_000;

/// A listing: a header and rows of cells.
#[derive(Debug, Clone)]
pub struct Table {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

pub fn member_list(response: &pb::MemberListResponse) -> Table {
    let rows = response.members.iter().map(|m| {
        vec![
            format!("{:x}", m.id),
            if m.name.is_empty() { "unstarted" } else { "started" }.to_string(),
            m.name.clone(),
            m.peer_ur_ls.join(","),
            m.client_ur_ls.join(","),
            m.is_learner.to_string(),
        ]
    });
    Table { header: vec!["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"], rows: rows.collect() }
}

pub fn endpoint_health(list: &[EpHealth]) -> Table {
    let rows = list.iter().map(|h| vec![h.endpoint.clone(), h.health.to_string(), h.took.clone(), h.error.clone()]);
    Table { header: vec!["endpoint", "health", "took", "error"], rows: rows.collect() }
}

pub fn endpoint_status(list: &[EpStatus]) -> Table {
    let rows = list.iter().map(|EpStatus { endpoint, status }| {
        let member_id = status.header.as_ref().map_or(0, |h| h.member_id);
        vec![
            endpoint.clone(),
            format!("{member_id:x}"),
            status.version.clone(),
            human_bytes(status.db_size as u64),
            (status.leader == member_id).to_string(),
            status.is_learner.to_string(),
            status.raft_term.to_string(),
            status.raft_index.to_string(),
            status.raft_applied_index.to_string(),
            status.errors.join(", "),
        ]
    });
    let header = vec![
        "endpoint",
        "ID",
        "version",
        "db size",
        "is leader",
        "is learner",
        "raft term",
        "raft index",
        "raft applied index",
        "errors",
    ];
    Table { header, rows: rows.collect() }
}

pub fn endpoint_hash_kv(list: &[EpHashKv]) -> Table {
    let rows = list.iter().map(|h| vec![h.endpoint.clone(), h.hash_kv.hash.to_string()]);
    Table { header: vec!["endpoint", "hash"], rows: rows.collect() }
}

impl Table {
    pub fn render(&self, out: &mut dyn Write) -> Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h).min(MAX_CELL_WIDTH)).collect();
        let mut rows = Vec::with_capacity(self.rows.len());
        for row in &self.rows {
            let cells: Vec<Vec<String>> = row.iter().enumerate().map(|(i, cell)| fit(cell, &mut widths[i])).collect();
            rows.push(cells);
        }
        border(out, &widths)?;
        write!(out, "|")?;
        for (h, w) in self.header.iter().zip(&widths) {
            write!(out, " {} |", center(&title(h), *w))?;
        }
        writeln!(out)?;
        border(out, &widths)?;
        for cells in rows {
            let height = cells.iter().map(Vec::len).max().unwrap_or(0);
            for line in 0..height {
                write!(out, "|")?;
                for (cell, w) in cells.iter().zip(&widths) {
                    let text = cell.get(line).map_or("  ", String::as_str);
                    write!(out, " {:>w$} |", text, w = *w)?;
                }
                writeln!(out)?;
            }
        }
        border(out, &widths)
    }
}

/// Widens the column for `cell` and wraps it, as tablewriter's `parseDimension` does.
fn fit(cell: &str, column_width: &mut usize) -> Vec<String> {
    *column_width = (*column_width).max(width(cell).min(MAX_CELL_WIDTH));
    let lines = wrap(cell, *column_width);
    *column_width = lines.iter().map(|l| width(l)).fold(*column_width, usize::max);
    lines
}

/// tablewriter's `WrapString`: splits at spaces into lines of at most `limit` columns, choosing
/// the breaks that minimise the sum of squared slack.
fn wrap(text: &str, limit: usize) -> Vec<String> {
    let text = text.replace('\n', " ");
    let words: Vec<&str> = text.split(' ').collect();
    let limit = words.iter().map(|w| w.len()).fold(limit, usize::max);
    let n = words.len();
    let line_width = |from: usize, to: usize| words[from..=to].iter().map(|w| width(w)).sum::<usize>() + (to - from);
    let mut cost = vec![usize::MAX; n];
    let mut next_break = vec![n; n];
    for i in (0..n).rev() {
        if line_width(i, n - 1) <= limit {
            cost[i] = 0;
            continue;
        }
        for j in i + 1..n {
            let used = line_width(i, j - 1);
            let slack = limit.abs_diff(used);
            let penalty = if used > limit { TOO_LONG_PENALTY } else { 0 };
            let candidate = (slack * slack + penalty).saturating_add(cost[j]);
            if candidate < cost[i] {
                cost[i] = candidate;
                next_break[i] = j;
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        lines.push(words[i..next_break[i]].join(" "));
        i = next_break[i];
    }
    lines
}

fn border(out: &mut dyn Write, widths: &[usize]) -> Result<()> {
    let cells: String = widths.iter().map(|w| format!("{}+", "-".repeat(w + 2))).collect();
    writeln!(out, "+{cells}")
}

/// tablewriter's `Pad`: centred, the odd space on the right.
fn center(text: &str, columns: usize) -> String {
    let gap = columns.saturating_sub(width(text));
    format!("{}{text}{}", " ".repeat(gap / 2), " ".repeat(gap - gap / 2))
}

/// tablewriter's `Title`: `_` and `.` become spaces, then upper case.
fn title(header: &str) -> String {
    header.replace(['_', '.'], " ").trim().to_uppercase()
}

/// Display columns, counting each character as one.
fn width(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(table: &Table) -> String {
        let mut out = Vec::new();
        table.render(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn member_list_matches_etcdctl() {
        let member = pb::Member {
            id: 0x2e1259d415f2a040,
            name: "default".into(),
            peer_ur_ls: vec!["http://127.0.0.1:23800".into()],
            client_ur_ls: vec!["http://127.0.0.1:23790".into()],
            is_learner: false,
        };
        let response = pb::MemberListResponse { header: None, members: vec![member] };
        assert_eq!(
            render(&member_list(&response)),
            "\
+------------------+---------+---------+------------------------+------------------------+------------+
|        ID        | STATUS  |  NAME   |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |
+------------------+---------+---------+------------------------+------------------------+------------+
| 2e1259d415f2a040 | started | default | http://127.0.0.1:23800 | http://127.0.0.1:23790 |      false |
+------------------+---------+---------+------------------------+------------------------+------------+
"
        );
    }

    #[test]
    fn long_cells_wrap_at_spaces() {
        let table = Table {
            header: vec!["errors"],
            rows: vec![vec!["memberID:17010963214147749224 alarm:NOSPACE ".to_string()]],
        };
        assert_eq!(
            render(&table),
            "\
+--------------------------------+
|             ERRORS             |
+--------------------------------+
|  memberID:17010963214147749224 |
|                 alarm:NOSPACE  |
+--------------------------------+
"
        );
    }
}
