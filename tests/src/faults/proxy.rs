//! A userspace TCP fault proxy with toxiproxy's toxics: latency, bandwidth, slow_close,
//! timeout, reset_peer, slicer and limit_data.
//!
//! Hand-written on purpose: these machines have no kernel netem (no qdisc to add latency or
//! loss) and no toxiproxy binary can be installed, so faults between the server and its
//! upstream are injected here, in-process, on loopback sockets. The semantics follow
//! toxiproxy's documentation; toxics can be replaced at any time ([`FaultProxy::set_toxics`])
//! and apply to data read after the change, while connection-level toxics (timeout,
//! reset_peer) arm when a connection opens.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Bytes read from one side at a time.
const CHUNK: usize = 16 * 1024;

/// One toxic, as in toxiproxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toxic {
    /// Delays each chunk by `latency` ± `jitter`.
    Latency {
        /// Added delay.
        latency: Duration,
        /// Uniform spread around `latency`.
        jitter: Duration,
    },
    /// Limits the rate to `bytes_per_sec`.
    Bandwidth {
        /// Bytes per second.
        bytes_per_sec: u64,
    },
    /// Delays the close that follows the source's EOF by `delay`.
    SlowClose {
        /// How long the close is held back.
        delay: Duration,
    },
    /// Drops all data; closes the connection after `after` (never when zero).
    Timeout {
        /// Time from the connection's start to the close.
        after: Duration,
    },
    /// Resets the connection (RST to the client) `after` it opens.
    ResetPeer {
        /// Time from the connection's start to the reset.
        after: Duration,
    },
    /// Cuts each chunk into slices of `average_size` ± `size_variation` bytes, `delay` apart.
    Slicer {
        /// Mean slice size in bytes.
        average_size: usize,
        /// Uniform spread of the slice size.
        size_variation: usize,
        /// Pause between slices.
        delay: Duration,
    },
    /// Closes the connection once `bytes` have gone through in this direction.
    LimitData {
        /// Bytes allowed through.
        bytes: u64,
    },
}

/// Which way the data a toxic applies to flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to target.
    Upstream,
    /// Target to client.
    Downstream,
}

/// A toxic and the direction it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToxicSpec {
    /// The toxic.
    pub toxic: Toxic,
    /// Where it applies.
    pub direction: Direction,
}

impl ToxicSpec {
    /// `toxic` on data flowing from the target to the client.
    pub fn downstream(toxic: Toxic) -> Self {
        Self {
            toxic,
            direction: Direction::Downstream,
        }
    }

    /// `toxic` on data flowing from the client to the target.
    pub fn upstream(toxic: Toxic) -> Self {
        Self {
            toxic,
            direction: Direction::Upstream,
        }
    }
}

/// The proxy; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    toxics: Mutex<Arc<[ToxicSpec]>>,
    connections: AtomicU64,
    seed: u64,
}

impl Shared {
    fn toxics(&self, direction: Direction) -> Vec<Toxic> {
        self.toxics
            .lock()
            .iter()
            .filter(|spec| spec.direction == direction)
            .map(|spec| spec.toxic)
            .collect()
    }
}

impl FaultProxy {
    /// Listens on `127.0.0.1:<free port>` and forwards each connection to `target`; the random
    /// choices of jitter and slice sizes derive from `seed` and the connection's number.
    pub async fn start(target: SocketAddr, seed: u64) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            toxics: Mutex::new(Arc::from(Vec::new())),
            connections: AtomicU64::new(0),
            seed,
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the active toxics.
    pub fn set_toxics(&self, toxics: Vec<ToxicSpec>) {
        *self.shared.toxics.lock() = Arc::from(toxics);
    }

    /// Removes every toxic.
    pub fn heal(&self) {
        self.set_toxics(Vec::new());
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    let number = shared.connections.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(proxy_connection(client, Arc::clone(&shared), number));
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// What the connection does when a connection-level toxic fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Close,
    Reset,
}

/// How one direction's pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PumpEnd {
    /// The source closed; the destination's write side was shut down.
    Eof,
    /// A limit_data toxic or an I/O error: the whole connection must go.
    Cut,
}

async fn proxy_connection(client: TcpStream, shared: Arc<Shared>, number: u64) {
    let Ok(target) = TcpStream::connect(shared.target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = target.set_nodelay(true);
    let at_open: Vec<ToxicSpec> = shared.toxics.lock().to_vec();
    let kill = kill_timer(&at_open);
    let mut up_rng = StdRng::seed_from_u64(shared.seed ^ number.wrapping_mul(2));
    let mut down_rng = StdRng::seed_from_u64(shared.seed ^ number.wrapping_mul(2).wrapping_add(1));
    let up = pump(&client, &target, Direction::Upstream, &shared, &mut up_rng);
    let down = pump(
        &target,
        &client,
        Direction::Downstream,
        &shared,
        &mut down_rng,
    );
    tokio::pin!(up, down, kill);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            end = &mut up, if !up_done => {
                up_done = true;
                if end == PumpEnd::Cut { break; }
            }
            end = &mut down, if !down_done => {
                down_done = true;
                if end == PumpEnd::Cut { break; }
            }
            kill = &mut kill => {
                if kill == Kill::Reset {
                    let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
                }
                break;
            }
        }
    }
}

/// Fires when the first timeout or reset_peer toxic active at open says so; never otherwise.
async fn kill_timer(toxics: &[ToxicSpec]) -> Kill {
    let next = toxics
        .iter()
        .filter_map(|spec| match spec.toxic {
            Toxic::Timeout { after } if !after.is_zero() => Some((after, Kill::Close)),
            Toxic::ResetPeer { after } => Some((after, Kill::Reset)),
            _ => None,
        })
        .min_by_key(|(after, _)| *after);
    match next {
        Some((after, kill)) => {
            tokio::time::sleep(after).await;
            kill
        }
        None => std::future::pending().await,
    }
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    direction: Direction,
    shared: &Shared,
    rng: &mut StdRng,
) -> PumpEnd {
    let mut buf = vec![0u8; CHUNK];
    let mut forwarded: u64 = 0;
    loop {
        let read = match read_ref(from, &mut buf).await {
            Ok(0) => {
                let toxics = shared.toxics(direction);
                for toxic in &toxics {
                    if let Toxic::SlowClose { delay } = toxic {
                        tokio::time::sleep(*delay).await;
                    }
                }
                let _ = SockRef::from(to).shutdown(std::net::Shutdown::Write);
                return PumpEnd::Eof;
            }
            Ok(read) => read,
            Err(_) => return PumpEnd::Cut,
        };
        let toxics = shared.toxics(direction);
        let mut data = &buf[..read];
        if toxics.iter().any(|t| matches!(t, Toxic::Timeout { .. })) {
            continue;
        }
        let mut cut_after = false;
        for toxic in &toxics {
            if let Toxic::LimitData { bytes } = toxic {
                let room = bytes.saturating_sub(forwarded);
                if room <= data.len() as u64 {
                    data = &data[..usize::try_from(room).unwrap_or(data.len())];
                    cut_after = true;
                }
            }
        }
        for toxic in &toxics {
            match *toxic {
                Toxic::Latency { latency, jitter } => {
                    tokio::time::sleep(jittered(latency, jitter, rng)).await;
                }
                Toxic::Bandwidth { bytes_per_sec } if bytes_per_sec > 0 => {
                    let secs = data.len() as f64 / bytes_per_sec as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                }
                _ => {}
            }
        }
        let slicer = toxics.iter().find_map(|toxic| match *toxic {
            Toxic::Slicer {
                average_size,
                size_variation,
                delay,
            } => Some((average_size.max(1), size_variation, delay)),
            _ => None,
        });
        let written = match slicer {
            Some((average, variation, delay)) => {
                let mut rest = data;
                let mut result = Ok(());
                while !rest.is_empty() && result.is_ok() {
                    let low = average.saturating_sub(variation).max(1);
                    let size = rng.random_range(low..=average + variation).min(rest.len());
                    result = write_all_ref(to, &rest[..size]).await;
                    rest = &rest[size..];
                    if !rest.is_empty() {
                        tokio::time::sleep(delay).await;
                    }
                }
                result
            }
            None => write_all_ref(to, data).await,
        };
        if written.is_err() || cut_after {
            return PumpEnd::Cut;
        }
        forwarded += data.len() as u64;
    }
}

fn jittered(latency: Duration, jitter: Duration, rng: &mut StdRng) -> Duration {
    if jitter.is_zero() {
        return latency;
    }
    let spread = rng.random_range(0..=2 * jitter.as_micros() as u64);
    (latency + Duration::from_micros(spread)).saturating_sub(jitter)
}

/// Reads through a shared reference, so both pumps and the reset can use one socket.
async fn read_ref(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

async fn write_all_ref(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(written) => buf = &buf[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    /// An echo server: what the proxy forwards comes straight back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut reader, mut writer) = conn.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        addr
    }

    async fn proxy_with(toxics: Vec<ToxicSpec>) -> FaultProxy {
        let proxy = FaultProxy::start(echo().await, 7).await.unwrap();
        proxy.set_toxics(toxics);
        proxy
    }

    async fn round_trip(proxy: &FaultProxy, payload: &[u8]) -> io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(proxy.addr()).await?;
        stream.write_all(payload).await?;
        let mut got = vec![0u8; payload.len()];
        stream.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn forwards_bytes_unchanged_without_toxics() {
        let proxy = proxy_with(Vec::new()).await;
        assert_eq!(round_trip(&proxy, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.connections(), 1);
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        let proxy = proxy_with(vec![ToxicSpec::downstream(Toxic::Latency {
            latency: Duration::from_millis(80),
            jitter: Duration::from_millis(10),
        })])
        .await;
        let started = Instant::now();
        round_trip(&proxy, b"ping").await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(70));
    }

    #[tokio::test]
    async fn bandwidth_limits_the_rate() {
        let proxy = proxy_with(vec![ToxicSpec::upstream(Toxic::Bandwidth {
            bytes_per_sec: 10_000,
        })])
        .await;
        let started = Instant::now();
        round_trip(&proxy, &[7u8; 2_000]).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(180));
    }

    #[tokio::test]
    async fn slicer_delivers_in_small_pieces() {
        let proxy = proxy_with(vec![ToxicSpec::downstream(Toxic::Slicer {
            average_size: 4,
            size_variation: 2,
            delay: Duration::from_millis(5),
        })])
        .await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(&[1u8; 64]).await.unwrap();
        let mut largest = 0;
        let mut total = 0;
        let mut buf = [0u8; 64];
        while total < 64 {
            let read = stream.read(&mut buf).await.unwrap();
            largest = largest.max(read);
            total += read;
        }
        assert!(largest <= 6, "a slice of {largest} bytes");
    }

    #[tokio::test]
    async fn limit_data_cuts_the_connection() {
        let proxy = proxy_with(vec![ToxicSpec::downstream(Toxic::LimitData { bytes: 3 })]).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(b"abcdef").await.unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got).await;
        assert_eq!(got, b"abc");
    }

    #[tokio::test]
    async fn timeout_swallows_data_then_closes() {
        let proxy = proxy_with(vec![ToxicSpec::upstream(Toxic::Timeout {
            after: Duration::from_millis(100),
        })])
        .await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(b"lost").await.unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got).await;
        assert!(got.is_empty(), "data got through a timeout toxic");
        assert!(started.elapsed() >= Duration::from_millis(80));
    }

    #[tokio::test]
    async fn reset_peer_sends_a_reset() {
        let proxy = proxy_with(vec![ToxicSpec::downstream(Toxic::ResetPeer {
            after: Duration::from_millis(20),
        })])
        .await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 8];
        let error = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn slow_close_holds_back_the_close() {
        let proxy = proxy_with(vec![ToxicSpec::downstream(Toxic::SlowClose {
            delay: Duration::from_millis(100),
        })])
        .await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(b"bye").await.unwrap();
        stream.shutdown().await.unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        assert!(started.elapsed() >= Duration::from_millis(80));
    }

    #[tokio::test]
    async fn heal_removes_the_toxics_for_new_data() {
        let proxy = proxy_with(vec![ToxicSpec::upstream(Toxic::Timeout {
            after: Duration::ZERO,
        })])
        .await;
        let blocked = tokio::time::timeout(Duration::from_millis(100), round_trip(&proxy, b"x"));
        assert!(blocked.await.is_err());
        proxy.heal();
        assert_eq!(round_trip(&proxy, b"y").await.unwrap(), b"y");
    }
}
