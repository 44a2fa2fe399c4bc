//! The fault toolkit: misbehaving clients, stalled TLS handshakes, an HTTP/2 rapid-reset
//! attacker, a fake DNS server, an upstream that can stall and a fault proxy — all
//! in-process, on loopback sockets.

pub mod clients;
pub mod dns;
pub mod h2;
pub mod proxy;
pub mod tls;
pub mod upstream;
