//! strongSwan's userspace ESP (charon with the `kernel-libipsec` plugin) between two namespaces,
//! the competitor of `cargo xtask bench e2e`.
//!
//! Each side runs its own charon (Debian's `strongswan-charon`) with its own `strongswan.conf`
//! (`STRONGSWAN_CONF`), VICI socket and log in the lab's scratch directory, and a private
//! directory bound over `/run` (charon's pid file is the fixed `/var/run/charon.pid`, so two
//! charons on one machine need two): `ip netns exec` runs every command in a mount namespace of
//! its own (it remounts `/sys` there), and the bind mount stays in it. `swanctl` loads an IKEv2
//! PSK connection on both and side a initiates its child SA: tunnel mode between one inner
//! address per side, ESP aes128-cbc + hmac-sha2-256-128 (IKE aes128-sha256-modp2048), which
//! libipsec always carries in UDP (port 4500) and processes in charon over a TUN device
//! (`ipsec0`, routes in table 220). Only the plugins needed are loaded, the fastest first:
//! `aesni` (AES-NI) and `openssl` (SHA-NI HMAC) from `libstrongswan-standard-plugins`, then
//! strongSwan's own software `aes`, `sha2` and `hmac`, so strongSwan gets the same hardware
//! help as xipsec.

use std::{
    fmt::Write as _,
    process::{Child, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::lab::Lab;

const CHARON: &str = "/usr/lib/ipsec/charon";
const PSK: &str = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Two charons and the tunnel between their inner addresses.
pub(crate) struct Strongswan {
    pub lab: Lab,
    /// Inner (tunnelled) addresses of a and b.
    pub inner: (String, String),
    charons: Vec<Child>,
}

impl Strongswan {
    /// Namespaces, charons, the IKE SA and the child SA, up.
    pub(crate) fn new(prefix: &str, tag: u16) -> anyhow::Result<Self> {
        let lab = Lab::new(prefix, tag)?;
        let inner = (format!("fd00:{tag:x}:a::1"), format!("fd00:{tag:x}:b::1"));
        let mut this = Self {
            lab,
            inner,
            charons: Vec::new(),
        };
        for side in ["a", "b"] {
            this.start(side)?;
        }
        this.initiate()?;
        Ok(this)
    }

    fn ns(&self, side: &str) -> &str {
        if side == "a" {
            &self.lab.net.ns_a
        } else {
            &self.lab.net.ns_b
        }
    }

    fn dir(&self, side: &str) -> std::path::PathBuf {
        self.lab.scratch.path().join(format!("charon-{side}"))
    }

    fn vici(&self, side: &str) -> String {
        format!("unix://{}/vici", self.dir(side).display())
    }

    fn configs(&self, side: &str) -> (String, String) {
        let dir = self.dir(side);
        let (me, peer, local_ts, remote_ts, peer_id) = if side == "a" {
            (
                &self.lab.net.addr_a,
                &self.lab.net.addr_b,
                &self.inner.0,
                &self.inner.1,
                "b",
            )
        } else {
            (
                &self.lab.net.addr_b,
                &self.lab.net.addr_a,
                &self.inner.1,
                &self.inner.0,
                "a",
            )
        };
        let mut conf = String::new();
        let _ = write!(
            conf,
            "charon {{\n  load_modular = no\n  load = random nonce aesni openssl aes sha1 sha2 hmac gmp kdf \
             kernel-libipsec kernel-netlink socket-default vici\n  install_routes = yes\n  \
             plugins {{\n    vici {{\n      socket = {vici}\n    }}\n  }}\n  filelog {{\n    \
             log {{\n      path = {log}\n      default = 1\n    }}\n  }}\n}}\n",
            vici = self.vici(side),
            log = dir.join("charon.log").display(),
        );
        let swanctl = format!(
            "connections {{\n  bench {{\n    version = 2\n    local_addrs = {me}\n    \
             remote_addrs = {peer}\n    proposals = aes128-sha256-modp2048\n    local {{\n      \
             auth = psk\n      id = {side}\n    }}\n    remote {{\n      auth = psk\n      \
             id = {peer_id}\n    }}\n    children {{\n      net {{\n        \
             local_ts = {local_ts}/128\n        remote_ts = {remote_ts}/128\n        \
             esp_proposals = aes128-sha256\n        mode = tunnel\n      }}\n    }}\n  }}\n}}\n\
             secrets {{\n  ike-bench {{\n    id-a = a\n    id-b = b\n    secret = {PSK}\n  }}\n}}\n"
        );
        (conf, swanctl)
    }

    /// Side `side`'s inner address on its loopback, and its charon.
    fn start(&mut self, side: &str) -> anyhow::Result<()> {
        let dir = self.dir(side);
        std::fs::create_dir_all(dir.join("run"))?;
        let (conf, swanctl) = self.configs(side);
        std::fs::write(dir.join("strongswan.conf"), conf)?;
        std::fs::write(dir.join("swanctl.conf"), swanctl)?;
        let ns = self.ns(side).to_string();
        let inner = if side == "a" {
            &self.inner.0
        } else {
            &self.inner.1
        };
        xipsec_testkit::netns::add_address(&ns, &format!("{inner}/128"), "lo");
        let script = format!(
            "mount --bind {} /run && exec {CHARON}",
            dir.join("run").display()
        );
        let charon = Lab::exec(&ns, &["sh", "-c", &script])
            .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting charon")?;
        self.charons.push(charon);
        Ok(())
    }

    fn swanctl(&self, side: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Lab::exec(self.ns(side), &["swanctl"])
            .args(args)
            .args(["--uri", &self.vici(side)])
            .output()
            .context("running swanctl")?;
        if !out.status.success() {
            bail!(
                "swanctl {}: {}{}\ncharon log: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.dir(side).join("charon.log")).unwrap_or_default()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn initiate(&self) -> anyhow::Result<()> {
        for side in ["a", "b"] {
            let file = self.dir(side).join("swanctl.conf");
            let file = file.to_str().unwrap_or_default().to_string();
            // charon needs a moment to open its VICI socket.
            let mut tries = 0;
            while let Err(e) = self.swanctl(side, &["--load-all", "--file", &file]) {
                tries += 1;
                if tries > 50 {
                    return Err(e);
                }
                sleep(Duration::from_millis(100));
            }
        }
        self.swanctl("a", &["--initiate", "--child", "net"])?;
        Ok(())
    }

    /// Bytes side a's charon has read from its TUN device (what went into ESP).
    pub(crate) fn tun_bytes(&self) -> anyhow::Result<u64> {
        let text = xipsec_testkit::netns::output(
            &self.lab.net.ns_a,
            &["cat", "/sys/class/net/ipsec0/statistics/tx_bytes"],
        );
        text.trim()
            .parse()
            .with_context(|| format!("ipsec0 tx_bytes: {text:?}"))
    }
}

impl Drop for Strongswan {
    fn drop(&mut self) {
        for charon in &mut self.charons {
            let _ = charon.kill();
            let _ = charon.wait();
        }
    }
}
