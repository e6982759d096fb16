//! Running the `xipsec` CLI, what its failures must look like, the source document's examples
//! (verbatim), and command lines for `xipsec batch` files, shared by the CLI tests, the demo and
//! the load benchmark.

use std::{
    path::Path,
    process::{Command, ExitStatus, Output, Stdio},
};

use crate::daemon::xipsec_bin;

/// The source document's `sa add` example, verbatim.
pub const SA_EXAMPLE: &[&str] = &[
    "sa",
    "add",
    "--sa-source",
    "3ffe:501:ffff:0::a",
    "--sa-destination",
    "3ffe:501:ffff:0001:0000:0000:0000:0001",
    "--sa-mode",
    "transport",
    "--sa-spi",
    "0x1000",
    "--encryption-algorithm",
    "3des-cbc",
    "--encryption-key",
    "0x6970763672656164796c6f676f336465736362636f757432",
    "--integrity-algorithm",
    "hmac-sha1",
    "--integrity-key",
    "0x6970763672656164796c6f67736861316f757432",
    "--sa-name",
    "sa1",
];

/// The source document's `sp add` example, verbatim (with `sp`, which the source omits).
pub const SP_EXAMPLE: &[&str] = &[
    "sp",
    "add",
    "--sp-source=2001:db8:1::/64",
    "--sp-destination=2002:db8:1::/64",
    "--source-port=23",
    "--destination-port=25",
    "--upper-layer-protocol=tcp",
    "--flow-direction=out",
    "--action=ipsec",
    "--sp-mode=transport",
    "--sa-name=sa1",
    "--sp-name=sp1",
];

/// A finished `xipsec` command.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            status: output.status,
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }
}

/// Run `xipsec ARGS` with `XIPSEC_SOCKET=socket`.
pub fn run_on(socket: &Path, args: &[&str]) -> Run {
    run_with(&xipsec_bin(), socket, args)
}

/// Run `bin ARGS` with `XIPSEC_SOCKET=socket`.
pub fn run_with(bin: &Path, socket: &Path, args: &[&str]) -> Run {
    Command::new(bin)
        .args(args)
        .env("XIPSEC_SOCKET", socket)
        .stdin(Stdio::null())
        .output()
        .expect("running xipsec")
        .into()
}

/// Assert `run` failed with exactly one stderr line starting `error:`, and return that line.
pub fn single_error_line(run: &Run, what: &str) -> String {
    assert!(
        !run.status.success(),
        "{what}: expected failure, got {run:?}"
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got {:?}",
        run.stderr
    );
    assert!(lines[0].starts_with("error: "), "{what}: {:?}", lines[0]);
    lines[0].to_owned()
}

/// The two `ipsec` policies, `protect-out` and `protect-in`, that protect everything between
/// hosts `me` and `peer` (each a /128): outbound under SA `out`, inbound under SA `inbound`. The
/// `sp add` command lines, for `Node::ok_args`.
pub fn protect_host_pair(me: &str, peer: &str, out: &str, inbound: &str) -> [Vec<String>; 2] {
    [("out", me, peer, out), ("in", peer, me, inbound)].map(|(dir, src, dst, sa)| {
        let (src, dst, name) = (
            format!("{src}/128"),
            format!("{dst}/128"),
            format!("protect-{dir}"),
        );
        let sp = SpArgs {
            sa: Some(sa),
            ..SpArgs::ipsec(&src, &dst, dir, &name)
        };
        sp.args().into_iter().map(str::to_owned).collect()
    })
}

/// An `sp add` command line in long options, as the tests and the lab write their policies.
#[derive(Clone, Copy, Debug)]
pub struct SpArgs<'a> {
    pub src: &'a str,
    pub dst: &'a str,
    pub sport: &'a str,
    pub dport: &'a str,
    pub proto: &'a str,
    pub dir: &'a str,
    pub action: &'a str,
    /// The SA of an `ipsec` policy.
    pub sa: Option<&'a str>,
    pub priority: Option<&'a str>,
    pub name: &'a str,
    /// `--sp-mode`, when given.
    pub mode: Option<&'a str>,
    /// The IKE peer of an `ipsec` policy whose SAs are negotiated (instead of `sa`).
    pub ike_peer: Option<&'a str>,
}

impl<'a> SpArgs<'a> {
    /// Every port and protocol between `src` and `dst` in direction `dir`, protected by SA
    /// `name`; the policy is named `name` too.
    pub fn ipsec(src: &'a str, dst: &'a str, dir: &'a str, name: &'a str) -> Self {
        Self {
            src,
            dst,
            sport: "any",
            dport: "any",
            proto: "any",
            dir,
            action: "ipsec",
            sa: Some(name),
            priority: None,
            name,
            mode: None,
            ike_peer: None,
        }
    }

    /// Every port and protocol between `src` and `dst` in direction `dir`, protected in `mode`
    /// by the SAs negotiated with IKE peer `peer`; the policy is named `name`.
    pub fn ike(
        (src, dst): (&'a str, &'a str),
        dir: &'a str,
        mode: &'a str,
        peer: &'a str,
        name: &'a str,
    ) -> Self {
        Self {
            sa: None,
            mode: Some(mode),
            ike_peer: Some(peer),
            ..Self::ipsec(src, dst, dir, name)
        }
    }

    /// The command as one line of an `xipsec batch` file (no value holds a space).
    pub fn line(&self) -> String {
        self.args().join(" ")
    }

    /// The command line, `sp add` included.
    pub fn args(&self) -> Vec<&'a str> {
        let mut args = vec![
            "sp",
            "add",
            "--sp-source",
            self.src,
            "--sp-destination",
            self.dst,
            "--source-port",
            self.sport,
            "--destination-port",
            self.dport,
            "--upper-layer-protocol",
            self.proto,
            "--flow-direction",
            self.dir,
            "--action",
            self.action,
        ];
        if let Some(mode) = self.mode {
            args.extend(["--sp-mode", mode]);
        }
        if let Some(sa) = self.sa {
            args.extend(["--sa-name", sa]);
        }
        if let Some(peer) = self.ike_peer {
            args.extend(["--ike-peer", peer]);
        }
        if let Some(priority) = self.priority {
            args.extend(["--priority", priority]);
        }
        args.extend(["--sp-name", self.name]);
        args
    }
}

/// `ike peer add` of peer `name` from `local` to `remote` with PSK `psk` (as the CLI takes it)
/// and `--initiate initiate`, followed by `extra` options.
pub fn ike_peer_add<'a>(
    name: &'a str,
    (local, remote): (&'a str, &'a str),
    (psk, initiate): (&'a str, &'a str),
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "ike",
        "peer",
        "add",
        "--peer-name",
        name,
        "--local",
        local,
        "--remote",
        remote,
        "--auth",
        "psk",
        "--psk",
        psk,
        "--initiate",
        initiate,
    ];
    args.extend_from_slice(extra);
    args
}

/// An `sa add` line for an `xipsec batch` file: transport SA `name` from `src` to `dst` with
/// `spi`, aes128-cbc and hmac-sha2-256 under the kit's fixed keys.
pub fn sa_line(name: &str, (src, dst): (&str, &str), spi: u32) -> String {
    format!(
        "sa add --sa-source {src} --sa-destination {dst} --sa-mode transport --sa-spi {spi:#x} \
         --encryption-algorithm aes128-cbc --encryption-key 0x{} --integrity-algorithm \
         hmac-sha2-256 --integrity-key 0x{} --sa-name {name}",
        crate::keys::AES128,
        crate::keys::SHA256
    )
}

/// Inbound discard policies `{name}{i}` for `i` in `range`, one selector shape (a /128 source under
/// `fd00:ffff::/32` numbered by `i`, destination `dst`, any port and protocol): the bulk of a
/// large batch, within one shape whatever the classifier's shape limit.
pub fn discard_lines(name: &str, dst: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range
        .map(|i| {
            format!(
                "sp add --sp-source fd00:ffff::{:x}:{:x}/128 --sp-destination {dst} --source-port \
                 any --destination-port any --flow-direction in --action discard --sp-name {name}{i}",
                i >> 16,
                i & 0xffff
            )
        })
        .collect()
}

/// Write `lines` as an `xipsec batch` file at `path`.
pub fn write_batch(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The counter fields of `sa list` and `sp list` entries.
pub const COUNTERS: [&str; 5] = [
    "packets",
    "bytes",
    "auth_failures",
    "replay_drops",
    "errors",
];

/// A `list --formatter json` array without its [`COUNTERS`]: the configuration alone (a new
/// daemon starts its counters from zero, and traffic moves them).
pub fn without_counters(mut list: serde_json::Value) -> serde_json::Value {
    for entry in list.as_array_mut().expect("a JSON array") {
        let entry = entry.as_object_mut().expect("a JSON object");
        for counter in COUNTERS {
            entry.remove(counter);
        }
    }
    list
}
