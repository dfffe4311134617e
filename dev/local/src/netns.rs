//! A network with a path-MTU blackhole, built from Linux network namespaces, for the tests of
//! `elasticsearch.path_mtu` and `ES_TCP_MSS`:
//!
//! ```text
//!                    ┌── narrow (MTU 1400) ──┐
//!  client ── router1 ┤                       ├ router2 ── server
//!                    └── wide   (MTU 1500) ──┘
//! ```
//!
//! The client and the server keep MTU 1500, so each believes 1460-byte segments fit. Each
//! direction is routed over the narrow link or the wide one, and both routers drop the ICMP
//! "fragmentation needed" they would send (as a firewall that drops ICMP does): a direction over
//! the narrow link is a blackhole, one over the wide link is not, and neither end ever learns a
//! smaller path MTU that would hide the other. Addresses are in 198.18.0.0/15 (RFC 2544's
//! benchmarking range), one /24 per topology; everything is removed when it is dropped.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), `ip` and `iptables`; [`Topology::build`] says
//! why not where they are missing, and the tests skip with that message.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Which way full-size packets are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blackhole {
    /// Client to server: that direction is routed over the narrow link.
    TowardServer,
    /// Server to client.
    TowardClient,
    Both,
    /// Neither: both directions over the wide link (tests of other faults).
    Neither,
}

/// The MTU of the narrow link between the routers: segments of at most 1360 bytes pass.
pub const NARROW_MTU: u32 = 1400;

pub struct Topology {
    /// The namespaces' names: client, router1, router2, server.
    names: [String; 4],
    pub client_addr: Ipv4Addr,
    pub server_addr: Ipv4Addr,
}

impl Topology {
    /// Builds topology `id` (0–255, one per concurrent test). `Err` says why it cannot be built
    /// here (not root, a tool missing).
    pub fn build(id: u8, blackhole: Blackhole) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root (CI runs as root)".into());
        }
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!(
                    "`{tool}` is missing (apt-get install iproute2 iptables; `make test` installs them as root)"
                ));
            }
        }
        let pid = std::process::id();
        let names = ["c", "r1", "r2", "s"].map(|n| format!("sakuin-{pid}-{id}-{n}"));
        let topology = Self {
            client_addr: Ipv4Addr::new(198, 18, id, 1),
            server_addr: Ipv4Addr::new(198, 18, id, 10),
            names,
        };
        // From here on, Drop removes whatever was made.
        topology.wire(id, blackhole)?;
        Ok(topology)
    }

    fn wire(&self, id: u8, blackhole: Blackhole) -> Result<(), String> {
        self.link(id)?;
        self.route(id, blackhole)
    }

    /// The namespaces, the veth pairs between them, their addresses and the narrow link's MTU.
    fn link(&self, id: u8) -> Result<(), String> {
        let [c, r1, r2, s] = &self.names;
        let net = |host: u8| format!("198.18.{id}.{host}");
        for ns in &self.names {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let links = [
            (c, "c0", r1, "r1a"),
            (r1, "r1n", r2, "r2n"),
            (r2, "r2b", s, "s0"),
            (r1, "r1w", r2, "r2w"),
        ];
        for (a, a_if, b, b_if) in links {
            ip(&[
                "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
            ])?;
        }
        // /30s: client side .0, narrow link .4, server side .8, wide link .12.
        for (ns, dev, host) in [
            (c, "c0", 1),
            (r1, "r1a", 2),
            (r1, "r1n", 5),
            (r2, "r2n", 6),
            (r2, "r2b", 9),
            (s, "s0", 10),
            (r1, "r1w", 13),
            (r2, "r2w", 14),
        ] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/30", net(host)),
                "dev",
                dev,
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        let mtu = NARROW_MTU.to_string();
        ip(&["-n", r1, "link", "set", "r1n", "mtu", &mtu])?;
        ip(&["-n", r2, "link", "set", "r2n", "mtu", &mtu])
    }

    /// Each direction over the narrow link or the wide one; forwarding on, and the ICMP
    /// "fragmentation needed" the routers would send dropped.
    fn route(&self, id: u8, blackhole: Blackhole) -> Result<(), String> {
        let [c, r1, r2, s] = &self.names;
        let net = |host: u8| format!("198.18.{id}.{host}");
        ip(&["-n", c, "route", "add", "default", "via", &net(2)])?;
        ip(&["-n", s, "route", "add", "default", "via", &net(9)])?;
        let (to_server, to_client) = match blackhole {
            Blackhole::TowardServer => (net(6), net(13)),
            Blackhole::TowardClient => (net(14), net(5)),
            Blackhole::Both => (net(6), net(5)),
            Blackhole::Neither => (net(14), net(13)),
        };
        ip(&[
            "-n",
            r1,
            "route",
            "add",
            &format!("{}/30", net(8)),
            "via",
            &to_server,
        ])?;
        ip(&[
            "-n",
            r2,
            "route",
            "add",
            &format!("{}/30", net(0)),
            "via",
            &to_client,
        ])?;
        for router in [r1, r2] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    router,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
            )?;
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    router,
                    "iptables",
                    "-A",
                    "OUTPUT",
                    "-p",
                    "icmp",
                    "--icmp-type",
                    "fragmentation-needed",
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    pub fn client_ns(&self) -> &str {
        &self.names[0]
    }

    /// Another address of the server, `198.18.<id>.<host>` (outside the /30s, so `host` ≥ 16),
    /// routed to it by both routers; with `dropped`, the server's firewall drops every packet
    /// to it (a dead address behind a name: connects time out).
    pub fn add_server_address(&self, host: u8, dropped: bool) -> Result<Ipv4Addr, String> {
        let [_, r1, r2, s] = &self.names;
        let [a, b, id, _] = self.server_addr.octets();
        let addr = Ipv4Addr::new(a, b, id, host);
        let router = |last: u8| Ipv4Addr::new(a, b, id, last).to_string();
        ip(&["-n", s, "addr", "add", &format!("{addr}/32"), "dev", "s0"])?;
        // The server-bound route of router1 (over either link) already leads to router2.
        let via = self.server_route_via(r1)?;
        ip(&["-n", r1, "route", "add", &format!("{addr}/32"), "via", &via])?;
        ip(&[
            "-n",
            r2,
            "route",
            "add",
            &format!("{addr}/32"),
            "via",
            &router(10),
        ])?;
        if dropped {
            let target = addr.to_string();
            let rule = ["-A", "INPUT", "-d", target.as_str(), "-j", "DROP"];
            let mut args = vec!["netns", "exec", s.as_str(), "iptables"];
            args.extend(rule);
            run("ip", &args)?;
        }
        Ok(addr)
    }

    /// Limits what router1 sends toward the server (over the wide link, as `Blackhole::
    /// TowardClient` routes it) to `kbit` kilobits a second: a token bucket (`tc ... tbf`),
    /// as a slow VPN or hosted connection does. `Err` says why when the kernel lacks it.
    pub fn limit_toward_server(&self, kbit: u32) -> Result<(), String> {
        let r1 = self.names[1].as_str();
        let rate = format!("{kbit}kbit");
        run(
            "ip",
            &[
                "netns", "exec", r1, "tc", "qdisc", "add", "dev", "r1w", "root", "tbf", "rate",
                &rate, "burst", "16kb", "latency", "2000ms",
            ],
        )
    }

    /// Router1 forgets a TCP connection idle for `secs` seconds and drops its later packets, as
    /// a stateful firewall, a NAT or a VPN concentrator with an idle timeout does (conntrack's
    /// timeout for established connections; packets of connections it does not know, other
    /// than a SYN, dropped).
    pub fn forget_idle_connections(&self, secs: u32) -> Result<(), String> {
        let r1 = self.names[1].as_str();
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", r1];
            all.extend(args);
            run("ip", &all)
        };
        exec(&[
            "iptables",
            "-A",
            "FORWARD",
            "-p",
            "tcp",
            "-m",
            "conntrack",
            "--ctstate",
            "INVALID",
            "-j",
            "DROP",
        ])?;
        exec(&[
            "iptables",
            "-A",
            "FORWARD",
            "-p",
            "tcp",
            "!",
            "--syn",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "DROP",
        ])?;
        // The rules load conntrack into the namespace; its settings exist from then on.
        exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"])?;
        let timeout = format!("net.netfilter.nf_conntrack_tcp_timeout_established={secs}");
        exec(&["sysctl", "-qw", &timeout])
    }

    /// The next hop `router` uses toward the server's /30.
    fn server_route_via(&self, router: &str) -> Result<String, String> {
        let [a, b, id, _] = self.server_addr.octets();
        let net = format!("{a}.{b}.{id}.8/30");
        let out = Command::new("ip")
            .args(["-n", router, "route", "show", &net])
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "via")
            .nth(1)
            .map(str::to_owned)
            .ok_or_else(|| format!("no route to {net} in {router}: {text}"))
    }

    /// What `name` resolves to inside the client's namespace: `ip netns exec` mounts
    /// `/etc/netns/<namespace>/hosts` over `/etc/hosts`.
    pub fn client_hosts(&self, name: &str, addrs: &[Ipv4Addr]) -> Result<(), String> {
        let dir = format!("/etc/netns/{}", self.client_ns());
        std::fs::create_dir_all(&dir).map_err(|e| format!("{dir}: {e}"))?;
        let lines: String = addrs.iter().map(|a| format!("{a} {name}\n")).collect();
        let hosts = format!("127.0.0.1 localhost\n{lines}");
        std::fs::write(format!("{dir}/hosts"), hosts).map_err(|e| format!("{dir}/hosts: {e}"))
    }

    pub fn server_ns(&self) -> &str {
        &self.names[3]
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.client_ns()));
        // Deleting a namespace deletes its ends of the veth pairs, and so the pairs.
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `f` on a new thread inside network namespace `ns`: every socket it creates belongs to
/// that namespace, wherever it is used afterwards.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let file = File::open(format!("/var/run/netns/{ns}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a namespace file descriptor changes only this thread's namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other("the thread in the namespace panicked"))?
}
