//! Listening sockets: which addresses this process's load balancers hold, and how
//! many client connections one load balancer may have open.
//!
//! With dedicated workers every worker has its own socket on one port
//! (`SO_REUSEPORT`), and the kernel lets *any* socket of the same user join such a
//! group and take a share of its connections. So that a second load balancer (another
//! group, perhaps another tenant's) can never join the first one's group, every
//! address a live listener holds is recorded in a process-wide registry, and a bind
//! that overlaps one (the same address and port, or the wildcard address of the same
//! port) fails with [`AddressInUse`] before any socket is made. The record is released
//! when the listener's last socket closes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Addresses held by live listeners of this process.
static HELD: Mutex<Vec<SocketAddr>> = Mutex::new(Vec::new());

/// A load balancer's listen address is taken: another live load balancer of this
/// process holds it (or an address that overlaps it: the wildcard address of the same
/// port), or another program does. Carried inside the [`std::io::Error`] (of kind
/// [`std::io::ErrorKind::AddrInUse`]) that [`crate::LoadBalancer::bind_with`] returns;
/// find it with [`AddressInUse::find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInUse {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The overlapping address a load balancer of this process holds; `None` when the
    /// kernel refused the bind (another program holds it).
    pub holder: Option<SocketAddr>,
}

impl std::fmt::Display for AddressInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "address {} is already in use", self.addr)?;
        match self.holder {
            Some(h) if h == self.addr => write!(f, " by another load balancer"),
            Some(h) => write!(f, " by another load balancer (listening on {h})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for AddressInUse {}

impl AddressInUse {
    /// The [`AddressInUse`] inside an error from [`crate::LoadBalancer::bind_with`],
    /// if that is what it is.
    pub fn find(error: &std::io::Error) -> Option<&AddressInUse> {
        error.get_ref()?.downcast_ref::<AddressInUse>()
    }

    fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::AddrInUse, self)
    }
}

/// Whether two listen addresses would share connections (or refuse each other).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let (x, y): (IpAddr, IpAddr) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port() && (x == y || x.is_unspecified() || y.is_unspecified())
}

fn held() -> std::sync::MutexGuard<'static, Vec<SocketAddr>> {
    HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn conflict(held: &[SocketAddr], addr: SocketAddr) -> Option<SocketAddr> {
    held.iter().copied().find(|h| overlaps(*h, addr))
}

/// One address recorded in the registry; released when dropped (every listening
/// socket of the load balancer holds a clone and drops it after closing).
#[derive(Debug)]
pub(crate) struct Registration {
    addr: SocketAddr,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut held = held();
        if let Some(i) = held.iter().position(|h| *h == self.addr) {
            held.swap_remove(i);
        }
    }
}

/// Binds `count` listening sockets on `listen` (`SO_REUSEPORT` when `count > 1` or
/// `reuseport`; port 0 picks one free port for all of them) and records the bound
/// address; fails with [`AddressInUse`] when a live listener of this process holds an
/// overlapping one.
pub(crate) fn bind(
    listen: SocketAddr,
    count: usize,
    reuseport: bool,
) -> std::io::Result<(Vec<std::net::TcpListener>, Arc<Registration>)> {
    // Held across the binds, so that two load balancers binding at once cannot both
    // pass the check.
    let mut held = held();
    if listen.port() != 0
        && let Some(holder) = conflict(&held, listen)
    {
        return Err(AddressInUse {
            addr: listen,
            holder: Some(holder),
        }
        .into_io());
    }
    let in_use = |e: std::io::Error, addr: SocketAddr| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            AddressInUse { addr, holder: None }.into_io()
        } else {
            e
        }
    };
    let first = listen_socket(listen, reuseport).map_err(|e| in_use(e, listen))?;
    let local = first.local_addr()?;
    // Port 0: the kernel may hand out a port another reuseport group holds.
    if let Some(holder) = conflict(&held, local) {
        return Err(AddressInUse {
            addr: local,
            holder: Some(holder),
        }
        .into_io());
    }
    let mut sockets = vec![first];
    for _ in 1..count.max(1) {
        sockets.push(listen_socket(local, reuseport).map_err(|e| in_use(e, local))?);
    }
    held.push(local);
    Ok((sockets, Arc::new(Registration { addr: local })))
}

/// A listening socket on `addr` (with `SO_REUSEPORT` if `reuseport`). Its
/// connections inherit `TCP_NODELAY` from it, which saves a system call per
/// connection.
fn listen_socket(addr: SocketAddr, reuseport: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    // Registered with the caller's runtime only until `into_std`.
    socket.listen(4096)?.into_std()
}

/// The client connections one load balancer has open, across all its workers, and
/// those it refused for being over [`crate::LbConfig::max_connections`].
#[derive(Debug)]
pub(crate) struct Connections {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
}

impl Connections {
    pub(crate) fn new(max: usize) -> Self {
        Connections {
            max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// A slot for one more connection, held until the connection ends; `None` (and
    /// one more refusal counted) when `max` are open.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok();
        if admitted {
            Some(Slot(Arc::clone(self)))
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> u64 {
        self.open.load(Ordering::Acquire) as u64
    }

    /// Connections refused since start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One open client connection's place under the cap.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_addresses() {
        let check = |a: &str, b: &str, expected: bool| {
            let (a, b): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(overlaps(a, b), expected, "{a} {b}");
            assert_eq!(overlaps(b, a), expected, "{b} {a}");
        };
        check("127.0.0.1:80", "127.0.0.1:80", true);
        check("127.0.0.1:80", "127.0.0.1:81", false);
        check("127.0.0.1:80", "127.0.0.2:80", false);
        check("0.0.0.0:80", "127.0.0.1:80", true);
        check("[::]:80", "127.0.0.1:80", true);
        check("[::ffff:127.0.0.1]:80", "127.0.0.1:80", true);
        check("[::1]:80", "127.0.0.1:80", false);
    }

    #[test]
    fn the_cap_admits_up_to_max_and_counts_refusals() {
        let c = Arc::new(Connections::new(2));
        let a = c.admit().expect("first");
        let _b = c.admit().expect("second");
        assert!(c.admit().is_none());
        assert_eq!((c.open(), c.refused()), (2, 1));
        drop(a);
        assert!(c.admit().is_some());
        assert_eq!(c.refused(), 1);
    }
}
