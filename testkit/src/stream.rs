//! Traffic that runs while something changes underneath it (key rotation, rekeying, restarts):
//! a paced TCP stream whose every byte is checked at the far end, and a fast ping whose loss is
//! counted.

use std::{
    io::{Read, Write},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    process::{Child, Stdio},
    thread,
    time::Duration,
};

use crate::netns;

/// How a [`source`] paces its stream: `chunk` bytes, then `pause`, until `total` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub chunk: usize,
    pub pause: Duration,
    pub total: usize,
}

/// Byte `i` of the stream: not periodic at any chunk size, so a lost, doubled or reordered
/// segment is caught.
pub fn stream_byte(i: usize) -> u8 {
    let i = i as u64;
    #[allow(clippy::cast_possible_truncation, reason = "the low byte is the point")]
    let b = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29) as u8 ^ (i >> 8) as u8;
    b
}

/// Accepts one connection on `addr`:`port` in namespace `ns` and checks every byte; returns how
/// many arrived in order and correct (the stream ends at the first wrong byte), and why it ended
/// early if it did. Returns once the listener is bound.
pub fn sink(ns: String, addr: Ipv6Addr, port: u16) -> thread::JoinHandle<(usize, Option<String>)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = thread::spawn(move || {
        netns::in_netns(&ns, || {
            let listener =
                TcpListener::bind(SocketAddr::from((addr, port))).expect("binding the sink");
            ready_tx.send(()).expect("signalling the sink is ready");
            let (mut conn, _) = listener.accept().expect("accepting the stream");
            conn.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("setting a read timeout");
            let mut buf = vec![0u8; 64 << 10];
            let mut at = 0usize;
            loop {
                let n = match conn.read(&mut buf) {
                    Ok(0) => return (at, None),
                    Ok(n) => n,
                    Err(e) => return (at, Some(format!("read: {e}"))),
                };
                for (k, &byte) in buf[..n].iter().enumerate() {
                    if byte != stream_byte(at + k) {
                        return (at + k, Some(format!("byte {} differs", at + k)));
                    }
                }
                at += n;
            }
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the sink listens");
    handle
}

/// Sends the paced stream from namespace `ns` to `addr`:`port`; the bytes sent.
pub fn source(
    ns: String,
    addr: Ipv6Addr,
    port: u16,
    pace: Pace,
) -> thread::JoinHandle<Result<usize, String>> {
    thread::spawn(move || {
        netns::in_netns(&ns, || {
            let mut conn =
                TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(5))
                    .map_err(|e| format!("connect: {e}"))?;
            conn.set_write_timeout(Some(Duration::from_secs(20)))
                .map_err(|e| format!("timeout: {e}"))?;
            let mut at = 0;
            while at < pace.total {
                let chunk: Vec<u8> = (at..at + pace.chunk).map(stream_byte).collect();
                conn.write_all(&chunk)
                    .map_err(|e| format!("write at {at}: {e}"))?;
                at += pace.chunk;
                thread::sleep(pace.pause);
            }
            conn.shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            Ok(at)
        })
    })
}

/// `ping -i {interval} -c {count}` from `ns` to `dst`, running in the background (its summary
/// is read with [`ping_summary`]).
pub fn ping(ns: &str, dst: &str, interval: &str, count: &str) -> Child {
    netns::exec(
        ns,
        &[
            "ping", "-6", "-n", "-q", "-i", interval, "-c", count, "-W", "2", dst,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting ping")
}

/// (transmitted, received) from ping's summary line.
pub fn ping_summary(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in: {out}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(2)
        .map(|w| w.parse().expect("a count"))
        .collect();
    (numbers[0], numbers[1])
}
