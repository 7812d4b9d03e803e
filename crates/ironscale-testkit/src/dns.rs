//! DNS helpers for the lab (python3 stdlib, like the other helpers): a tiny authoritative server
//! that answers every name with one configured address and logs each query (so a test can tell
//! which resolver was asked), a query tool that sends real DNS queries to a given server from
//! inside a namespace, and name resolution through the namespace's own resolver configuration.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Context, Result};
use crate::lab::{Host, Proc};
use crate::util::{python3, run_ok, wait_until};

/// A query type the helpers know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsType {
    /// IPv4 address (1).
    A,
    /// IPv6 address (28).
    Aaaa,
}

impl DnsType {
    fn as_str(self) -> &'static str {
        match self {
            DnsType::A => "A",
            DnsType::Aaaa => "AAAA",
        }
    }
}

impl fmt::Display for DnsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to one query ([`Host::dns_query`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAnswer {
    /// No reply, and why (timeout, connection refused or closed); then `rcode` is
    /// meaningless and `addrs` empty.
    pub no_reply: Option<String>,
    /// The response code: 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED, ...
    pub rcode: u8,
    /// A/AAAA addresses in the answer section, in order.
    pub addrs: Vec<IpAddr>,
    /// CNAME targets in the answer section.
    pub cnames: Vec<String>,
}

impl DnsAnswer {
    /// A reply with NXDOMAIN.
    pub fn is_nxdomain(&self) -> bool {
        self.no_reply.is_none() && self.rcode == 3
    }

    /// A reply with NOERROR.
    pub fn is_noerror(&self) -> bool {
        self.no_reply.is_none() && self.rcode == 0
    }

    /// The response code's name (`NOERROR`, `NXDOMAIN`, ..., or `no reply (why)`).
    pub fn rcode_name(&self) -> String {
        if let Some(why) = &self.no_reply {
            return format!("no reply ({why})");
        }
        match self.rcode {
            0 => "NOERROR".into(),
            1 => "FORMERR".into(),
            2 => "SERVFAIL".into(),
            3 => "NXDOMAIN".into(),
            4 => "NOTIMP".into(),
            5 => "REFUSED".into(),
            n => format!("RCODE{n}"),
        }
    }
}

impl fmt::Display for DnsAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rcode_name())?;
        if !self.addrs.is_empty() {
            let a: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
            write!(f, " [{}]", a.join(", "))?;
        }
        if !self.cnames.is_empty() {
            write!(f, " cname [{}]", self.cnames.join(", "))?;
        }
        Ok(())
    }
}

/// A query a [`DnsServer`] received, from its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsQueryLog {
    /// The name asked for, lower case, without the trailing dot.
    pub name: String,
    /// The query type (`A`, `AAAA`, or the number).
    pub qtype: String,
    /// `udp` or `tcp`.
    pub proto: String,
    /// The source address of the query.
    pub from: String,
}

/// A small authoritative DNS server in a lab namespace ([`Host::dns_server`]).
pub struct DnsServer {
    proc: Proc,
    bind: Ipv4Addr,
    v4: Ipv4Addr,
    v6: Option<Ipv6Addr>,
}

impl DnsServer {
    /// The address it listens on (port 53, UDP and TCP).
    pub fn ip(&self) -> Ipv4Addr {
        self.bind
    }

    /// The IPv4 address it answers every A query with.
    pub fn answer_v4(&self) -> Ipv4Addr {
        self.v4
    }

    /// The IPv6 address it answers every AAAA query with, if any.
    pub fn answer_v6(&self) -> Option<Ipv6Addr> {
        self.v6
    }

    /// The process (log, stop).
    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// Every query received so far, oldest first.
    pub fn queries(&self) -> Vec<DnsQueryLog> {
        std::fs::read_to_string(self.proc.log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("query ")?.split_whitespace();
                Some(DnsQueryLog {
                    name: w.next()?.to_owned(),
                    qtype: w.next()?.to_owned(),
                    proto: w.next()?.to_owned(),
                    from: w.nth(1)?.to_owned(),
                })
            })
            .collect()
    }

    /// Whether it received a query for `name` (any type; case and trailing dot ignored).
    pub fn was_asked(&self, name: &str) -> bool {
        let want = name.trim_end_matches('.').to_ascii_lowercase();
        self.queries().iter().any(|q| q.name == want)
    }
}

impl fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsServer({} -> {})", self.bind, self.v4)
    }
}

impl Host {
    /// Starts a DNS server bound to `bind:53` (UDP and TCP) in this namespace. It answers
    /// every A query with `v4` and every AAAA query with `v6` (NOERROR without answers when
    /// `None`; other types too), authoritative, TTL 1, and logs each query as
    /// `query <name> <type> <udp|tcp> from <ip>` to its log. Waits until it answers.
    pub fn dns_server(
        &self,
        name: &str,
        bind: Ipv4Addr,
        v4: Ipv4Addr,
        v6: Option<Ipv6Addr>,
    ) -> Result<DnsServer> {
        let mut cmd = self.command(python3());
        cmd.args([
            "-u",
            "-c",
            DNS_SERVER_PY,
            &bind.to_string(),
            &v4.to_string(),
            &v6.map(|a| a.to_string()).unwrap_or_default(),
        ]);
        let proc = self.spawn(name, cmd)?;
        let probe = format!("ready.{name}.probe");
        wait_until(
            &format!("DNS server {name} on {bind}:53"),
            Duration::from_secs(15),
            Duration::from_millis(200),
            || {
                if !proc.is_running() {
                    fail!("DNS server {name} exited: {}", proc.tail(20));
                }
                let a = self.dns_query(IpAddr::V4(bind), &probe, DnsType::A)?;
                Ok((a.addrs == [IpAddr::V4(v4)]).then_some(()))
            },
        )?;
        Ok(DnsServer { proc, bind, v4, v6 })
    }

    /// Sends one DNS query for `name` (type `qtype`, recursion desired) over UDP to
    /// `server:53` from this namespace and waits up to 3 s for the reply.
    pub fn dns_query(&self, server: IpAddr, name: &str, qtype: DnsType) -> Result<DnsAnswer> {
        self.dns_query_with(server, name, qtype, false, Duration::from_secs(3))
    }

    /// [`Host::dns_query`] over TCP (`tcp`) or UDP, with a timeout.
    pub fn dns_query_with(
        &self,
        server: IpAddr,
        name: &str,
        qtype: DnsType,
        tcp: bool,
        timeout: Duration,
    ) -> Result<DnsAnswer> {
        let out = run_ok(self.command(python3()).args([
            "-c",
            DNS_QUERY_PY,
            &server.to_string(),
            name,
            qtype.as_str(),
            &format!("{:.3}", timeout.as_secs_f64()),
            if tcp { "tcp" } else { "udp" },
        ]))?;
        parse_answer(&out).with_context(|| format!("DNS query helper printed {out:?}"))
    }

    /// Resolves `name` the way programs in this namespace do (`getaddrinfo`: `/etc/hosts`,
    /// then the namespace's resolv.conf with its search domains). `Ok(Err(msg))` when the name
    /// does not resolve (`msg` says why, e.g. "Name or service not known").
    pub fn resolve_os(&self, name: &str) -> Result<std::result::Result<Vec<IpAddr>, String>> {
        let out = run_ok(self.command(python3()).args(["-c", RESOLVE_PY, name]))?;
        let v: Value = serde_json::from_str(out.trim())
            .with_context(|| format!("resolve helper printed {out:?}"))?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Ok(Err(e.to_owned()));
        }
        Ok(Ok(addrs_of(&v)))
    }

    /// Connects to `name:port` (the name resolved by the OS resolver, as any program would),
    /// sends `payload` plus a newline and returns the reply line.
    pub fn tcp_roundtrip_name(&self, name: &str, port: u16, payload: &str) -> Result<String> {
        let out = run_ok(self.command(python3()).args([
            "-c",
            crate::lab::CONNECT_PY,
            "",
            name,
            &port.to_string(),
            payload,
        ]))?;
        Ok(out.trim_end().to_owned())
    }
}

fn addrs_of(v: &Value) -> Vec<IpAddr> {
    v.get("addrs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn parse_answer(out: &str) -> Result<DnsAnswer> {
    let v: Value = serde_json::from_str(out.trim())?;
    if let Some(why) = v.get("no_reply") {
        return Ok(DnsAnswer {
            no_reply: Some(why.as_str().unwrap_or("?").to_owned()),
            rcode: 0,
            addrs: Vec::new(),
            cnames: Vec::new(),
        });
    }
    let rcode = v.get("rcode").and_then(Value::as_u64).context("no rcode")?;
    Ok(DnsAnswer {
        no_reply: None,
        rcode: u8::try_from(rcode).unwrap_or(u8::MAX),
        addrs: addrs_of(&v),
        cnames: v
            .get("cnames")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

const DNS_SERVER_PY: &str = r#"
import socket, struct, sys, threading
bind, v4, v6 = sys.argv[1], sys.argv[2], sys.argv[3]
TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 16: "TXT", 6: "SOA", 2: "NS", 65: "HTTPS"}

def qname(msg, off):
    labels = []
    while True:
        n = msg[off]
        if n == 0:
            return ".".join(labels), off + 1
        if n & 0xC0:
            raise ValueError("compressed question name")
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n

def answer(msg, proto, peer):
    qid, flags, qd = struct.unpack(">HHH", msg[:6])
    name, end = qname(msg, 12)
    qtype, qclass = struct.unpack(">HH", msg[end:end + 4])
    question = msg[12:end + 4]
    print("query %s %s %s from %s" % (name.lower().rstrip(".") or ".", TYPES.get(qtype, str(qtype)),
          proto, peer), flush=True)
    rrs = []
    if qclass == 1 and qtype == 1:
        rrs.append(struct.pack(">HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_pton(socket.AF_INET, v4))
    elif qclass == 1 and qtype == 28 and v6:
        rrs.append(struct.pack(">HHHIH", 0xC00C, 28, 1, 1, 16) + socket.inet_pton(socket.AF_INET6, v6))
    rflags = 0x8000 | (flags & 0x7900) | 0x0400 | 0x0080
    return struct.pack(">HHHHHH", qid, rflags, 1, len(rrs), 0, 0) + question + b"".join(rrs)

def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind, 53))
    while True:
        msg, peer = s.recvfrom(65535)
        try:
            s.sendto(answer(msg, "udp", peer[0]), peer)
        except Exception as e:
            print("error udp", peer, e, flush=True)

def tcp_conn(c, peer):
    c.settimeout(10)
    try:
        while True:
            hdr = c.recv(2)
            if len(hdr) < 2:
                return
            n = struct.unpack(">H", hdr)[0]
            msg = b""
            while len(msg) < n:
                chunk = c.recv(n - len(msg))
                if not chunk:
                    return
                msg += chunk
            r = answer(msg, "tcp", peer[0])
            c.sendall(struct.pack(">H", len(r)) + r)
    except Exception as e:
        print("error tcp", peer, e, flush=True)
    finally:
        c.close()

def tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, 53))
    s.listen(16)
    while True:
        c, peer = s.accept()
        threading.Thread(target=tcp_conn, args=(c, peer), daemon=True).start()

threading.Thread(target=tcp, daemon=True).start()
print("dns server on %s:53 answers A %s AAAA %s" % (bind, v4, v6 or "-"), flush=True)
udp()
"#;

const DNS_QUERY_PY: &str = r#"
import json, os, socket, struct, sys, time
server, name, qtype, timeout, proto = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
T = {"A": 1, "AAAA": 28}[qtype]
qid = struct.unpack(">H", os.urandom(2))[0]
wire = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".") if l) + b"\0"
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + struct.pack(">HH", T, 1)
fam = socket.AF_INET6 if ":" in server else socket.AF_INET

def rname(msg, off):
    labels, jumped, end = [], False, off
    for _ in range(128):
        n = msg[off]
        if n == 0:
            if not jumped:
                end = off + 1
            return ".".join(labels), end
        if n & 0xC0 == 0xC0:
            if not jumped:
                end = off + 2
            jumped = True
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    raise ValueError("name loop")

def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("connection closed")
        b += c
    return b

deadline = time.monotonic() + timeout
try:
    if proto == "udp":
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.sendto(q, (server, 53))
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            msg = s.recv(65535)
            if len(msg) >= 12 and struct.unpack(">H", msg[:2])[0] == qid:
                break
    else:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect((server, 53))
        s.sendall(struct.pack(">H", len(q)) + q)
        msg = recv_exact(s, struct.unpack(">H", recv_exact(s, 2))[0])
except (OSError, EOFError) as e:
    print(json.dumps({"no_reply": "%s: %s" % (type(e).__name__, e)}))
    sys.exit(0)

_, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
off = 12
for _ in range(qd):
    _, off = rname(msg, off)
    off += 4
addrs, cnames = [], []
for _ in range(an):
    _, off = rname(msg, off)
    t, c, ttl, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
    off += 10
    rd = msg[off:off + rdlen]
    if t == 1 and rdlen == 4:
        addrs.append(socket.inet_ntop(socket.AF_INET, rd))
    elif t == 28 and rdlen == 16:
        addrs.append(socket.inet_ntop(socket.AF_INET6, rd))
    elif t == 5:
        cnames.append(rname(msg, off)[0])
    off += rdlen
print(json.dumps({"rcode": flags & 0xF, "tc": bool(flags & 0x0200), "addrs": addrs, "cnames": cnames}))
"#;

const RESOLVE_PY: &str = r#"
import json, socket, sys
try:
    infos = socket.getaddrinfo(sys.argv[1], None, 0, socket.SOCK_STREAM)
except socket.gaierror as e:
    print(json.dumps({"error": "%s (%s)" % (e.strerror, e.errno)}))
    sys.exit(0)
out = []
for info in infos:
    a = info[4][0]
    if a not in out:
        out.append(a)
print(json.dumps({"addrs": out}))
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let a = parse_answer(r#"{"rcode": 3, "tc": false, "addrs": [], "cnames": []}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(a.is_nxdomain());
        assert_eq!(a.rcode_name(), "NXDOMAIN");
        let a = parse_answer(r#"{"no_reply": "TimeoutError: timed out"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(a.no_reply.is_some() && !a.is_nxdomain() && !a.is_noerror());
        assert_eq!(a.rcode_name(), "no reply (TimeoutError: timed out)");
        let a = parse_answer(r#"{"rcode": 0, "addrs": ["100.64.0.1", "fd7a:115c:a1e0::1"]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.to_string(), "NOERROR [100.64.0.1, fd7a:115c:a1e0::1]");
    }
}
