//! Output formatters (`--formatter table|json|xml|csv|keyvalue`, esxcli's names).
//!
//! Every listing is first turned into rows of typed [`Value`]s laid out by a [`Layout`], and
//! each formatter renders those; so the five formats always carry the same fields with the same
//! values. Field names and types are documented in `SCHEMA.md` beside this file (the JSON keys,
//! CSV header, XML field names and key-value keys are the same names). Keys are never printed:
//! listings do not carry them.

use std::fmt::Write as _;

use serde::Serialize;

use super::args::Formatter;
use crate::daemon::protocol::{SaEntry, SpEntry, StatsReport, StatusReport};

/// A typed field value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(u64),
    List(Vec<String>),
    /// Absent: JSON `null`; text formats show the column's `null_text`.
    Null,
}

/// One field of a listing.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// JSON key, CSV column, XML field name, key-value key.
    pub key: &'static str,
    /// Table column header.
    pub header: &'static str,
    /// What text formats print for [`Value::Null`] (`any` for selectors, empty otherwise).
    pub null_text: &'static str,
}

const fn col(key: &'static str, header: &'static str) -> Column {
    Column {
        key,
        header,
        null_text: "",
    }
}

const fn any(key: &'static str, header: &'static str) -> Column {
    Column {
        key,
        header,
        null_text: "any",
    }
}

/// A kind of listing: its structure name (XML, key-value) and its columns.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub type_name: &'static str,
    pub columns: &'static [Column],
    /// `true` for `status`: one record, shown as `Header: value` lines and a JSON object.
    pub single: bool,
}

/// `sa list`.
pub const SA_LAYOUT: Layout = Layout {
    type_name: "SecurityAssociation",
    columns: &[
        col("name", "Name"),
        any("source", "Source"),
        any("destination", "Destination"),
        col("mode", "Mode"),
        col("spi", "SPI"),
        col("encryption_algorithm", "Encryption"),
        col("integrity_algorithm", "Integrity"),
        col("owner", "Owner"),
        col("in_use_by", "In Use By"),
        col("packets", "Packets"),
        col("bytes", "Bytes"),
        col("auth_failures", "Auth Failures"),
        col("replay_drops", "Replay Drops"),
        col("errors", "Errors"),
        // xipsec only: ESP in UDP (`--udp-encapsulation`), `SRC:DST`; null for plain ESP.
        col("udp_encapsulation", "UDP Encap"),
    ],
    single: false,
};

/// `sp list`.
pub const SP_LAYOUT: Layout = Layout {
    type_name: "SecurityPolicy",
    columns: &[
        col("name", "Name"),
        col("source", "Source"),
        col("destination", "Destination"),
        any("source_port", "Src Port"),
        any("destination_port", "Dst Port"),
        col("protocol", "Protocol"),
        col("direction", "Direction"),
        col("action", "Action"),
        col("mode", "Mode"),
        col("sa_name", "SA"),
        col("priority", "Priority"),
        col("packets", "Packets"),
        col("bytes", "Bytes"),
    ],
    single: false,
};

/// `stats`.
pub const STATS_LAYOUT: Layout = Layout {
    type_name: "DropReason",
    columns: &[col("reason", "Reason"), col("packets", "Packets")],
    single: false,
};

/// `status`.
pub const STATUS_LAYOUT: Layout = Layout {
    type_name: "Status",
    columns: &[
        col("version", "Version"),
        col("pid", "PID"),
        col("socket", "Socket"),
        col("state_file", "State File"),
        col("datapath", "Datapath"),
        col("interfaces", "Interfaces"),
        col("xdp_mode", "XDP Mode"),
        col("pin_dir", "Pin Dir"),
        col("sas", "SAs"),
        col("sps", "SPs"),
        col("uptime_seconds", "Uptime Seconds"),
        col("engine", "ESP Engine"),
        col("generation", "Generation"),
        col("xdp_in_effect", "XDP In Effect"),
        col("xdp_program_ids", "XDP Program IDs"),
        col("tc_attachment", "TC Attachment"),
        col("attached_since", "Attached Since"),
        col("engine_threads", "Engine Threads"),
        col("engine_tun", "Engine TUN"),
        col("engine_xsk", "Engine AF_XDP"),
        col("engine_last_error", "Engine Last Error"),
    ],
    single: true,
};

/// `explain`: the packet, the kernel's answer and the reference model's, one record.
pub const EXPLAIN_LAYOUT: Layout = Layout {
    type_name: "Explanation",
    columns: &[
        col("direction", "Direction"),
        col("packet", "Packet"),
        col("generation", "Generation"),
        col("kernel_verdict", "Kernel Verdict"),
        col("kernel_because", "Kernel Because"),
        col("kernel_sp", "Kernel SP"),
        col("kernel_rank_reason", "Kernel Rank Reason"),
        col("kernel_sa", "Kernel SA"),
        col("reference_verdict", "Reference Verdict"),
        col("reference_because", "Reference Because"),
        col("reference_sp", "Reference SP"),
        col("reference_rank_reason", "Reference Rank Reason"),
        col("reference_sa", "Reference SA"),
        col("agree", "Agree"),
    ],
    single: true,
};

/// `explain` record, in [`EXPLAIN_LAYOUT`] order. Without a kernel datapath its fields are null.
pub fn explain_row(report: &crate::daemon::protocol::ExplainReport) -> Row {
    let side = |v: Option<&crate::daemon::protocol::ExplainVerdict>| {
        [
            opt(v.map(|v| v.verdict.clone())),
            opt(v.map(|v| v.because.clone())),
            opt(v.and_then(|v| v.sp.clone())),
            opt(v.and_then(|v| v.rank_reason.clone())),
            opt(v.and_then(|v| v.sa.clone())),
        ]
    };
    let mut row = vec![
        spelling(&report.direction),
        Value::Str(report.packet.clone()),
        Value::Int(report.generation),
    ];
    row.extend(side(report.kernel.as_ref()));
    row.extend(side(Some(&report.reference)));
    row.push(Value::Str(
        if report.agree { "yes" } else { "no" }.to_owned(),
    ));
    row
}

/// One record: values in the order of its layout's columns.
pub type Row = Vec<Value>;

/// The esxcli spelling of a model enum (its serde name).
fn spelling<T: Serialize>(value: &T) -> Value {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Value::Str(s),
        other => Value::Str(format!("{other:?}")),
    }
}

fn opt<T: ToString>(value: Option<T>) -> Value {
    value.map_or(Value::Null, |v| Value::Str(v.to_string()))
}

fn opt_int(value: Option<u16>) -> Value {
    value.map_or(Value::Null, |v| Value::Int(u64::from(v)))
}

/// After a successful `sa add` of an AES-GCM SA, RFC 4106's warning about static keys, once,
/// on stderr (stdout stays clean for scripts).
pub fn warn_after_sa_add(args: &crate::model::SaAddArgs) {
    if let Some(warning) = sa_add_warning(args) {
        eprintln!("warning: {warning}");
    }
}

/// The warning `sa add` prints for `args` once the daemon accepted them, if any.
fn sa_add_warning(args: &crate::model::SaAddArgs) -> Option<&'static str> {
    let encryption = args.encryption_algorithm.as_deref()?;
    crate::model::EncryptionAlgorithm::ALL
        .iter()
        .any(|(algorithm, text)| {
            algorithm.needs_unique_iv() && encryption.eq_ignore_ascii_case(text)
        })
        .then_some(crate::model::GCM_STATIC_KEY_WARNING)
}

/// `sa list` row, in [`SA_LAYOUT`] order.
pub fn sa_row(sa: &SaEntry) -> Row {
    vec![
        Value::Str(sa.name.clone()),
        opt(sa.source),
        opt(sa.destination),
        spelling(&sa.mode),
        Value::Str(format!("{:#x}", sa.spi)),
        spelling(&sa.encryption_algorithm),
        spelling(&sa.integrity_algorithm),
        Value::Str(sa.owner.clone()),
        Value::List(sa.in_use_by.clone()),
        Value::Int(sa.packets),
        Value::Int(sa.bytes),
        Value::Int(sa.auth_failures),
        Value::Int(sa.replay_drops),
        Value::Int(sa.errors),
        opt(sa
            .udp_encap
            .map(|e| format!("{}:{}", e.source_port, e.destination_port))),
    ]
}

/// `sp list` row, in [`SP_LAYOUT`] order.
pub fn sp_row(sp: &SpEntry) -> Row {
    vec![
        Value::Str(sp.name.clone()),
        Value::Str(sp.source.to_string()),
        Value::Str(sp.destination.to_string()),
        opt_int(sp.source_port),
        opt_int(sp.destination_port),
        spelling(&sp.protocol),
        spelling(&sp.direction),
        spelling(&sp.action),
        spelling(&sp.mode),
        opt(sp.sa_name.as_deref()),
        opt_int(sp.priority),
        Value::Int(sp.packets),
        Value::Int(sp.bytes),
    ]
}

/// `stats` rows, in [`STATS_LAYOUT`] order: one per drop reason.
pub fn stats_rows(stats: &StatsReport) -> Vec<Row> {
    stats
        .reasons
        .iter()
        .map(|(reason, packets)| vec![Value::Str(reason.clone()), Value::Int(*packets)])
        .collect()
}

/// `status` row, in [`STATUS_LAYOUT`] order.
pub fn status_row(s: &StatusReport) -> Row {
    vec![
        Value::Str(s.version.clone()),
        Value::Int(u64::from(s.pid)),
        Value::Str(s.socket.clone()),
        Value::Str(s.state_file.clone()),
        Value::Str(s.datapath.clone()),
        Value::List(s.interfaces.clone()),
        Value::Str(s.xdp_mode.clone()),
        Value::Str(s.pin_dir.clone()),
        Value::Int(s.sas),
        Value::Int(s.sps),
        Value::Int(s.uptime_seconds),
        Value::Str(s.engine.clone()),
        Value::Int(s.generation),
        Value::List(s.xdp_in_effect.clone()),
        Value::List(s.xdp_program_ids.clone()),
        Value::List(s.tc_attachment.clone()),
        Value::List(s.attached_since.clone()),
        Value::List(s.engine_threads.clone()),
        Value::Str(s.engine_tun.clone()),
        Value::List(s.engine_xsk.clone()),
        opt(s.engine_last_error.as_deref()),
    ]
}

/// Render `rows` of `layout` in `format`; the text ends with a newline.
pub fn render(format: Formatter, layout: &Layout, rows: &[Row]) -> String {
    debug_assert!(rows.iter().all(|r| r.len() == layout.columns.len()));
    match format {
        Formatter::Table => table(layout, rows),
        Formatter::Json => json(layout, rows),
        Formatter::Xml => xml(layout, rows),
        Formatter::Csv => csv(layout, rows),
        Formatter::Keyvalue => keyvalue(layout, rows),
    }
}

/// Text of a value for the text formats; lists are joined with commas.
fn text(column: &Column, value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::List(items) => items.join(","),
        Value::Null => column.null_text.to_owned(),
    }
}

fn table(layout: &Layout, rows: &[Row]) -> String {
    let cell = |c: &Column, v: &Value| {
        let t = text(c, v);
        // A blank cell would make columns impossible to read by eye (or by `awk`).
        if t.is_empty() { "-".to_owned() } else { t }
    };
    let mut out = String::new();
    if layout.single {
        let width = layout
            .columns
            .iter()
            .map(|c| c.header.len())
            .max()
            .unwrap_or(0);
        for row in rows {
            for (c, v) in layout.columns.iter().zip(row) {
                let _ = writeln!(out, "{:>width$}: {}", c.header, cell(c, v));
            }
        }
        return out;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            layout
                .columns
                .iter()
                .zip(row)
                .map(|(c, v)| cell(c, v))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = layout
        .columns
        .iter()
        .map(|c| c.header.chars().count())
        .collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |row: Vec<String>| {
        let mut l = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{c:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(layout.columns.iter().map(|c| c.header.to_owned()).collect());
    line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in cells {
        line(row);
    }
    out
}

fn json_value(v: &Value) -> String {
    let v = match v {
        Value::Str(s) => serde_json::Value::from(s.as_str()),
        Value::Int(n) => serde_json::Value::from(*n),
        Value::List(items) => serde_json::Value::from(items.clone()),
        Value::Null => serde_json::Value::Null,
    };
    v.to_string()
}

/// One JSON object, keys in column order (serde_json's map would sort them).
fn json_object(out: &mut String, layout: &Layout, row: &Row, indent: &str) {
    out.push_str(indent);
    out.push_str("{\n");
    let last = layout.columns.len().saturating_sub(1);
    for (i, (c, v)) in layout.columns.iter().zip(row).enumerate() {
        let comma = if i < last { "," } else { "" };
        let key = serde_json::Value::from(c.key);
        let _ = writeln!(out, "{indent}  {key}: {}{comma}", json_value(v));
    }
    out.push_str(indent);
    out.push('}');
}

fn json(layout: &Layout, rows: &[Row]) -> String {
    let mut out = String::new();
    if layout.single {
        if let Some(row) = rows.first() {
            json_object(&mut out, layout, row, "");
        } else {
            out.push_str("null");
        }
    } else if rows.is_empty() {
        out.push_str("[]");
    } else {
        out.push_str("[\n");
        for (i, row) in rows.iter().enumerate() {
            json_object(&mut out, layout, row, "  ");
            out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
        }
        out.push(']');
    }
    out.push('\n');
    out
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_structure(out: &mut String, layout: &Layout, row: &Row, indent: &str) {
    let _ = writeln!(out, "{indent}<structure typeName=\"{}\">", layout.type_name);
    for (c, v) in layout.columns.iter().zip(row) {
        let body = match v {
            Value::Str(s) => format!("<string>{}</string>", xml_escape(s)),
            Value::Int(n) => format!("<integer>{n}</integer>"),
            Value::List(items) => {
                let items = items.iter().fold(String::new(), |mut items, s| {
                    let _ = write!(items, "<string>{}</string>", xml_escape(s));
                    items
                });
                format!("<list type=\"string\">{items}</list>")
            }
            Value::Null => {
                let _ = writeln!(out, "{indent}   <field name=\"{}\"/>", c.key);
                continue;
            }
        };
        let _ = writeln!(out, "{indent}   <field name=\"{}\">{body}</field>", c.key);
    }
    let _ = writeln!(out, "{indent}</structure>");
}

fn xml(layout: &Layout, rows: &[Row]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <output xmlns=\"http://www.vmware.com/Products/ESX/5.0/esxcli\">\n<root>\n",
    );
    if layout.single {
        for row in rows {
            xml_structure(&mut out, layout, row, "   ");
        }
    } else {
        out.push_str("   <list type=\"structure\">\n");
        for row in rows {
            xml_structure(&mut out, layout, row, "      ");
        }
        out.push_str("   </list>\n");
    }
    out.push_str("</root>\n</output>\n");
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv(layout: &Layout, rows: &[Row]) -> String {
    let keys: Vec<&str> = layout.columns.iter().map(|c| c.key).collect();
    let mut out = keys.join(",");
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = layout
            .columns
            .iter()
            .zip(row)
            .map(|(c, v)| csv_cell(&text(c, v)))
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn keyvalue(layout: &Layout, rows: &[Row]) -> String {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for (c, v) in layout.columns.iter().zip(row) {
            let kind = match v {
                Value::Int(_) => "integer",
                Value::List(_) => "string[]",
                Value::Str(_) | Value::Null => "string",
            };
            // A value is one line: a newline in a name would otherwise forge another field.
            let value = text(c, v).replace(['\n', '\r'], " ");
            let _ = writeln!(out, "{}.{}.{kind}={value}", layout.type_name, c.key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: Layout = Layout {
        type_name: "T",
        columns: &[
            col("name", "Name"),
            any("port", "Port"),
            col("users", "Users"),
            col("n", "N"),
        ],
        single: false,
    };

    fn rows() -> Vec<Row> {
        vec![vec![
            Value::Str("a,\"b\"".into()),
            Value::Null,
            Value::List(vec!["x".into(), "y".into()]),
            Value::Int(7),
        ]]
    }

    #[test]
    fn every_format_renders_the_same_fields() {
        let rows = rows();
        assert_eq!(
            render(Formatter::Table, &LAYOUT, &rows),
            "Name   Port  Users  N\n-----  ----  -----  -\na,\"b\"  any   x,y    7\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(Formatter::Json, &LAYOUT, &rows)).expect("json parses");
        assert_eq!(
            json,
            serde_json::json!([{"name": "a,\"b\"", "port": null, "users": ["x", "y"], "n": 7}])
        );
        assert_eq!(
            render(Formatter::Csv, &LAYOUT, &rows),
            "name,port,users,n\n\"a,\"\"b\"\"\",any,\"x,y\",7\n"
        );
        assert_eq!(
            render(Formatter::Keyvalue, &LAYOUT, &rows),
            "T.name.string=a,\"b\"\nT.port.string=any\nT.users.string[]=x,y\nT.n.integer=7\n"
        );
        let xml = render(Formatter::Xml, &LAYOUT, &rows);
        for want in [
            "<field name=\"name\"><string>a,&quot;b&quot;</string></field>",
            "<field name=\"port\"/>",
            "<list type=\"string\"><string>x</string><string>y</string></list>",
        ] {
            assert!(xml.contains(want), "{xml}");
        }
        assert_eq!(render(Formatter::Json, &LAYOUT, &[]), "[]\n");
    }
}
