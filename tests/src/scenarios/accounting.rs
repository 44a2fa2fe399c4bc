//! Exact accounting after quiescence: every live task and open fd above the baseline is named
//! by an allow-list entry and within that entry's allowance; whatever is left is unaccounted,
//! and in fixed mode it must be zero. There is no anonymous slack.
//!
//! Tasks are grouped by spawn site and label. The allow-list knows the server's shared
//! infrastructure by the labels the server gives it (`upstream-connection`, `dns-lookup`):
//! a pooled connection's driver may stay as long as the pool itself reports the connection
//! idle, and the resolver may keep its background tasks. Fds are named from `/proc`: each
//! socket is matched to its TCP or UDP endpoint and classified by the addresses it joins.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use serde::Serialize;

use crate::server::SiteGroup;

/// Label the server gives its pooled upstream connections' driver tasks.
pub const UPSTREAM_CONNECTION_LABEL: &str = "upstream-connection";
/// Label the server gives shared DNS lookups and the resolver tasks they start.
pub const DNS_LOOKUP_LABEL: &str = "dns-lookup";
/// Background tasks hickory's resolver may keep per nameserver once it has been used (its
/// UDP and TCP exchange tasks).
pub const RESOLVER_TASKS: u64 = 2;
/// Sockets hickory's resolver may keep open towards the nameserver (UDP and TCP).
pub const RESOLVER_SOCKETS: u64 = 2;

/// Live tasks of one spawn site and label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskGroup {
    /// `file:line:column` of the spawn.
    pub site: String,
    /// The tasks' label (a request id or an infrastructure label), if any.
    pub label: Option<String>,
    /// Live at the baseline.
    pub before: u64,
    /// Live after quiescence.
    pub after: u64,
    /// The allow-list entry that accounts for some of them.
    pub allowed_by: Option<&'static str>,
    /// Tasks nothing accounts for.
    pub unaccounted: u64,
    /// Whether the tasks run on behalf of a client request (a request-id label).
    pub request_scoped: bool,
}

/// What an fd of the server process is, by the addresses its socket joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FdKind {
    /// A listening socket.
    Listener,
    /// A connection from a client to one of the server's ports.
    ClientConnection,
    /// A connection to the upstream (`--upstream`).
    UpstreamConnection,
    /// A socket towards the nameserver (`--dns-server`), UDP or TCP.
    Nameserver,
    /// Another socket.
    OtherSocket,
    /// Not a socket (files, pipes, epoll, eventfd…).
    NotASocket,
}

/// Open fds by kind.
pub type FdCensus = BTreeMap<FdKind, u64>;

/// What the accounting needs to know about the run's sockets.
#[derive(Debug, Clone, Copy)]
pub struct Peers {
    /// The server's own ports.
    pub server_ports: [u16; 2],
    /// The upstream the server dials.
    pub upstream: SocketAddr,
    /// The nameserver it asks.
    pub nameserver: SocketAddr,
}

/// Open fds of one kind before and after, and what accounts for the difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FdGroup {
    /// The kind.
    pub kind: FdKind,
    /// Open at the baseline.
    pub before: u64,
    /// Open after quiescence.
    pub after: u64,
    /// The allow-list entry that accounts for some of them.
    pub allowed_by: Option<&'static str>,
    /// Fds nothing accounts for.
    pub unaccounted: u64,
}

/// The whole accounting of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Accounting {
    /// Idle upstream connections as the server's pool reported them after quiescence.
    pub pool_idle: u64,
    /// Task groups that changed, or that the allow-list speaks for.
    pub tasks: Vec<TaskGroup>,
    /// Fd kinds, before and after.
    pub fds: Vec<FdGroup>,
}

impl Accounting {
    /// Live tasks above the baseline that nothing accounts for.
    pub fn unaccounted_tasks(&self) -> u64 {
        self.tasks.iter().map(|group| group.unaccounted).sum()
    }

    /// Open fds above the baseline that nothing accounts for.
    pub fn unaccounted_fds(&self) -> u64 {
        self.fds.iter().map(|group| group.unaccounted).sum()
    }

    /// Whether everything is accounted for.
    pub fn is_exact(&self) -> bool {
        self.unaccounted_tasks() == 0 && self.unaccounted_fds() == 0
    }

    /// The unaccounted group to name: the request-scoped one with most tasks when there is
    /// one (it points into the handler that hangs), else the one with most tasks.
    pub fn top_unaccounted(&self) -> Option<&TaskGroup> {
        let most = |groups: &mut dyn Iterator<Item = &TaskGroup>| {
            groups
                .filter(|group| group.unaccounted > 0)
                .max_by(|a, b| {
                    a.unaccounted
                        .cmp(&b.unaccounted)
                        .then_with(|| b.site.cmp(&a.site))
                })
                .cloned()
        };
        let request = most(&mut self.tasks.iter().filter(|group| group.request_scoped));
        let site = request
            .or_else(|| most(&mut self.tasks.iter()))?
            .site
            .clone();
        self.tasks
            .iter()
            .filter(|group| group.site == site)
            .max_by_key(|group| group.unaccounted)
    }
}

/// Accounts for the tasks and fds of `after` against `before`, `pool_idle` being the idle
/// connections the server's pool reports.
pub fn account(
    before: &[SiteGroup],
    after: &[SiteGroup],
    pool_idle: u64,
    fds_before: &FdCensus,
    fds_after: &FdCensus,
) -> Accounting {
    let before = group(before);
    let after = group(after);
    let mut keys: Vec<_> = before.keys().chain(after.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let mut tasks = Vec::new();
    for (site, label) in keys {
        let was = before
            .get(&(site.clone(), label.clone()))
            .copied()
            .unwrap_or(0);
        let now = after
            .get(&(site.clone(), label.clone()))
            .copied()
            .unwrap_or(0);
        let allowance = allowance(&site, label.as_deref(), pool_idle);
        if was == now && allowance.is_none() {
            continue;
        }
        let request_scoped = label.as_deref().is_some_and(is_request_id);
        tasks.push(TaskGroup {
            unaccounted: unaccounted(was, now, allowance),
            site,
            label,
            before: was,
            after: now,
            allowed_by: allowance.map(Allowance::name),
            request_scoped,
        });
    }
    let mut kinds: Vec<FdKind> = fds_before.keys().chain(fds_after.keys()).copied().collect();
    kinds.sort();
    kinds.dedup();
    let fds = kinds
        .into_iter()
        .map(|kind| {
            let before = fds_before.get(&kind).copied().unwrap_or(0);
            let after = fds_after.get(&kind).copied().unwrap_or(0);
            let allowance = match kind {
                FdKind::UpstreamConnection => Some(Allowance::Pool(pool_idle)),
                FdKind::Nameserver => Some(Allowance::Resolver(RESOLVER_SOCKETS)),
                _ => None,
            };
            FdGroup {
                kind,
                before,
                after,
                allowed_by: allowance.map(Allowance::name),
                unaccounted: unaccounted(before, after, allowance),
            }
        })
        .collect();
    Accounting {
        pool_idle,
        tasks,
        fds,
    }
}

/// An allow-list entry with its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowance {
    /// At most this many in all (the pool's idle connections): what is open may stay open,
    /// however many there were before.
    Pool(u64),
    /// At most this many above the baseline.
    Resolver(u64),
}

impl Allowance {
    fn name(self) -> &'static str {
        match self {
            Allowance::Pool(_) => "idle pooled upstream connections (the pool's own count)",
            Allowance::Resolver(_) => "the resolver's background tasks and sockets",
        }
    }
}

/// What of `after` (against `before`) the allowance does not cover.
fn unaccounted(before: u64, after: u64, allowance: Option<Allowance>) -> u64 {
    match allowance {
        Some(Allowance::Pool(idle)) => after.saturating_sub(idle),
        Some(Allowance::Resolver(extra)) => after.saturating_sub(before).saturating_sub(extra),
        None => after.saturating_sub(before),
    }
}

/// The allow-list: which entry may keep tasks of `site` with `label`.
fn allowance(site: &str, label: Option<&str>, pool_idle: u64) -> Option<Allowance> {
    match label {
        Some(UPSTREAM_CONNECTION_LABEL) if site.starts_with("server/src/upstream.rs") => {
            Some(Allowance::Pool(pool_idle))
        }
        // hickory's own tasks, started under a lookup; the lookups themselves (server code)
        // end with their deadline and get no allowance.
        Some(DNS_LOOKUP_LABEL) if !site.starts_with("server/") => {
            Some(Allowance::Resolver(RESOLVER_TASKS))
        }
        _ => None,
    }
}

fn is_request_id(label: &str) -> bool {
    label != UPSTREAM_CONNECTION_LABEL && label != DNS_LOOKUP_LABEL
}

fn group(sites: &[SiteGroup]) -> HashMap<(String, Option<String>), u64> {
    let mut groups = HashMap::new();
    for site in sites {
        let name = site.site.to_string();
        if site.tasks.is_empty() {
            *groups.entry((name.clone(), None)).or_default() += site.count;
        }
        for task in &site.tasks {
            *groups
                .entry((name.clone(), task.label.clone()))
                .or_default() += 1;
        }
    }
    groups
}

/// Open fds of process `pid` by kind, from `/proc/<pid>/fd` and the TCP/UDP tables of its
/// network namespace; `None` once the process is gone.
pub fn fd_census(pid: u32, peers: &Peers) -> Option<FdCensus> {
    let mut sockets = HashMap::new();
    for (table, udp) in [
        ("tcp", false),
        ("tcp6", false),
        ("udp", true),
        ("udp6", true),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            for entry in text.lines().skip(1).filter_map(parse_socket_line) {
                sockets.insert(entry.inode, (entry, udp));
            }
        }
    }
    let mut census = FdCensus::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        let kind = match target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|inode| inode.parse::<u64>().ok())
        {
            None => FdKind::NotASocket,
            Some(inode) => match sockets.get(&inode) {
                Some((entry, udp)) => classify(entry, *udp, peers),
                None => FdKind::OtherSocket,
            },
        };
        *census.entry(kind).or_default() += 1;
    }
    Some(census)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketEntry {
    local_port: u16,
    remote_port: u16,
    /// TCP state 0A (LISTEN).
    listening: bool,
    inode: u64,
}

/// One line of `/proc/net/{tcp,udp}[6]`: `sl local rem st … inode …`, ports in hex.
fn parse_socket_line(line: &str) -> Option<SocketEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let port = |endpoint: &str| {
        endpoint
            .rsplit_once(':')
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
    };
    Some(SocketEntry {
        local_port: port(fields.get(1)?)?,
        remote_port: port(fields.get(2)?)?,
        listening: *fields.get(3)? == "0A",
        inode: fields.get(9)?.parse().ok()?,
    })
}

fn classify(entry: &SocketEntry, udp: bool, peers: &Peers) -> FdKind {
    if udp {
        // The server's only UDP sockets are the resolver's.
        return FdKind::Nameserver;
    }
    if entry.listening {
        FdKind::Listener
    } else if peers.server_ports.contains(&entry.local_port) {
        FdKind::ClientConnection
    } else if entry.remote_port == peers.upstream.port() {
        FdKind::UpstreamConnection
    } else if entry.remote_port == peers.nameserver.port() {
        FdKind::Nameserver
    } else {
        FdKind::OtherSocket
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Site, TaskEntry};

    fn site(line: u32, file: &str, labels: &[Option<&str>]) -> SiteGroup {
        SiteGroup {
            site: Site {
                file: file.into(),
                line,
                column: 1,
            },
            count: labels.len() as u64,
            tasks: labels
                .iter()
                .map(|label| TaskEntry {
                    id: 0,
                    age_ms: 0,
                    label: label.map(str::to_owned),
                })
                .collect(),
        }
    }

    #[test]
    fn pool_drivers_are_accounted_up_to_the_idle_count_and_nothing_else_is() {
        let pool = Some(UPSTREAM_CONNECTION_LABEL);
        let before = [
            site(1, "server/src/lib.rs", &[None, None]),
            site(2, "server/src/upstream.rs", &[pool]),
        ];
        let after = [
            site(1, "server/src/lib.rs", &[None, None]),
            site(2, "server/src/upstream.rs", &[pool, pool, pool]),
            site(
                3,
                "server/src/routes.rs",
                &[Some("chaos-1"), Some("chaos-2")],
            ),
            site(
                4,
                "/registry/hickory-proto/src/udp.rs",
                &[Some(DNS_LOOKUP_LABEL)],
            ),
        ];
        let accounting = account(&before, &after, 2, &FdCensus::new(), &FdCensus::new());
        // 3 drivers with 2 idle: one unaccounted; the request's 2 tasks; hickory's task allowed.
        assert_eq!(accounting.unaccounted_tasks(), 3);
        let top = accounting.top_unaccounted().unwrap();
        assert_eq!(top.site, "server/src/routes.rs:3:1");
        assert!(top.request_scoped);
        let hickory = accounting
            .tasks
            .iter()
            .find(|group| group.site.contains("hickory"))
            .unwrap();
        assert_eq!(hickory.unaccounted, 0);
        assert!(hickory.allowed_by.unwrap().contains("resolver"));

        let exact = account(&before, &before, 1, &FdCensus::new(), &FdCensus::new());
        assert!(exact.is_exact(), "{exact:#?}");
    }

    #[test]
    fn fds_are_accounted_by_kind() {
        let census = |pairs: &[(FdKind, u64)]| pairs.iter().copied().collect::<FdCensus>();
        let before = census(&[
            (FdKind::Listener, 2),
            (FdKind::NotASocket, 9),
            (FdKind::UpstreamConnection, 1),
        ]);
        let after = census(&[
            (FdKind::Listener, 2),
            (FdKind::NotASocket, 9),
            (FdKind::UpstreamConnection, 3),
            (FdKind::ClientConnection, 4),
            (FdKind::Nameserver, 1),
        ]);
        let accounting = account(&[], &[], 2, &before, &after);
        // One upstream connection over the idle count, four client connections.
        assert_eq!(accounting.unaccounted_fds(), 5);
        assert!(
            account(
                &[],
                &[],
                3,
                &before,
                &census(&[
                    (FdKind::Listener, 2),
                    (FdKind::NotASocket, 9),
                    (FdKind::UpstreamConnection, 3)
                ])
            )
            .is_exact()
        );
    }

    #[test]
    fn proc_net_lines_parse() {
        let line = "   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 20 4 30 10 -1";
        let entry = parse_socket_line(line).unwrap();
        assert_eq!(
            (
                entry.local_port,
                entry.remote_port,
                entry.listening,
                entry.inode
            ),
            (8080, 40000, false, 123456)
        );
        let peers = Peers {
            server_ports: [8080, 8443],
            upstream: "127.0.0.1:9000".parse().unwrap(),
            nameserver: "127.0.0.1:5353".parse().unwrap(),
        };
        assert_eq!(classify(&entry, false, &peers), FdKind::ClientConnection);
        assert_eq!(classify(&entry, true, &peers), FdKind::Nameserver);
        assert!(parse_socket_line("  sl  local_address rem_address   st").is_none());
    }
}
