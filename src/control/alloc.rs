//! The port allocation of one command, as a transaction: ports are bound
//! as the session asks for them, handed to the worker with the update, and
//! either kept (released ones go back to the pool once the worker closed
//! them) or, if the command fails, returned.

use super::home::Home;
use super::{lock, State};
use crate::error::Error;
use crate::session::{LocalPorts, Resources};
use crate::worker::ports::{self, SocketOptions};
use crate::worker::Bound;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Binds ports for one command. New sockets go to the worker with the
/// update; released ports return to the pool only after the worker has
/// closed their sockets, so a port is never bound twice.
pub struct Alloc<'a> {
    state: &'a State,
    /// Where the call lives: its addresses and port pools.
    home: &'a Home,
    pub fresh: Vec<(usize, LocalPorts, Vec<Bound>)>,
    pub released: Vec<(usize, LocalPorts)>,
    /// Ports in the range that another process holds: kept out of the pool
    /// while this command runs (so it does not pick them again), and put
    /// back when it ends, so they are not lost for good.
    unbindable: Vec<(usize, LocalPorts)>,
}

impl Drop for Alloc<'_> {
    fn drop(&mut self) {
        for (iface, p) in self.unbindable.drain(..) {
            free_ports(self.home, iface, p);
        }
    }
}

/// Bind attempts before giving up on a range whose ports others hold.
const BIND_ATTEMPTS: usize = 32;

impl Resources for Alloc<'_> {
    fn fingerprint(&self) -> String {
        self.state.dtls.fingerprint.clone()
    }

    fn key_material(&mut self, out: &mut [u8]) -> Result<(), Error> {
        openssl::rand::rand_bytes(out).map_err(|e| Error::Internal(format!("no random bytes for SRTP keys: {e}")))
    }

    fn allocate(&mut self, iface: usize, pair: bool) -> Result<LocalPorts, Error> {
        let ip = self.home.bind[iface];
        let opts = &self.state.socket_options;
        let exhausted = || Error::PortsExhausted(self.home.name(iface).to_string());
        for _ in 0..BIND_ATTEMPTS {
            let (port, mut parked) = {
                let mut pool = lock(&self.home.pools[iface]);
                let port = if pair { pool.take_pair() } else { pool.take_single() }.ok_or_else(exhausted)?;
                (port, [pool.unpark(port), pair.then(|| pool.unpark(port + 1)).flatten()])
            };
            let ports = LocalPorts {
                rtp: port,
                rtcp: pair.then_some(port + 1),
            };
            let bound: Result<Vec<_>, _> = [Some(port), ports.rtcp]
                .into_iter()
                .flatten()
                .zip(&mut parked)
                .map(|(p, parked)| open(ip, p, parked.take(), opts))
                .collect();
            match bound {
                Ok(sockets) => {
                    self.fresh.push((iface, ports, sockets));
                    return Ok(ports);
                }
                Err(e) => {
                    // Someone else holds it; keep it aside and try another.
                    tracing::warn!(port, error = %e, "media port in range is not bindable");
                    self.unbindable.push((iface, ports));
                }
            }
        }
        Err(exhausted())
    }

    fn release(&mut self, iface: usize, ports: LocalPorts) {
        self.released.push((iface, ports));
    }
}

impl Alloc<'_> {
    pub fn new<'a>(state: &'a State, home: &'a Home) -> Alloc<'a> {
        Alloc {
            state,
            home,
            fresh: Vec::new(),
            released: Vec::new(),
            unbindable: Vec::new(),
        }
    }

    /// Takes and binds the given ports (a call restored where it was).
    pub fn claim(&mut self, iface: usize, ports: LocalPorts) -> Result<(), Error> {
        let wanted = [Some(ports.rtp), ports.rtcp];
        let mut parked = {
            let mut pool = lock(&self.home.pools[iface]);
            for (n, p) in wanted.iter().flatten().enumerate() {
                if !pool.take(*p) {
                    for q in wanted.iter().flatten().take(n) {
                        pool.put(*q);
                    }
                    return Err(Error::Conflict(format!("port {p} is taken or outside the range")));
                }
            }
            wanted.map(|p| p.and_then(|p| pool.unpark(p)))
        };
        let ip = self.home.bind[iface];
        let bound: Result<Vec<_>, _> = wanted
            .into_iter()
            .zip(&mut parked)
            .filter_map(|(p, parked)| Some((p?, parked.take())))
            .map(|(p, parked)| open(ip, p, parked, &self.state.socket_options))
            .collect();
        match bound {
            Ok(sockets) => {
                self.fresh.push((iface, ports, sockets));
                Ok(())
            }
            Err(e) => {
                free_ports(self.home, iface, ports);
                Err(Error::Conflict(format!(
                    "port {} on {ip} does not bind: {e}",
                    ports.rtp
                )))
            }
        }
    }

    /// The command failed: return what it took (its sockets close on drop).
    pub fn rollback(mut self) {
        for (iface, p, _) in self.fresh.drain(..) {
            free_ports(self.home, iface, p);
        }
    }
}

/// A port's parked socket, or a new one bound to it.
fn open(ip: IpAddr, port: u16, parked: Option<UdpSocket>, opts: &SocketOptions) -> std::io::Result<Bound> {
    let socket = match parked {
        Some(s) => s,
        None => ports::bind(ip, port, opts)?,
    };
    Ok((SocketAddr::new(ip, port), socket))
}

pub fn free_ports(home: &Home, iface: usize, p: LocalPorts) {
    let mut pool = lock(&home.pools[iface]);
    pool.put(p.rtp);
    if let Some(r) = p.rtcp {
        pool.put(r);
    }
}
