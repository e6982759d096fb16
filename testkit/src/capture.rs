//! A packet capture that cannot lie: `tcpdump -U -w` in a namespace, confirmed live by a
//! positive control, decoded here (not from tcpdump's summary lines), and every IPv6 frame
//! classified as protected, clear or neighbour discovery.
//!
//! The contract:
//! - [`Capture::start`] returns only once tcpdump said "listening on" *and* a marker frame sent
//!   after that is in the capture file; [`Capture::stop`] sends a second marker and waits for it
//!   too, so every frame sent before `stop` is in the file. tcpdump dying, printing an error,
//!   reporting kernel drops, or the file going missing fails the test.
//! - The markers are Ethernet frames of the local experimental EtherType 0x88b5 carrying a
//!   random token: not IPv6, so no xipsec program acts on them, and they never count as traffic.
//! - An IPv6 frame is [`Class::Protected`] only when it is ESP (next header 50, possibly after
//!   extension headers) under one of the test's SPIs, or a non-first outer fragment (fragment
//!   header's next header 50) of a datagram whose first fragment carried one of those SPIs.
//!   Neighbour discovery (ICMPv6 133-137) and MLD (130-132, 143) are [`Class::Control`];
//!   everything else, including ESP under any other SPI and unmatched fragments, is
//!   [`Class::Clear`]. VLAN tags (802.1Q, 802.1ad, both) are looked through.
//!
//! XDP runs before packet taps: a capture on an interface with xipsec's XDP does not see what
//! XDP redirects or drops there. Capture where the traffic arrives on an interface without it
//! (the far side of the wire), or on the sending side (taps see what TC egress let through).

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, Read},
    net::Ipv6Addr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ipsec_common::abi::{ethertype, proto};
use pcap_file::pcap::PcapReader;

use crate::netns::exec;

/// EtherType of the marker frames: IEEE 802 local experimental (IEEE Std 802, 9.2.4).
pub const MARKER_ETHERTYPE: u16 = 0x88b5;
/// Extension headers in the RFC 8200 §4 format (next header, length in 8-octet units - 1):
/// hop-by-hop, routing, destination options, mobility (135), HIP (139), shim6 (140). Wider
/// than what xipsec's parsers walk on purpose: the capture must see ESP behind any of them.
const NH_EXTENSIONS: [u8; 6] = [
    proto::HOP_BY_HOP,
    proto::ROUTING,
    proto::DEST_OPTS,
    135,
    139,
    140,
];
/// How many extension headers the walk follows before giving up (the frame is then clear).
const MAX_EXTENSIONS: usize = 16;
/// How long a marker may take to reach the file.
const MARKER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a captured IPv6 frame is, for the "nothing in clear" checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// ESP under one of the test's SPIs, or an outer fragment of such ESP.
    Protected,
    /// Neighbour discovery or MLD: link control, in clear by design.
    Control,
    /// Anything else.
    Clear,
}

/// One captured IPv6 frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The whole Ethernet frame as captured.
    pub ether: Vec<u8>,
    /// Offset of the IPv6 header in `ether` (past any VLAN tags).
    pub ip_offset: usize,
    pub class: Class,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The last next-header value the walk reached (50 for ESP, 17 for UDP, ...).
    pub upper: u8,
    /// ESP's SPI, when the frame is (the first fragment of) ESP.
    pub spi: Option<u32>,
    /// The fragment header's (identification, offset in bytes, more fragments), if any.
    pub fragment: Option<(u32, u16, bool)>,
}

impl Frame {
    /// The IPv6 packet (header onwards).
    pub fn ipv6(&self) -> &[u8] {
        &self.ether[self.ip_offset..]
    }

    /// One line for failure messages.
    pub fn describe(&self) -> String {
        let frag = self
            .fragment
            .map(|(id, off, more)| format!(" frag id {id:#x} off {off} more {more}"))
            .unwrap_or_default();
        let spi = self.spi.map(|s| format!(" spi {s:#x}")).unwrap_or_default();
        format!(
            "{:?} {} -> {} next header {}{spi}{frag}, {} bytes",
            self.class,
            self.src,
            self.dst,
            self.upper,
            self.ipv6().len()
        )
    }

    /// True if `needle` appears anywhere in the frame (for plaintext markers).
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.ether.windows(needle.len()).any(|w| w == needle)
    }
}

/// The IPv6 frames of one capture (markers and other non-IPv6 frames left out).
#[derive(Clone, Debug)]
pub struct Frames {
    pub frames: Vec<Frame>,
    /// The capture file, kept for tools that re-send frames from it.
    pub file: PathBuf,
}

impl Frames {
    pub fn clear_frames(&self) -> Vec<&Frame> {
        self.of(Class::Clear)
    }

    pub fn clear_count(&self) -> usize {
        self.clear_frames().len()
    }

    pub fn esp_count(&self) -> usize {
        self.of(Class::Protected).len()
    }

    /// The protected frames (ESP under a test SPI and outer fragments of it).
    pub fn esp_frames(&self) -> Vec<&Frame> {
        self.of(Class::Protected)
    }

    /// How many protected frames are outer fragments (first or not) of fragmented ESP.
    pub fn esp_fragment_count(&self) -> usize {
        self.esp_frames()
            .iter()
            .filter(|f| f.fragment.is_some())
            .count()
    }

    /// Whole ESP packets (IPv6 header onwards): unfragmented ones as captured, fragmented ones
    /// reassembled (fragment header directly after the IPv6 header, every fragment captured).
    pub fn esp_packets(&self) -> Vec<Vec<u8>> {
        let mut whole = Vec::new();
        let mut datagrams: HashMap<(Ipv6Addr, Ipv6Addr, u32), Vec<&Frame>> = HashMap::new();
        for f in self.esp_frames() {
            match f.fragment {
                None => whole.push(f.ipv6().to_vec()),
                Some((id, _, _)) => datagrams.entry((f.src, f.dst, id)).or_default().push(f),
            }
        }
        for parts in datagrams.values_mut() {
            if let Some(packet) = reassemble(parts) {
                whole.push(packet);
            }
        }
        whole
    }

    /// Panics (naming `context` and the offending frames) unless at least one protected frame
    /// was captured and not one clear frame.
    pub fn assert_only_esp(&self, context: &str) {
        let clear = self.clear_frames();
        assert!(
            clear.is_empty(),
            "{context}: {} clear frames on the wire (and {} ESP):\n{}",
            clear.len(),
            self.esp_count(),
            describe(&clear)
        );
        assert!(
            self.esp_count() > 0,
            "{context}: the capture saw no ESP at all:\n{}",
            describe(&self.frames.iter().collect::<Vec<_>>())
        );
    }

    fn of(&self, class: Class) -> Vec<&Frame> {
        self.frames.iter().filter(|f| f.class == class).collect()
    }
}

/// One line per frame, at most 40.
pub fn describe(frames: &[&Frame]) -> String {
    let mut lines: Vec<String> = frames.iter().take(40).map(|f| f.describe()).collect();
    if frames.len() > 40 {
        lines.push(format!("... and {} more", frames.len() - 40));
    }
    lines.join("\n")
}

/// A running tcpdump, confirmed live; killed if dropped before [`Capture::stop`].
pub struct Capture {
    child: Child,
    ns: String,
    iface: String,
    file: PathBuf,
    spis: Vec<u32>,
    /// Where markers are sent from: the capturing namespace, or the far end of the wire.
    marker_from: (String, String),
    stderr: Arc<Mutex<String>>,
}

impl Capture {
    /// Captures everything on `iface` of namespace `ns` into `file`; frames are protected under
    /// `spis` (see the module doc). The markers are sent from `ns` itself.
    pub fn start(ns: &str, iface: &str, file: &Path, spis: &[u32]) -> Self {
        Self::start_with_marker_from(ns, iface, file, spis, (ns, iface))
    }

    /// As [`Self::start`], with the markers sent out of `marker_from` = (namespace, interface),
    /// typically the other end of the wire: then the markers also prove that frames arriving
    /// from there are seen.
    pub fn start_with_marker_from(
        ns: &str,
        iface: &str,
        file: &Path,
        spis: &[u32],
        marker_from: (&str, &str),
    ) -> Self {
        let _ = std::fs::remove_file(file);
        // A 64 MiB buffer (-B, in KiB): a capture that drops frames cannot vouch that none was
        // clear, so `stop` fails on any kernel drop; a 10 MB TCP burst on a busy machine
        // overflows the default 2 MiB.
        let mut child = exec(
            ns,
            &[
                "tcpdump", "-i", iface, "-U", "-nn", "-s", "0", "-B", "65536",
            ],
        )
        .arg("-w")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tcpdump (is it installed?)");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("tcpdump stderr");
        let (listening_tx, listening_rx) = std::sync::mpsc::channel();
        {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut lines = BufReader::new(pipe);
                let mut line = String::new();
                while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line.contains("listening on") {
                        let _ = listening_tx.send(());
                    }
                    stderr.lock().expect("stderr lock").push_str(&line);
                    line.clear();
                }
                let mut rest = String::new();
                let _ = lines.read_to_string(&mut rest);
                stderr.lock().expect("stderr lock").push_str(&rest);
            });
        }
        let mut capture = Self {
            child,
            ns: ns.into(),
            iface: iface.into(),
            file: file.into(),
            spis: spis.to_vec(),
            marker_from: (marker_from.0.into(), marker_from.1.into()),
            stderr,
        };
        if listening_rx.recv_timeout(MARKER_TIMEOUT).is_err() {
            let status = capture.child.try_wait().ok().flatten();
            panic!(
                "tcpdump on {iface} in {ns} never said \"listening on\" (exit {status:?}): {}",
                capture.stderr()
            );
        }
        capture.confirm_marker("start");
        capture
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Sends a marker frame and waits until it is in the capture file.
    fn confirm_marker(&mut self, when: &str) {
        let token = format!(
            "xipsec-capture-{when}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let started = Instant::now();
        let mut last_send = None::<Instant>;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "tcpdump on {} in {} died ({status}): {}",
                    self.iface,
                    self.ns,
                    self.stderr()
                );
            }
            // Resend now and then: a marker sent while tcpdump was still attaching is lost.
            if last_send.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
                send_marker(&self.marker_from.0, &self.marker_from.1, &token);
                last_send = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(50));
            if self.file.exists() && marker_seen(&self.file, token.as_bytes()) {
                return;
            }
            assert!(
                started.elapsed() < MARKER_TIMEOUT,
                "capture on {} in {}: the {when} marker sent from {} {} never reached {} \
                 (exists: {}); tcpdump: {}",
                self.iface,
                self.ns,
                self.marker_from.0,
                self.marker_from.1,
                self.file.display(),
                self.file.exists(),
                self.stderr()
            );
        }
    }

    /// Confirms with a second marker that everything sent so far is in the file, stops tcpdump
    /// (SIGINT, so it flushes), checks it exited cleanly without kernel drops, and decodes.
    pub fn stop(mut self) -> Frames {
        self.confirm_marker("stop");
        crate::daemon::signal(&self.child, libc::SIGINT);
        let status = self.child.wait().expect("waiting for tcpdump");
        // The reader thread ends when the pipe closes; give it a moment to take the last lines.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.stderr().contains("dropped by kernel") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let stderr = self.stderr();
        assert!(
            status.success() || status.code().is_none(),
            "tcpdump exited with {status}: {stderr}"
        );
        let dropped = stderr
            .lines()
            .find(|l| l.contains("dropped by kernel"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok());
        assert_eq!(
            dropped,
            Some(0),
            "tcpdump must report 0 packets dropped by kernel: {stderr}"
        );
        assert!(
            self.file.exists(),
            "capture file {} is missing",
            self.file.display()
        );
        decode(&self.file, &self.spis)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // A no-op after `stop` (the child was reaped); otherwise a failing test leaves no
        // tcpdump behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one marker frame carrying `token` out of `iface` in namespace `ns`.
fn send_marker(ns: &str, iface: &str, token: &str) {
    let ethertype = MARKER_ETHERTYPE.to_string();
    crate::traffic::fixture_output(ns, "traffic.py", &["marker", iface, &ethertype, token]);
}

/// The frames of `file`, each as captured (a file still being written may end mid-record).
fn read_frames(file: &Path) -> Vec<Vec<u8>> {
    let Ok(f) = std::fs::File::open(file) else {
        return Vec::new();
    };
    let Ok(mut reader) = PcapReader::new(f) else {
        return Vec::new();
    };
    let mut frames = Vec::new();
    while let Some(Ok(packet)) = reader.next_packet() {
        frames.push(packet.data.into_owned());
    }
    frames
}

fn marker_seen(file: &Path, token: &[u8]) -> bool {
    read_frames(file).iter().any(|f| {
        f.len() >= 14
            && u16::from_be_bytes([f[12], f[13]]) == MARKER_ETHERTYPE
            && f[14..].windows(token.len()).any(|w| w == token)
    })
}

/// Decodes and classifies every IPv6 frame of a finished capture file.
pub fn decode(file: &Path, spis: &[u32]) -> Frames {
    let f = std::fs::File::open(file).expect("opening the capture file");
    let mut reader = PcapReader::new(f).expect("the capture file is a pcap file");
    let mut raw = Vec::new();
    while let Some(packet) = reader.next_packet() {
        raw.push(packet.expect("reading a capture record").data.into_owned());
    }
    classify(raw, spis, file)
}

/// Classifies raw Ethernet frames (see the module doc).
pub fn classify(raw: Vec<Vec<u8>>, spis: &[u32], file: &Path) -> Frames {
    let spis: HashSet<u32> = spis.iter().copied().collect();
    let mut frames: Vec<Frame> = raw.into_iter().filter_map(parse).collect();
    // Datagrams whose first fragment is ESP under a test SPI: their other fragments are
    // protected too.
    let protected_datagrams: HashSet<(Ipv6Addr, Ipv6Addr, u32)> = frames
        .iter()
        .filter_map(|f| match (f.fragment, f.spi) {
            (Some((id, 0, _)), Some(spi)) if spis.contains(&spi) => Some((f.src, f.dst, id)),
            _ => None,
        })
        .collect();
    for f in &mut frames {
        f.class = match (f.upper, f.spi, f.fragment) {
            (proto::ICMPV6, _, None) if is_link_control(f) => Class::Control,
            (proto::ESP, Some(spi), _) if spis.contains(&spi) => Class::Protected,
            (proto::ESP, None, Some((id, off, _)))
                if off > 0 && protected_datagrams.contains(&(f.src, f.dst, id)) =>
            {
                Class::Protected
            }
            _ => Class::Clear,
        };
    }
    Frames {
        frames,
        file: file.into(),
    }
}

/// ICMPv6 neighbour discovery (RFC 4861: 133-137) or MLD (RFC 2710, RFC 3810: 130-132, 143).
fn is_link_control(f: &Frame) -> bool {
    let ip = f.ipv6();
    // The ICMPv6 type follows the last extension header; find it again.
    walk(ip).is_some_and(|w| {
        ip.get(w.upper_offset)
            .is_some_and(|t| matches!(t, 130..=137 | 143))
    })
}

struct Walk {
    upper: u8,
    upper_offset: usize,
    fragment: Option<(u32, u16, bool)>,
}

/// Follows the extension-header chain of the IPv6 packet `ip`. For a non-first fragment the
/// walk stops at the fragment header (what follows is not a header).
fn walk(ip: &[u8]) -> Option<Walk> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return None;
    }
    let mut nh = ip[6];
    let mut off = 40;
    let mut fragment = None;
    for _ in 0..MAX_EXTENSIONS {
        match nh {
            proto::FRAGMENT => {
                let h = ip.get(off..off + 8)?;
                let offset = u16::from_be_bytes([h[2], h[3]]) & 0xfff8;
                let more = h[3] & 1 == 1;
                let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                fragment = Some((id, offset, more));
                nh = h[0];
                off += 8;
                if offset != 0 {
                    break;
                }
            }
            proto::AH => {
                let h = ip.get(off..off + 2)?;
                nh = h[0];
                off += (usize::from(h[1]) + 2) * 4;
            }
            n if NH_EXTENSIONS.contains(&n) => {
                let h = ip.get(off..off + 2)?;
                nh = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            _ => break,
        }
    }
    Some(Walk {
        upper: nh,
        upper_offset: off,
        fragment,
    })
}

/// An Ethernet frame carrying IPv6 (behind up to two VLAN tags), decoded; `None` otherwise.
fn parse(ether: Vec<u8>) -> Option<Frame> {
    let mut off = 12;
    let mut ether_type = u16::from_be_bytes([*ether.get(12)?, *ether.get(13)?]);
    for _ in 0..2 {
        if ether_type != ethertype::VLAN && ether_type != ethertype::QINQ {
            break;
        }
        off += 4;
        ether_type = u16::from_be_bytes([*ether.get(off)?, *ether.get(off + 1)?]);
    }
    if ether_type != ethertype::IPV6 {
        return None;
    }
    let ip_offset = off + 2;
    let ip = ether.get(ip_offset..)?;
    let addr = |at: usize| -> Option<Ipv6Addr> {
        let b: [u8; 16] = ip.get(at..at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    };
    let (src, dst) = (addr(8).unwrap_or(Ipv6Addr::UNSPECIFIED), addr(24)?);
    let w = walk(ip);
    let (upper, fragment, spi) = match &w {
        Some(w) => {
            let first = w.fragment.is_none_or(|(_, off, _)| off == 0);
            let spi = (w.upper == proto::ESP && first)
                .then(|| ip.get(w.upper_offset..w.upper_offset + 4))
                .flatten()
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            (w.upper, w.fragment, spi)
        }
        // Not parseable as IPv6: clear (nothing proves it protected).
        None => (255, None, None),
    };
    Some(Frame {
        ether,
        ip_offset,
        class: Class::Clear,
        src,
        dst,
        upper,
        spi,
        fragment,
    })
}

/// Reassembles the fragments of one datagram whose fragment header directly follows the IPv6
/// header; `None` when a piece is missing or the layout is another.
fn reassemble(parts: &mut [&Frame]) -> Option<Vec<u8>> {
    parts.sort_by_key(|f| f.fragment.map(|(_, off, _)| off));
    let first = parts.first()?.ipv6();
    if first.get(6) != Some(&proto::FRAGMENT) {
        return None;
    }
    let next = *first.get(40)?;
    let mut payload = Vec::new();
    for f in parts.iter() {
        let ip = f.ipv6();
        let (_, off, _) = f.fragment?;
        if ip.get(6) != Some(&proto::FRAGMENT) || usize::from(off) != payload.len() {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        payload.extend_from_slice(ip.get(48..40 + len)?);
    }
    if parts.last()?.fragment?.2 {
        return None; // the last fragment was not captured
    }
    let mut packet = first[..40].to_vec();
    packet[6] = next;
    let len = u16::try_from(payload.len()).ok()?;
    packet[4..6].copy_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&payload);
    Some(packet)
}

/// tshark over `pcap` with a profile directory (`profile`, emptied first) holding only `table`
/// as its `esp_sa` table, ESP decryption and ICV checking on: for each ESP frame, the values of
/// `fields` (tshark's `-e` names), in order.
pub fn tshark_esp(pcap: &Path, table: &Path, profile: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let _ = std::fs::remove_dir_all(profile);
    std::fs::create_dir_all(profile).expect("creating the profile directory");
    std::fs::copy(table, profile.join("esp_sa")).expect("copying the esp_sa table");
    let mut command = std::process::Command::new("tshark");
    command
        .env("WIRESHARK_CONFIG_DIR", profile)
        .env("HOME", profile)
        .args(["-n", "-r"])
        .arg(pcap)
        .args([
            "-o",
            "esp.enable_encryption_decode:TRUE",
            "-o",
            "esp.enable_authentication_check:TRUE",
            "-Y",
            "esp",
            "-T",
            "fields",
            "-E",
            "separator=|",
        ]);
    for field in fields {
        command.args(["-e", field]);
    }
    let out = command
        .output()
        .expect("running tshark (apt-get install tshark; cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("tshark's output is UTF-8")
        .lines()
        .map(|line| {
            let values: Vec<String> = line.split('|').map(str::to_owned).collect();
            assert_eq!(values.len(), fields.len(), "tshark line {line:?}");
            values
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ether(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype::IPV6.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn ipv6(nh: u8, payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        ip.extend_from_slice(&[nh, 64]);
        ip.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        ip.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        ip.extend_from_slice(payload);
        ip
    }

    fn frag(nh: u8, offset: u16, more: bool, id: u32, rest: &[u8]) -> Vec<u8> {
        let mut h = vec![nh, 0];
        h.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(rest);
        h
    }

    fn classes(raw: Vec<Vec<u8>>) -> Vec<Class> {
        classify(raw, &[0x1001], Path::new("-"))
            .frames
            .iter()
            .map(|f| f.class)
            .collect()
    }

    #[test]
    fn esp_under_a_test_spi_and_its_fragments_are_protected_everything_else_clear() {
        let esp = |spi: u32| [spi.to_be_bytes().as_slice(), &[0; 20]].concat();
        let dest_opts = [50u8, 0, 1, 4, 0, 0, 0, 0];
        let raw = vec![
            ether(&ipv6(50, &esp(0x1001))),
            ether(&ipv6(50, &esp(0x2002))),
            ether(&ipv6(60, &[dest_opts.as_slice(), &esp(0x1001)].concat())),
            ether(&ipv6(44, &frag(50, 0, true, 7, &esp(0x1001)))),
            ether(&ipv6(44, &frag(50, 1232, false, 7, &[0; 16]))),
            ether(&ipv6(44, &frag(50, 1232, false, 8, &[0; 16]))),
            ether(&ipv6(44, &frag(17, 0, true, 9, &[0; 16]))),
            ether(&ipv6(17, &[0; 16])),
            ether(&ipv6(58, &[135, 0, 0, 0])),
            ether(&ipv6(58, &[143, 0, 0, 0])),
            ether(&ipv6(58, &[128, 0, 0, 0])),
        ];
        use Class::*;
        assert_eq!(
            classes(raw),
            [
                Protected, Clear, Protected, Protected, Protected, Clear, Clear, Clear, Control,
                Control, Clear
            ]
        );
    }

    #[test]
    fn vlan_tags_are_looked_through_and_markers_skipped() {
        let mut tagged = vec![0u8; 12];
        tagged.extend_from_slice(&ethertype::QINQ.to_be_bytes());
        tagged.extend_from_slice(&[0, 1]);
        tagged.extend_from_slice(&ethertype::VLAN.to_be_bytes());
        tagged.extend_from_slice(&[0, 2]);
        tagged.extend_from_slice(&ethertype::IPV6.to_be_bytes());
        tagged.extend_from_slice(&ipv6(17, &[0; 8]));
        let mut marker = vec![0u8; 12];
        marker.extend_from_slice(&MARKER_ETHERTYPE.to_be_bytes());
        marker.extend_from_slice(b"token");
        assert_eq!(classes(vec![tagged, marker]), [Class::Clear]);
    }

    #[test]
    fn fragmented_esp_is_reassembled() {
        let body: Vec<u8> = (0..40u8).collect();
        let first = [0x1001u32.to_be_bytes().as_slice(), &body[..20]].concat();
        let raw = vec![
            ether(&ipv6(44, &frag(50, 24, false, 5, &body[20..]))),
            ether(&ipv6(44, &frag(50, 0, true, 5, &first))),
        ];
        let frames = classify(raw, &[0x1001], Path::new("-"));
        assert_eq!(frames.esp_count(), 2);
        let packets = frames.esp_packets();
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0][6], 50);
        assert_eq!(&packets[0][40..44], &0x1001u32.to_be_bytes());
        assert_eq!(&packets[0][44..], &body);
    }
}
