//! A randomized differential test: mixed workloads in two namespaces,
//! made before and after the daemon starts, and after each phase, at rest,
//! every state of each namespace equals `ss -N` and every leaked socket's
//! owner equals `ss -p`'s.
//!
//! CI runs the fixed seed; `TRACER_TEST_SEED=N` (or `cargo xtask test
//! --seed N`) explores others. A failure prints the seed and the actions.

use std::{
    io::Write as _,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    process::Command,
    thread,
    time::Duration,
};

use socket2::{Domain, SockRef, Socket, Type};
use testkit::{
    daemon::{Daemon, compared, gauges_in},
    http::Http,
    net::{Held, connect_pair, read_to_eof},
    netns::{NetNs, ns_inode},
    process::run,
    require_ebpf, ss, wait_until,
};

use super::owners::{PREFORK, Server, daemon_owners_in, ss_owners_in};
use crate::tracer;

const FIXED_SEED: u64 = 0x7ace_2026_1201;

/// splitmix64: small, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one namespace of the world holds.
struct Place {
    ns: NetNs,
    inode: u32,
    held: Vec<Held>,
    sockets: Vec<Socket>,
    /// A prefork server whose workers leak what they accept.
    _leaker: Server,
    leaker_port: u16,
}

/// The workload's actions; each runs inside a namespace.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Established pairs: IPv4, IPv6, or IPv4 to a dual-stack listener.
    Established(u8),
    /// The client closes first (its side keeps the timewait socket).
    ClientCloses,
    /// The server closes first.
    ServerCloses,
    /// SO_LINGER 0, from ESTABLISHED or after a half-close.
    Reset { half_closed: bool },
    /// A half-close held: FIN_WAIT2 and CLOSE_WAIT.
    HalfClose,
    /// A close with data unread (the kernel resets).
    UnreadData,
    /// A listener closed with children not yet accepted.
    ListenerClosedWithChildren,
    /// A full accept queue: further connects wait in SYN_SENT.
    FullAcceptQueue,
    /// A client that leaves CLOSE_WAIT behind in the leaky server.
    Leak,
}

/// One more than the actions: a leak comes twice as often as the others.
const ACTIONS: u64 = 11;

fn pick(rng: &mut Rng) -> Action {
    match rng.below(ACTIONS) {
        0 => Action::Established(rng.below(3) as u8),
        1 => Action::ClientCloses,
        2 => Action::ServerCloses,
        3 => Action::Reset { half_closed: false },
        4 => Action::Reset { half_closed: true },
        5 => Action::HalfClose,
        6 => Action::UnreadData,
        7 => Action::ListenerClosedWithChildren,
        8 => Action::FullAcceptQueue,
        _ => Action::Leak,
    }
}

fn linger_zero(stream: &TcpStream) {
    SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// Runs `action` inside the current thread's namespace; returns what must
/// stay open.
fn act(action: Action, leaker_port: u16) -> (Held, Vec<Socket>) {
    let mut held = Held::default();
    let mut sockets = Vec::new();
    let v4 = || TcpListener::bind("127.0.0.1:0").expect("bind v4");
    match action {
        Action::Established(kind) => {
            let listener = match kind {
                0 => v4(),
                _ => TcpListener::bind("[::]:0").expect("bind v6"),
            };
            let port = listener.local_addr().expect("addr").port();
            let to: SocketAddr = if kind == 1 {
                format!("[::1]:{port}")
            } else {
                format!("127.0.0.1:{port}")
            }
            .parse()
            .expect("address");
            let client = TcpStream::connect(to).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            held.streams.extend([client, server]);
            held.listeners.push(listener);
        }
        Action::ClientCloses | Action::ServerCloses => {
            let listener = v4();
            let (client, server) = connect_pair(&listener);
            let (first, mut second) = match action {
                Action::ClientCloses => (client, server),
                _ => (server, client),
            };
            drop(first);
            read_to_eof(&mut second);
        }
        Action::Reset { half_closed } => {
            let listener = v4();
            let (client, mut server) = connect_pair(&listener);
            if half_closed {
                client.shutdown(Shutdown::Write).expect("shutdown");
                read_to_eof(&mut server);
            }
            linger_zero(&client);
            drop(client);
            held.streams.push(server);
        }
        Action::HalfClose => {
            let listener = v4();
            let (client, mut server) = connect_pair(&listener);
            client.shutdown(Shutdown::Write).expect("shutdown");
            read_to_eof(&mut server);
            held.streams.extend([client, server]);
        }
        Action::UnreadData => {
            let listener = v4();
            let (mut client, server) = connect_pair(&listener);
            client.write_all(b"never read").expect("write");
            thread::sleep(Duration::from_millis(20));
            drop(server);
            held.streams.push(client);
        }
        Action::ListenerClosedWithChildren => {
            let listener = v4();
            let addr = listener.local_addr().expect("addr");
            let clients: Vec<TcpStream> = (0..2)
                .map(|_| TcpStream::connect(addr).expect("connect"))
                .collect();
            thread::sleep(Duration::from_millis(20));
            drop(listener);
            held.streams.extend(clients);
        }
        Action::FullAcceptQueue => {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
            socket.bind(&any.into()).expect("bind");
            socket.listen(0).expect("listen");
            let addr = socket
                .local_addr()
                .expect("addr")
                .as_socket()
                .expect("inet");
            for _ in 0..3 {
                let client = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
                client.set_nonblocking(true).expect("nonblocking");
                let _ = client.connect(&addr.into());
                sockets.push(client);
            }
            sockets.push(socket);
        }
        Action::Leak => {
            drop(TcpStream::connect(("127.0.0.1", leaker_port)).expect("connect"));
        }
    }
    (held, sockets)
}

impl Place {
    fn new(tag: &str) -> Place {
        let ns = NetNs::new(tag);
        let inode = ns_inode(&ns.path());
        let mut leaker = Server::start_in(Some(&ns.name), PREFORK, &[]);
        let leaker_port = leaker.port();
        Place {
            ns,
            inode,
            held: Vec::new(),
            sockets: Vec::new(),
            _leaker: leaker,
            leaker_port,
        }
    }

    fn run(&mut self, action: Action) {
        let port = self.leaker_port;
        let (held, sockets) = self.ns.run_inside(move || act(action, port));
        self.held.push(held);
        self.sockets.extend(sockets);
    }

    /// Waits until the daemon agrees with `ss -N` on every state and with
    /// `ss -p` on every leak's owner, here.
    fn agrees(&self, http: &mut Http, story: &str) {
        wait_until(
            &format!("{} to agree with ss ({story})", self.ns.name),
            Duration::from_secs(40),
            || {
                let ours = gauges_in(&http.get("/metrics").body, self.inode);
                let owners = ss_owners_in(Some(&self.ns.name), self.leaker_port);
                compared(&ours) == compared(&ss::counts_in(&self.ns.name))
                    && daemon_owners_in(http, Some(self.inode), self.leaker_port) == owners
            },
        );
    }
}

fn seed() -> u64 {
    std::env::var("TRACER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(FIXED_SEED)
}

/// One phase: `n` random actions, each in a random place.
fn phase(rng: &mut Rng, places: &mut [Place], n: usize, story: &mut Vec<String>) {
    for _ in 0..n {
        let at = rng.below(places.len() as u64) as usize;
        let action = pick(rng);
        story.push(format!("{action:?} in {}", places[at].ns.name));
        places[at].run(action);
    }
}

#[test]
fn random_workloads_agree_with_ss_after_every_phase() {
    require_ebpf!();
    let seed = seed();
    eprintln!("random workload seed {seed} (TRACER_TEST_SEED to change it)");
    let mut rng = Rng(seed);
    let mut places = [Place::new("rand-a"), Place::new("rand-b")];
    // tcp_tw_reuse where it matters: the kernel may end a TIME_WAIT socket
    // early for a new connect on its four-tuple.
    run(Command::new("ip").args([
        "netns",
        "exec",
        &places[1].ns.name,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_tw_reuse=1",
    ]));
    let mut story = Vec::new();
    // Sockets older than the daemon.
    phase(&mut rng, &mut places, 6, &mut story);
    let daemon = Daemon::start(
        tracer(),
        &[
            "--ring-buffer-size",
            "16KiB",
            "--reconcile-interval",
            "500ms",
            "--close-wait-threshold",
            "1s",
            "--netns-label",
            "true",
        ],
    );
    let mut http = daemon.client();
    let check = |http: &mut Http, places: &[Place], story: &[String]| {
        let told = format!("seed {seed}: {}", story.join("; "));
        for place in places {
            place.agrees(http, &told);
        }
    };
    check(&mut http, &places, &story);
    for round in 0..3 {
        phase(&mut rng, &mut places, 8, &mut story);
        story.push(format!("-- rest after phase {round}"));
        check(&mut http, &places, &story);
    }
    // A burst the daemon cannot drain: the ring buffer overflows, and the
    // full reconciliation must heal every namespace.
    daemon.signal(libc::SIGSTOP);
    for _ in 0..30 {
        places[0].run(Action::ClientCloses);
        places[1].run(Action::Established(0));
    }
    daemon.signal(libc::SIGCONT);
    story.push("-- burst".to_owned());
    check(&mut http, &places, &story);
    drop(places);
    assert!(daemon.stop().success());
}
