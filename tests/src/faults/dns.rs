//! A fake DNS server on loopback UDP and TCP (same port) that either answers every A query
//! with one address or swallows every query and never answers.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// How many times binding UDP and TCP on one free port is tried before giving up.
const BIND_ATTEMPTS: usize = 32;
const TYPE_A: u16 = 1;

/// The fake DNS server; stops when dropped.
#[derive(Debug)]
pub struct FakeDns {
    addr: SocketAddr,
    state: Arc<DnsState>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct DnsState {
    answer: Ipv4Addr,
    blackhole: AtomicBool,
    queries: AtomicU64,
}

impl FakeDns {
    /// Starts on `127.0.0.1:<free port>` (UDP and TCP), answering A queries with `answer`
    /// (TTL 0, so resolvers ask again each time) until [`FakeDns::blackhole`] is called.
    pub async fn start(answer: Ipv4Addr) -> io::Result<Self> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let state = Arc::new(DnsState {
            answer,
            blackhole: AtomicBool::new(false),
            queries: AtomicU64::new(0),
        });
        let tasks = vec![
            tokio::spawn(serve_udp(udp, Arc::clone(&state))),
            tokio::spawn(serve_tcp(tcp, Arc::clone(&state))),
        ];
        Ok(Self { addr, state, tasks })
    }

    /// The address to give a resolver (`--dns-server`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on every query is read and never answered (TCP connections are held open).
    pub fn blackhole(&self) {
        self.state.blackhole.store(true, Ordering::SeqCst);
    }

    /// From now on queries are answered again; queries already swallowed stay unanswered.
    pub fn heal(&self) {
        self.state.blackhole.store(false, Ordering::SeqCst);
    }

    /// Queries received so far, answered or not.
    pub fn queries(&self) -> u64 {
        self.state.queries.load(Ordering::Relaxed)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free port for UDP and TCP")))
}

async fn serve_udp(socket: UdpSocket, state: Arc<DnsState>) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        state.queries.fetch_add(1, Ordering::Relaxed);
        if state.blackhole.load(Ordering::SeqCst) {
            continue;
        }
        if let Some(reply) = answer(&buf[..len], state.answer) {
            // A lost reply is what a resolver must survive anyway.
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<DnsState>) {
    // Connections live in this set so that aborting the accept loop closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_tcp_connection(stream, Arc::clone(&state)));
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, state: Arc<DnsState>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        state.queries.fetch_add(1, Ordering::Relaxed);
        if state.blackhole.load(Ordering::SeqCst) {
            // Hold the connection and swallow whatever else comes.
            let mut sink = [0u8; 512];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        let Some(reply) = answer(&query, state.answer) else {
            return;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_u16(reply_len).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// The reply to one query: the question echoed, plus one A record for `address` when the
/// question is of type A (other types get an empty NOERROR answer). `None` for a malformed query.
pub fn answer(query: &[u8], address: Ipv4Addr) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    loop {
        let label = usize::from(*query.get(at)?);
        at += 1;
        if label == 0 {
            break;
        }
        if label & 0xC0 != 0 {
            return None;
        }
        at += label;
    }
    let question_end = at + 4;
    let question = query.get(12..question_end)?;
    let qtype = u16::from_be_bytes([query[at], query[at + 1]]);
    let answers: u16 = u16::from(qtype == TYPE_A);

    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[..2]);
    // QR=1, opcode from the query, RD copied, RA=1, RCODE=0.
    reply.push(0x80 | (query[2] & 0x79));
    reply.push(0x80);
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&answers.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if answers == 1 {
        reply.extend_from_slice(&[0xC0, 0x0C]);
        reply.extend_from_slice(&TYPE_A.to_be_bytes());
        reply.extend_from_slice(&1u16.to_be_bytes());
        reply.extend_from_slice(&0u32.to_be_bytes());
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&address.octets());
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut query = id.to_be_bytes().to_vec();
        query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            query.push(u8::try_from(label.len()).unwrap());
            query.extend_from_slice(label.as_bytes());
        }
        query.push(0);
        query.extend_from_slice(&qtype.to_be_bytes());
        query.extend_from_slice(&1u16.to_be_bytes());
        query
    }

    #[test]
    fn answers_a_queries_with_one_record_and_others_with_none() {
        let reply = answer(
            &query(0xBEEF, "upstream.chaos.test", 1),
            Ipv4Addr::LOCALHOST,
        )
        .unwrap();
        assert_eq!(&reply[..2], &[0xBE, 0xEF]);
        assert_eq!(reply[2] & 0x80, 0x80, "QR bit");
        assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), 1, "one answer");
        assert_eq!(&reply[reply.len() - 4..], &[127, 0, 0, 1]);

        let reply = answer(&query(7, "upstream.chaos.test", 28), Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!(
            u16::from_be_bytes([reply[6], reply[7]]),
            0,
            "no AAAA answer"
        );
        assert_eq!(answer(&[1, 2, 3], Ipv4Addr::LOCALHOST), None);
    }

    #[tokio::test]
    async fn answers_over_udp_and_tcp_then_swallows_when_blackholed() {
        let dns = FakeDns::start(Ipv4Addr::new(127, 0, 0, 7)).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&query(1, "a.test", 1), dns.addr())
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let (len, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[len - 4..len], &[127, 0, 0, 7]);

        let mut tcp = TcpStream::connect(dns.addr()).await.unwrap();
        let message = query(2, "a.test", 1);
        tcp.write_u16(u16::try_from(message.len()).unwrap())
            .await
            .unwrap();
        tcp.write_all(&message).await.unwrap();
        let len = tcp.read_u16().await.unwrap();
        let mut reply = vec![0u8; usize::from(len)];
        tcp.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[..2], &[0, 2]);

        dns.blackhole();
        client
            .send_to(&query(3, "a.test", 1), dns.addr())
            .await
            .unwrap();
        let silent = tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf));
        assert!(silent.await.is_err(), "a blackholed DNS server answered");
        assert_eq!(dns.queries(), 3);

        dns.heal();
        client
            .send_to(&query(4, "a.test", 1), dns.addr())
            .await
            .unwrap();
        let (len, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..2], &[0, 4]);
        assert!(len > 12);
    }
}
