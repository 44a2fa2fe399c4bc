//! Integration tests of leakcheck-server over loopback: routes, defenses, seeded bugs, the binary.

mod binary;
mod bugs;
mod defenses;
mod http2;
mod routes;
mod support;
