//! A retransmission storm and a SYN flood with the daemon attached. Both
//! are counted in the kernel (per-CPU maps read at scrape time), so neither
//! may reach the ring buffer: the row gives the ring buffer's events during
//! the storm against the retransmissions the kernel made, whether the
//! daemon's counters equal the kernel's (`RetransSegs` of both namespaces,
//! which counts SYN-ACKs too), the retransmission programs' kernel time per
//! run, and the daemon's CPU time. The churn never retransmits, so these
//! programs do not run during it: the churn rows are the churn ratio with
//! them attached.
//!
//! Two namespaces joined by a veth pair: connections from the client whose
//! ACKs the server blackholes (the client retransmits its data, every RTO),
//! and SYNs to the server from addresses nobody has (it retransmits its
//! SYN-ACKs, after 1 s, 3 s, 7 s; they go to the client's namespace, which
//! does not forward them).

use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};
use testkit::{
    netns::{NetNs, ns_inode},
    packet, prom,
};

use super::{
    Plan, measure,
    procs::Daemon,
    report::{Row, row, thousands},
    results::Results,
    stop,
    sysctl::Sysctls,
};

/// Connections whose data is never acknowledged.
const STALLED: usize = 400;
/// SYNs from addresses nobody has, each a half-open connection.
const SYNS: u16 = 2_000;
/// How long the storm is watched.
const WINDOW: Duration = Duration::from_secs(10);
/// The retransmission programs' names as the kernel keeps them (15
/// characters: both read `tcp_retransmit_`).
const PROGRAMS: &str = "tcp_retransmit_";
/// The families the daemon exports retransmissions in.
const FAMILIES: [&str; 3] = [
    "tcpstate_retransmits_total",
    "tcpstate_listener_retransmits_total",
    "tcpstate_synack_retransmits_total",
];

/// What the storm cost.
#[derive(Debug, Default, Clone)]
pub struct Storm {
    pub seconds: f64,
    /// Retransmissions the kernel made in the window (`RetransSegs`), and
    /// of them the SYN-ACKs (`TCPSynRetrans`).
    pub kernel: u64,
    pub synacks: u64,
    /// What the daemon exported of them in the window; the kernel's count
    /// read just before and just after that scrape bound it.
    pub exported: u64,
    pub kernel_after_scrape: u64,
    /// Events that came through the ring buffer in the window.
    pub events: u64,
    /// The retransmission programs' runs and kernel time in the window.
    pub runs: u64,
    pub run_time_ns: u64,
    pub daemon_cpu_s: f64,
}

impl Storm {
    /// Whether the daemon's counters equal the kernel's.
    pub fn exact(&self) -> bool {
        (self.kernel..=self.kernel_after_scrape).contains(&self.exported)
    }
}

struct Net {
    client: NetNs,
    server: NetNs,
    inodes: [u32; 2],
}

impl Net {
    /// The kernel's retransmissions in both namespaces, and the SYN-ACKs.
    fn kernel(&self) -> (u64, u64) {
        let segs =
            self.client.tcp_counters()["RetransSegs"] + self.server.tcp_counters()["RetransSegs"];
        (segs, self.server.tcp_ext_counters()["TCPSynRetrans"])
    }

    /// What the daemon exported for both namespaces.
    fn exported(&self, metrics: &str) -> u64 {
        let ours = |labels: &str| {
            labels
                .split(',')
                .any(|l| self.inodes.iter().any(|i| l == format!("netns={i}")))
        };
        FAMILIES
            .iter()
            .flat_map(|f| prom::samples(metrics, f))
            .filter(|(labels, _)| ours(labels))
            .map(|(_, v)| v as u64)
            .sum()
    }
}

/// Server-side sockets and the client's, kept open for the window.
struct Load {
    _listener: TcpListener,
    _accepted: Vec<TcpStream>,
    streams: Vec<TcpStream>,
    flood_listener: Socket,
}

fn set_up(net: &Net) -> anyhow::Result<Load> {
    let (client, server) = (&net.client, &net.server);
    // The flood's SYN-ACKs go to the client's namespace, which drops them.
    server.exec(&["ip", "route", "add", "10.98.1.0/24", "via", "10.98.0.1"]);
    server.exec(&["sysctl", "-qw", "net.ipv4.tcp_max_syn_backlog=4096"]);
    server.exec(&["sysctl", "-qw", "net.core.somaxconn=4096"]);
    let listener = server.run_inside(|| listen("10.98.0.2:0").map(TcpListener::from));
    let listener = listener.context("listening in the server's namespace")?;
    let to = listener.local_addr()?;
    let streams = client.run_inside(move || {
        (0..STALLED)
            .map(|_| TcpStream::connect(to))
            .collect::<Result<Vec<_>, _>>()
    });
    let streams = streams.context("connecting from the client's namespace")?;
    let accepted = (0..STALLED)
        .map(|_| listener.accept().map(|(s, _)| s))
        .collect::<Result<Vec<_>, _>>()
        .context("accepting")?;
    let flood_listener = server.run_inside(|| listen("10.98.0.2:0"));
    let flood_listener = flood_listener.context("the flood's listener")?;
    Ok(Load {
        _listener: listener,
        _accepted: accepted,
        streams,
        flood_listener,
    })
}

/// A listener at `at` with room for every connection of the storm.
fn listen(at: &'static str) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let at: SocketAddr = at.parse().map_err(std::io::Error::other)?;
    s.bind(&at.into())?;
    s.listen(4096)?;
    Ok(s)
}

/// Starts both: the server's ACKs blackholed and data written on every
/// connection; SYNs from addresses nobody has.
fn start(net: &Net, load: &mut Load) -> anyhow::Result<()> {
    net.server
        .exec(&["ip", "route", "add", "blackhole", "10.98.0.1/32"]);
    for s in &mut load.streams {
        s.write_all(&[0u8; 1000]).context("writing")?;
    }
    let SocketAddr::V4(to) = load
        .flood_listener
        .local_addr()?
        .as_socket()
        .context("the flood listener's address")?
    else {
        anyhow::bail!("not IPv4");
    };
    let raw = net.client.run_inside(|| {
        Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
    });
    let raw = raw.context("a raw socket (root)")?;
    let dst = SocketAddr::V4(SocketAddrV4::new(*to.ip(), 0));
    for i in 0..SYNS {
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 98, 1, 1 + (i % 250) as u8), 1024 + i);
        raw.send_to(&packet::tcp_syn(from, to), &dst.into())
            .context("sending a SYN")?;
    }
    Ok(())
}

/// Measures the storm and keeps it in `results`.
pub fn run(plan: &Plan, sysctls: &mut Sysctls, results: &mut Results) -> anyhow::Result<()> {
    eprintln!("bench: retransmission storm and SYN flood");
    let s = measure(plan, sysctls)?;
    eprintln!(
        "bench:   {} retransmissions ({} SYN-ACKs), {} ring-buffer events, daemon counted {}",
        s.kernel, s.synacks, s.events, s.exported
    );
    results.storm = Some(s);
    Ok(())
}

fn measure(plan: &Plan, sysctls: &mut Sysctls) -> anyhow::Result<Storm> {
    let (client, server) = (NetNs::new("storm-c"), NetNs::new("storm-s"));
    client.link_to(&server, "bst", "10.98.0.1", "10.98.0.2");
    let inodes = [ns_inode(&client.path()), ns_inode(&server.path())];
    let net = Net {
        client,
        server,
        inodes,
    };
    sysctls.set("kernel.bpf_stats_enabled", "1")?;
    let daemon = Daemon::start(
        &plan.tracer,
        &["--netns-label".into(), "true".into()],
        &plan.log("daemon"),
    )?;
    let mut load = set_up(&net)?;
    stop::sleep(Duration::from_secs(1))?;
    let events = |text: &str| Daemon::total(text, "tcpstate_events_total");
    let before_text = daemon.metrics()?;
    let (kernel_before, synacks_before) = net.kernel();
    let cpu_before = measure::cpu_seconds(daemon.pid())?;
    let progs_before = measure::prog_stats_all(daemon.pid(), PROGRAMS)?;
    let started = Instant::now();
    start(&net, &mut load)?;
    stop::sleep(WINDOW)?;
    let (kernel_mid, synacks) = net.kernel();
    let after_text = daemon.metrics()?;
    let (kernel_after, _) = net.kernel();
    let seconds = started.elapsed().as_secs_f64();
    let progs = measure::prog_stats_all(daemon.pid(), PROGRAMS)?;
    let storm = Storm {
        seconds,
        kernel: kernel_mid - kernel_before,
        synacks: synacks - synacks_before,
        exported: net
            .exported(&after_text)
            .saturating_sub(net.exported(&before_text)),
        kernel_after_scrape: kernel_after - kernel_before,
        events: (events(&after_text)? - events(&before_text)?) as u64,
        runs: progs.run_cnt - progs_before.run_cnt,
        run_time_ns: progs.run_time_ns - progs_before.run_time_ns,
        daemon_cpu_s: measure::cpu_seconds(daemon.pid())? - cpu_before,
    };
    daemon.stop()?;
    drop(load);
    Ok(storm)
}

impl Results {
    /// The storm, against the ask: no flood of the ring buffer,
    /// and counts that equal the kernel's.
    pub(crate) fn storm_row(&self) -> Option<Row> {
        let s = self.storm.as_ref()?;
        let per_thousand = s.events as f64 * 1000.0 / s.kernel.max(1) as f64;
        let ns = s.run_time_ns as f64 / s.runs.max(1) as f64;
        Some(row(
            format!("retransmission storm and SYN flood ({:.0} s)", s.seconds),
            format!(
                "{} retransmissions ({} SYN-ACKs): {} ring-buffer events ({per_thousand:.1} per 1000), counted {} (daemon {}), {ns:.0} ns per program run, daemon CPU {:.3} s",
                thousands(s.kernel as f64),
                thousands(s.synacks as f64),
                thousands(s.events as f64),
                if s.exact() { "exactly" } else { "INEXACTLY" },
                thousands(s.exported as f64),
                s.daemon_cpu_s,
            ),
            "< 10 events per 1000 retransmissions; exact",
            Some(per_thousand < 10.0 && s.exact()),
        ))
    }
}
