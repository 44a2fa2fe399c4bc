//! Stalled TLS handshakes: silence, a ClientHello record cut short, and a one-byte drip.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::clients::{Held, drip, hold_until_closed};

/// Bytes the partial ClientHello's record header announces.
pub const ANNOUNCED_RECORD_LEN: u16 = 512;
/// Bytes of the record body actually sent.
pub const SENT_RECORD_LEN: usize = 64;

/// How a client stalls a TLS server's handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsStall {
    /// Connects and sends nothing.
    Silent,
    /// Sends a record header announcing [`ANNOUNCED_RECORD_LEN`] bytes and only
    /// [`SENT_RECORD_LEN`] of them, then waits.
    Partial,
    /// Sends a ClientHello one byte every `interval`.
    Drip {
        /// Time between two bytes.
        interval: Duration,
    },
}

/// A TLS 1.2-framed ClientHello record: header `16 03 01 LL LL`, the handshake header and
/// a client_version + random prefix, padded so the record body is `announced` bytes long.
pub fn client_hello(announced: u16) -> Vec<u8> {
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&announced.to_be_bytes());
    let body_len = u32::from(announced).saturating_sub(4);
    let mut body = vec![0x01];
    body.extend_from_slice(&body_len.to_be_bytes()[1..]);
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    body.resize(usize::from(announced), 0);
    record.extend_from_slice(&body);
    record
}

/// Stalls one handshake against `addr` in `style` until the server closes or `deadline` passes.
pub async fn stall_handshake(
    addr: SocketAddr,
    style: TlsStall,
    deadline: Instant,
) -> io::Result<Held> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(match style {
        TlsStall::Silent => hold_until_closed(stream, deadline).await,
        TlsStall::Partial => {
            let hello = client_hello(ANNOUNCED_RECORD_LEN);
            stream.write_all(&hello[..5 + SENT_RECORD_LEN]).await?;
            hold_until_closed(stream, deadline).await
        }
        TlsStall::Drip { interval } => {
            drip(
                stream,
                &client_hello(ANNOUNCED_RECORD_LEN),
                interval,
                deadline,
            )
            .await
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn the_record_header_announces_more_than_is_sent() {
        let hello = client_hello(ANNOUNCED_RECORD_LEN);
        assert_eq!(&hello[..3], &[0x16, 0x03, 0x01]);
        assert_eq!(
            u16::from_be_bytes([hello[3], hello[4]]),
            ANNOUNCED_RECORD_LEN
        );
        assert_eq!(hello.len(), 5 + usize::from(ANNOUNCED_RECORD_LEN));
        assert_eq!(hello[5], 0x01, "handshake type ClientHello");
        assert!(SENT_RECORD_LEN < usize::from(ANNOUNCED_RECORD_LEN));
    }

    #[tokio::test]
    async fn partial_hello_stops_short_and_sees_the_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 5 + SENT_RECORD_LEN];
            conn.read_exact(&mut got).await.unwrap();
            let mut more = [0u8; 1];
            let extra =
                tokio::time::timeout(Duration::from_millis(100), conn.read(&mut more)).await;
            assert!(extra.is_err(), "the partial hello sent more than it should");
            got
        });
        let held = stall_handshake(
            addr,
            TlsStall::Partial,
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .unwrap();
        let got = server.await.unwrap();
        assert_eq!(got[0], 0x16);
        assert!(held.is_closed(), "the server dropped the connection");
    }
}
