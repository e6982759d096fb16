//! strongSwan's charon in a namespace, the independent IKEv2 implementation the interop tests
//! run against: Debian's 5.9.8 with its own `strongswan.conf`, VICI socket and log, and its
//! `kernel-libipsec` plugin for CHILD_SAs (userspace ESP over a TUN device `ipsec0`, routes in
//! table 220, ESP always in UDP 4500), since this kernel has no ESP.
//!
//! charon's pid file is the fixed `/var/run/charon.pid`: each charon gets a private `/run` by a
//! bind mount inside the mount namespace `ip netns exec` gives it, so several can run at once.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::netns::exec;

/// Debian's charon binary (package `strongswan-charon`).
pub const CHARON: &str = "/usr/lib/ipsec/charon";
/// Only the plugins the tests need: openssl brings x25519 and ecp256 (Debian's package has no
/// curve25519 plugin), gmp modp2048, kernel-libipsec the userspace CHILD_SAs.
const PLUGINS: &str = "random nonce aes sha1 sha2 hmac gcm gmp openssl kdf kernel-libipsec \
                       kernel-netlink socket-default vici";

/// A running charon, killed on drop.
pub struct Charon {
    ns: String,
    dir: PathBuf,
    process: Child,
}

impl Charon {
    /// Starts charon in namespace `ns` with its files under `dir`; `settings` are extra lines
    /// for the `charon { }` section (e.g. `retransmit_tries = 2`). Returns once its VICI socket
    /// answers.
    pub fn start(ns: &str, dir: &Path, settings: &str) -> Self {
        fs::create_dir_all(dir.join("run")).expect("creating charon's directory");
        let conf = format!(
            "charon {{\n  load_modular = no\n  load = {PLUGINS}\n  install_routes = yes\n  \
             {settings}\n  plugins {{\n    vici {{\n      socket = unix://{dir}/vici\n    }}\n  }}\n  \
             filelog {{\n    log {{\n      path = {dir}/charon.log\n      flush_line = yes\n      \
             default = 1\n      ike = 2\n      cfg = 2\n    }}\n  }}\n}}\n",
            dir = dir.display()
        );
        fs::write(dir.join("strongswan.conf"), conf).expect("writing strongswan.conf");
        let script = format!(
            "mount --bind {} /run && exec {CHARON}",
            dir.join("run").display()
        );
        let process = exec(ns, &["sh", "-c", &script])
            .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting charon");
        let charon = Self {
            ns: ns.to_owned(),
            dir: dir.to_owned(),
            process,
        };
        let started = Instant::now();
        while charon.try_swanctl(&["--stats"]).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "charon did not open its vici socket: {}",
                charon.log()
            );
            sleep(Duration::from_millis(100));
        }
        charon
    }

    /// `swanctl ARGS` against this charon's VICI socket, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = exec(&self.ns, &["swanctl"]);
        cmd.args(args)
            .args(["--uri", &format!("unix://{}/vici", self.dir.display())]);
        cmd
    }

    /// `swanctl ARGS`: its stdout and stderr, `Err` when it failed.
    pub fn try_swanctl(&self, args: &[&str]) -> Result<String, String> {
        let out = self.command(args).output().expect("running swanctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// `swanctl ARGS`, which must succeed.
    pub fn swanctl(&self, args: &[&str]) -> String {
        self.try_swanctl(args)
            .unwrap_or_else(|e| panic!("swanctl {args:?}: {e}\ncharon log:\n{}", self.log()))
    }

    /// charon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }

    /// Replaces charon's connections and secrets with `conf` (a `swanctl.conf`).
    pub fn load(&self, conf: &str) {
        let file = self.dir.join("swanctl.conf");
        fs::write(&file, conf).expect("writing swanctl.conf");
        self.swanctl(&["--load-all", "--file", file.to_str().expect("a utf-8 path")]);
    }

    /// Polls `swanctl --list-sas` until `done` holds for its output or `timeout` passes; the
    /// last output and whether `done` held.
    pub fn wait_for_sas(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> (String, bool) {
        let started = Instant::now();
        loop {
            let sas = self.swanctl(&["--list-sas"]);
            if done(&sas) {
                return (sas, true);
            }
            if started.elapsed() > timeout {
                return (sas, false);
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// The CHILD_SAs' ESP SPIs charon lists (`in  c1234567`, `out c7654321`), inbound then
    /// outbound, in listing order.
    pub fn child_spis(&self) -> (Vec<u32>, Vec<u32>) {
        child_spis(&self.swanctl(&["--list-sas"]))
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The ESP SPIs in a `swanctl --list-sas` output: lines `in  c1234567, ...` and `out c7654321,
/// ...` under each CHILD_SA; (inbound, outbound).
pub fn child_spis(list: &str) -> (Vec<u32>, Vec<u32>) {
    let (mut inbound, mut outbound) = (Vec::new(), Vec::new());
    for line in list.lines() {
        let mut words = line.split_whitespace();
        let list = match words.next() {
            Some("in") => &mut inbound,
            Some("out") => &mut outbound,
            _ => continue,
        };
        let spi = words
            .next()
            .map(|w| w.trim_end_matches(','))
            .and_then(|w| u32::from_str_radix(w, 16).ok());
        if let Some(spi) = spi {
            list.push(spi);
        }
    }
    (inbound, outbound)
}

#[cfg(test)]
mod tests {
    use super::child_spis;

    #[test]
    fn child_spis_reads_swanctl_lines() {
        let list = "xi: #1, ESTABLISHED, IKEv2, 1a2b3c4d5e6f7081_i* 9a8b7c6d5e4f3021_r\n  \
                    net: #1, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-128\n    \
                    installed 3s ago, rekeying in 50s, expires in 63s\n    \
                    in  c1f3e2a4,      0 bytes,     0 packets\n    \
                    out 0d1e2f3a,    840 bytes,    10 packets,     1s ago\n";
        assert_eq!(child_spis(list), (vec![0xc1f3_e2a4], vec![0x0d1e_2f3a]));
    }
}
