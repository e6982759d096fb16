#!/usr/bin/env python3
"""ESP interop peer for ipsec-user/tests/esp_interop.rs, built on scapy.layers.ipsec.

Protocol: one JSON request on stdin, one JSON answer on stdout; packets travel as hex.

  {"op": "probe"}
      -> {"ok": true, "scapy": VERSION, "crypt": [...], "auth": [...]}
  {"op": "encrypt", "sa": SA}
      -> {"ok": true, "packets": [{"name", "plain", "esp", "seq"}]}
     scapy builds a fixed set of ICMPv6 / UDP / TCP packets (with and without extension
     headers) and encrypts each, sequence numbers 1, 2, 3, ...
  {"op": "decrypt", "sa": SA, "packets": [{"esp"}]}
      -> {"ok": true, "results": [{"ok", "error", "plain", "seq", "padlen"}]}
     scapy verifies the ICV and decrypts each packet; this script also checks what scapy
     leaves to the caller: SPI, strictly increasing sequence numbers from 1, RFC 4303 §2.4
     padding (1, 2, 3, ... and 4-byte alignment) and, in tunnel mode, the outer header.

  {"op": "batch", "requests": [REQUEST, ...]}
      -> {"ok": true, "answers": [ANSWER, ...]}
     several requests in one process, because importing scapy dominates the run time.

SA = {"spi": int, "crypt_algo": "3DES" | "AES-CBC" | "AES-GCM" | "NULL", "crypt_key": hex
      (AES-GCM: the AES key then the 4-byte salt, RFC 4106),
      "auth_algo": "HMAC-SHA1-96" | "SHA2-256-128" | "NULL" (with AES-GCM), "auth_key": hex,
      "mode": "transport" | "tunnel", "tunnel_src": addr, "tunnel_dst": addr,
      "inner_src": addr, "inner_dst": addr}
"""

import json
import sys
import warnings

# cryptography warns that 3DES is deprecated; that is the point of testing it, not news.
warnings.filterwarnings("ignore")

try:
    import scapy
    from scapy.all import raw
    from scapy.layers.inet import TCP, UDP
    from scapy.layers.inet6 import (
        ICMPv6EchoRequest,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
        RouterAlert,
    )
    from scapy.layers.ipsec import (
        AUTH_ALGOS,
        CRYPT_ALGOS,
        ESP,
        IPSecIntegrityError,
        SecurityAssociation,
    )
except ImportError as err:  # reported to the Rust side, which decides to skip or fail
    print(json.dumps({"ok": False, "error": f"scapy unavailable: {err}"}))
    sys.exit(0)


def security_association(sa):
    tunnel = None
    if sa["mode"] == "tunnel":
        tunnel = IPv6(src=sa["tunnel_src"], dst=sa["tunnel_dst"])
    return SecurityAssociation(
        ESP,
        spi=sa["spi"],
        crypt_algo=sa["crypt_algo"],
        crypt_key=bytes.fromhex(sa["crypt_key"]) if sa["crypt_key"] else None,
        auth_algo=sa["auth_algo"],
        auth_key=bytes.fromhex(sa["auth_key"]),
        tunnel_header=tunnel,
    )


def plaintexts(sa):
    """The packets scapy encrypts: every upper layer, sizes across block boundaries, and the
    extension headers transport mode must keep in front of ESP (or may hide inside it)."""
    ip = lambda: IPv6(src=sa["inner_src"], dst=sa["inner_dst"], tc=0xB8, fl=0x12345)
    pkts = [
        ("icmpv6-echo-empty", ip() / ICMPv6EchoRequest(id=1, seq=1)),
        ("icmpv6-echo-56", ip() / ICMPv6EchoRequest(id=1, seq=2, data=bytes(range(56)))),
        ("tcp-syn-23-25", ip() / TCP(sport=23, dport=25, flags="S", seq=1000)),
        ("tcp-data", ip() / TCP(sport=23, dport=25, flags="PA") / (b"mail from:<a@b>\r\n" * 3)),
    ]
    for n in (0, 1, 2, 5, 6, 7, 8, 13, 14, 15, 16, 17, 64, 100, 1400):
        pkts.append((f"udp-{n}", ip() / UDP(sport=5000, dport=53) / bytes((i * 7) & 0xFF for i in range(n))))
    pkts += [
        ("hbh-udp", ip() / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / UDP(sport=1, dport=2) / b"hop"),
        (
            "routing-destopt-tcp",
            ip()
            / IPv6ExtHdrRouting(addresses=["2001:db8:ffff::1"], segleft=0)
            / IPv6ExtHdrDestOpt()
            / TCP(sport=23, dport=25),
        ),
        ("destopt-udp", ip() / IPv6ExtHdrDestOpt() / UDP(sport=7, dport=9) / b"dest options"),
        ("atomic-fragment-udp", ip() / IPv6ExtHdrFragment(offset=0, m=0, id=7) / UDP(sport=7, dport=9) / b"atomic"),
    ]
    return pkts


def encrypt(req):
    sa = security_association(req["sa"])
    out = []
    for name, pkt in plaintexts(req["sa"]):
        plain = IPv6(raw(pkt))  # resolve lengths and checksums once
        esp = sa.encrypt(plain)
        out.append({"name": name, "plain": raw(plain).hex(), "esp": raw(esp).hex(), "seq": esp[ESP].seq})
    return {"ok": True, "packets": out}


def check_padding(sa, esp_layer):
    """Decrypts again, keeping the trailer scapy strips, to check RFC 4303 §2.4 padding."""
    algo = sa.crypt_algo
    # An AEAD's ICV is its own (AES-GCM: 16 bytes), not the (NULL) integrity algorithm's.
    icv_size = algo.icv_size or sa.auth_algo.icv_size
    plain = algo.decrypt(sa, esp_layer, sa.crypt_key, icv_size)
    want = bytes(range(1, plain.padlen + 1))
    if plain.padding != want:
        return f"padding {plain.padding.hex()} is not 1, 2, 3, ... ({want.hex()})"
    align = max(algo.block_size, 4)
    if (len(plain.data) + plain.padlen + 2) % align:
        return f"payload + padding + 2 is not a multiple of {align}"
    if plain.padlen >= align:
        return f"padding {plain.padlen} is longer than needed for alignment {align}"
    return None


def decrypt(req):
    cfg = req["sa"]
    sa = security_association(cfg)
    results = []
    last_seq = 0
    for item in req["packets"]:
        result = {"ok": False, "error": None, "plain": None, "seq": None, "padlen": None}
        results.append(result)
        try:
            pkt = IPv6(bytes.fromhex(item["esp"]))
            if ESP not in pkt:
                result["error"] = "no ESP header"
                continue
            esp_layer = pkt[ESP]
            result["seq"] = esp_layer.seq
            if esp_layer.spi != cfg["spi"]:
                result["error"] = f"spi {esp_layer.spi:#x}"
                continue
            expected_seq, last_seq = last_seq + 1, esp_layer.seq
            if esp_layer.seq != expected_seq:
                result["error"] = f"sequence {esp_layer.seq}, expected {expected_seq}"
                continue
            if cfg["mode"] == "tunnel":
                if (pkt.src, pkt.dst, pkt.nh, pkt.hlim) != (cfg["tunnel_src"], cfg["tunnel_dst"], 50, 64):
                    result["error"] = f"outer header {pkt.src} -> {pkt.dst} nh {pkt.nh} hlim {pkt.hlim}"
                    continue
            # Copy before decrypting: scapy's decrypt rewrites the layers it is given.
            dec = sa.decrypt(pkt.copy())  # verifies the ICV first, raises on mismatch
            padding_error = check_padding(sa, IPv6(bytes.fromhex(item["esp"]))[ESP])
            if padding_error:
                result["error"] = padding_error
                continue
            result["plain"] = raw(dec).hex()
            result["ok"] = True
        except IPSecIntegrityError as err:
            result["error"] = f"integrity: {err}"
        except Exception as err:  # any other failure is reported, not fatal to the batch
            result["error"] = f"{type(err).__name__}: {err}"
    return {"ok": True, "results": results}


def handle(req):
    op = req.get("op")
    if op == "probe":
        answer = {"ok": True, "scapy": scapy.VERSION, "crypt": sorted(CRYPT_ALGOS), "auth": sorted(AUTH_ALGOS)}
    elif op == "encrypt":
        answer = encrypt(req)
    elif op == "decrypt":
        answer = decrypt(req)
    else:
        answer = {"ok": False, "error": f"unknown op {op!r}"}
    return answer


def main():
    req = json.load(sys.stdin)
    if req.get("op") == "batch":
        answer = {"ok": True, "answers": [handle(r) for r in req["requests"]]}
    else:
        answer = handle(req)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
