//! Loopback sockets in the states the tests count: listeners, established
//! pairs, CLOSE_WAIT, FIN_WAIT2 and TIME_WAIT.

use std::{
    io::Read as _,
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use socket2::{Domain, Socket, Type};

/// A socket bound to an ephemeral port but not yet listening: the test learns
/// its port (to filter on) before any transition happens.
pub fn bound_listener(ip: &str) -> (Socket, u16) {
    let addr = SocketAddr::new(ip.parse().expect("ip"), 0);
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, None).expect("socket");
    s.bind(&addr.into()).expect("bind");
    let port = s
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet")
        .port();
    (s, port)
}

/// A free loopback port (the kernel's pick, released at once).
pub fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// A connection to `listener`: (client, accepted server side).
pub fn connect_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

/// Reads until the peer's FIN (EOF) arrives.
pub fn read_to_eof(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) => panic!("waiting for EOF: {e}"),
        }
    }
}

/// True once the server has closed `stream` (EOF or reset).
pub fn closed_by_server(mut stream: &TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Sockets a test keeps open so their states persist.
#[derive(Default)]
pub struct Held {
    pub listeners: Vec<TcpListener>,
    pub streams: Vec<TcpStream>,
}

/// On `ip`: a listener, two established pairs, a server socket in
/// CLOSE_WAIT whose client closed (an orphaned FIN_WAIT2), a client
/// half-closed in FIN_WAIT2 with its server in CLOSE_WAIT, and a client
/// socket in TIME_WAIT.
pub fn make_states(ip: &str, held: &mut Held) {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let pair = connect_pair;
    for _ in 0..2 {
        let (c, s) = pair(&listener);
        held.streams.extend([c, s]);
    }
    let (c, mut s) = pair(&listener);
    drop(c);
    read_to_eof(&mut s);
    held.streams.push(s);

    let (c, mut s) = pair(&listener);
    c.shutdown(Shutdown::Write).expect("shutdown");
    read_to_eof(&mut s);
    held.streams.extend([c, s]);

    let (c, mut s) = pair(&listener);
    drop(c);
    read_to_eof(&mut s);
    drop(s);
    held.listeners.push(listener);
}

/// A listener of `server` at `ip` with a backlog of 1 that never accepts,
/// and six connects to it from `client`, given up after the first retry of
/// the SYNs it dropped: its queue full, its drop count (`ListenDrops`) up.
pub fn full_listener(
    server: &crate::netns::NetNs,
    ip: &str,
    client: &crate::netns::NetNs,
) -> (Socket, SocketAddr) {
    let at: SocketAddr = SocketAddr::new(ip.parse().expect("ip"), 0);
    let (listener, at) = server.run_inside(move || {
        let listener = Socket::new(Domain::for_address(at), Type::STREAM, None).expect("socket");
        listener.bind(&at.into()).expect("bind");
        listener.listen(1).expect("listen");
        let at = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("address");
        (listener, at)
    });
    client.run_inside(move || {
        let clients: Vec<Socket> = (0..6)
            .map(|_| {
                let c = Socket::new(Domain::for_address(at), Type::STREAM, None).expect("socket");
                c.set_nonblocking(true).expect("nonblocking");
                let _ = c.connect(&at.into());
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        drop(clients);
    });
    (listener, at)
}
