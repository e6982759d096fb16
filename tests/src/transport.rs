//! Two hosts of a `VethPair` protecting everything between them with transport-mode ESP (the
//! demo's host-to-host exchange): the commands that configure each side, and a TCP transfer
//! across. Used by the tests that need live ESP traffic without testing ESP itself (metrics,
//! the package).

use std::process::Stdio;
use std::time::Duration;

use xipsec_testkit::{cli::SpArgs, netns::VethPair, traffic::py};

use crate::esp_oracle::EspSa;

/// SPIs of the a -> b and b -> a SAs.
pub const SPI_AB: u32 = 0x2a01;
pub const SPI_BA: u32 = 0x2a02;

/// The two SAs (a -> b, b -> a), the same on both hosts.
pub fn sas(net: &VethPair) -> [EspSa; 2] {
    [
        EspSa::aes_sha256("sa-ab", SPI_AB, (&net.addr_a, &net.addr_b), 0x11),
        EspSa::aes_sha256("sa-ba", SPI_BA, (&net.addr_b, &net.addr_a), 0x22),
    ]
}

/// The CLI commands configuring host a (`a_side`) or b: both SAs, then an `ipsec` SP per
/// direction covering every protocol and port between the two addresses.
pub fn commands(net: &VethPair, a_side: bool) -> Vec<Vec<String>> {
    let (me, peer, out, inbound) = if a_side {
        (&net.addr_a, &net.addr_b, "sa-ab", "sa-ba")
    } else {
        (&net.addr_b, &net.addr_a, "sa-ba", "sa-ab")
    };
    let mut commands: Vec<Vec<String>> = sas(net).iter().map(EspSa::sa_add_args).collect();
    let (me, peer) = (format!("{me}/128"), format!("{peer}/128"));
    for (dir, src, dst, sa) in [("out", &me, &peer, out), ("in", &peer, &me, inbound)] {
        let name = format!("protect-{dir}");
        let sp = SpArgs {
            sa: Some(sa),
            ..SpArgs::ipsec(src, dst, dir, &name)
        };
        commands.push(sp.args().into_iter().map(str::to_owned).collect());
    }
    commands
}

/// A TCP transfer of `megabytes` from a to b's `port` in the background; `wait` returns what
/// was sent and what arrived (`BYTES SHA256` each).
pub struct Transfer {
    sink: Option<std::process::Child>,
    source: Option<std::process::Child>,
}

impl Drop for Transfer {
    /// Ends still running (stopped, or a test that failed) are killed.
    fn drop(&mut self) {
        for child in [self.source.take(), self.sink.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Transfer {
    pub fn start(net: &VethPair, port: u16, megabytes: u32) -> Self {
        let port = port.to_string();
        let sink = py(&net.ns_b, &["tcp-sink", &net.addr_b, &port, "120"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the TCP sink");
        std::thread::sleep(Duration::from_millis(400));
        let source = py(
            &net.ns_a,
            &["tcp-source", &net.addr_b, &port, &megabytes.to_string()],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the TCP source");
        Self {
            sink: Some(sink),
            source: Some(source),
        }
    }

    /// Stop both ends now (a stream that was only there to be measured).
    pub fn stop(self) {
        // Drop does it.
    }

    /// Wait for both ends: (sent, received).
    pub fn wait(mut self) -> (String, String) {
        let source = self
            .source
            .take()
            .expect("a source")
            .wait_with_output()
            .expect("the TCP source");
        let sink = self
            .sink
            .take()
            .expect("a sink")
            .wait_with_output()
            .expect("the TCP sink");
        let last = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        (last(&source.stdout), last(&sink.stdout))
    }
}
