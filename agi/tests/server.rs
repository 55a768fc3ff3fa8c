//! The FastAGI listener on real loopback sockets: silent connections must not hold call slots,
//! starting connections are bounded in all and per peer, and unknown peers are refused unread.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use agi::server::{serve, ServerCaps};
use agi::session::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ENV: &[u8] = b"agi_network: yes\nagi_network_script: disa\nagi_channel: PJSIP/701-1\n\n";

const LIMITS: ServerCaps = ServerCaps {
    max_sessions: 2,
    session_deadline: Duration::from_secs(60),
    start_timeout: Duration::from_secs(30),
    max_starting: 64,
    max_starting_per_peer: 64,
};

/// A listener on 127.0.0.1 that admits 127.0.0.1 only; each started session's peer is sent on
/// the channel, and the session then stays open until shutdown.
struct Server {
    addr: SocketAddr,
    started: mpsc::UnboundedReceiver<SocketAddr>,
    stop: CancellationToken,
}

impl Server {
    async fn start(limits: ServerCaps) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, started) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let hold = stop.clone();
        tokio::spawn(serve(
            listener,
            limits,
            |ip: IpAddr| ip == IpAddr::from([127, 0, 0, 1]),
            move |s: Session<TcpStream>, peer| {
                let (tx, hold) = (tx.clone(), hold.clone());
                async move {
                    assert_eq!(s.env().script(), Some("disa"));
                    let _ = tx.send(peer);
                    hold.cancelled().await;
                }
            },
            stop.clone(),
        ));
        Server { addr, started, stop }
    }

    async fn next_started(&mut self) -> Option<SocketAddr> {
        tokio::time::timeout(Duration::from_secs(5), self.started.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Connects from `from` (any 127/8 address works on Linux loopback).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((from, 0))).unwrap();
    s.connect(to).await.unwrap()
}

/// Whether the server closes `s` within `within` (EOF or reset), sending nothing.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("the server sent {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => false,
    }
}

#[tokio::test]
async fn idle_connections_do_not_hold_session_slots() {
    let mut server = Server::start(LIMITS).await;
    // More silent connections than there are session slots.
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut asterisk = TcpStream::connect(server.addr).await.unwrap();
    asterisk.write_all(ENV).await.unwrap();
    assert!(server.next_started().await.is_some(), "the real call was served");
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_start_timeout() {
    let server = Server::start(ServerCaps {
        start_timeout: Duration::from_millis(300),
        ..LIMITS
    })
    .await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    // Well inside the session deadline (60 s): the start timeout closed it.
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn the_session_cap_still_holds_once_sessions_start() {
    let mut server = Server::start(LIMITS).await;
    let mut calls = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(server.addr).await.unwrap();
        c.write_all(ENV).await.unwrap();
        assert!(server.next_started().await.is_some());
        calls.push(c);
    }
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(ENV).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "a third session is refused"
    );
    assert!(server.started.try_recv().is_err());
}

#[tokio::test]
async fn starting_connections_are_capped_per_peer() {
    let mut server = Server::start(ServerCaps {
        max_starting_per_peer: 3,
        ..LIMITS
    })
    .await;
    // Three silent connections fill 127.0.0.1's share: a fourth from it is closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(5)).await,
        "per-peer cap"
    );
    // Once one of them goes, the address may start again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(ENV).await.unwrap();
    assert!(server.next_started().await.is_some(), "room again");
}

#[tokio::test]
async fn the_global_starting_cap_holds_across_peers() {
    // Admit all of 127/8 here, so several peers can share the global cap.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        ServerCaps {
            max_starting: 4,
            max_starting_per_peer: 2,
            ..LIMITS
        },
        |ip: IpAddr| ip.is_loopback(),
        |_s: Session<TcpStream>, _| async {},
        stop.clone(),
    ));
    let mut held = Vec::new();
    for from in [[127, 0, 0, 2], [127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 3]] {
        held.push(connect_from(from, addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for s in &mut held {
        assert!(
            !closed_within(s, Duration::from_millis(50)).await,
            "within the caps"
        );
    }
    let mut over = connect_from([127, 0, 0, 4], addr).await;
    assert!(
        closed_within(&mut over, Duration::from_secs(5)).await,
        "global cap"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_peer_not_admitted_is_closed_unread() {
    let mut server = Server::start(LIMITS).await;
    let mut stranger = connect_from([127, 0, 0, 9], server.addr).await;
    // Even a perfect environment block gets it nowhere.
    stranger.write_all(ENV).await.unwrap();
    assert!(closed_within(&mut stranger, Duration::from_secs(5)).await);
    assert!(server.next_started().await.is_none(), "no session for a stranger");
}
