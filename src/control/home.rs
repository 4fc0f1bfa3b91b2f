//! Where a call lives: the addresses its sockets bind and its SDP
//! advertises, and the port pools behind them. Every call lives on this
//! instance's own interfaces, except calls taken over from a dead instance,
//! which keep the addresses phones were told (the address floats to us).

use super::lock;
use crate::config::Interface;
use crate::worker::ports::PortPool;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub type Pool = Arc<Mutex<PortPool>>;

#[derive(Debug)]
pub struct Home {
    pub interfaces: Vec<Interface>,
    /// Per interface: the address sockets bind, the address SDP shows.
    pub bind: Vec<IpAddr>,
    pub advertise: Vec<IpAddr>,
    pub pools: Vec<Pool>,
    /// The instance the calls came from, for calls taken over.
    pub adopted_from: Option<String>,
}

impl Home {
    fn new(interfaces: Vec<Interface>, pools: Vec<Pool>, adopted_from: Option<String>) -> Home {
        Home {
            bind: interfaces.iter().map(|i| i.bind).collect(),
            advertise: interfaces.iter().map(|i| i.advertise.unwrap_or(i.bind)).collect(),
            interfaces,
            pools,
            adopted_from,
        }
    }

    /// This instance's own interfaces, each with a pool of the port range.
    pub fn own(interfaces: Vec<Interface>, min: u16, max: u16) -> Home {
        let pools = interfaces
            .iter()
            .map(|_| Arc::new(Mutex::new(PortPool::new(min, max))))
            .collect();
        Home::new(interfaces, pools, None)
    }

    pub fn name(&self, iface: usize) -> &str {
        self.interfaces.get(iface).map(|i| i.name.as_str()).unwrap_or("?")
    }
}

/// Port pools for addresses taken over from dead instances, one per
/// address, so a port is never handed out twice on one address.
#[derive(Debug, Default)]
pub struct ForeignPools(Mutex<HashMap<IpAddr, Pool>>);

impl ForeignPools {
    /// The home for calls recorded with `interfaces` by `from`: ours when
    /// the addresses are ours, else pools for the foreign addresses.
    pub fn home_for(&self, own: &Arc<Home>, interfaces: &[Interface], from: &str, range: (u16, u16)) -> Arc<Home> {
        if interfaces == own.interfaces.as_slice() {
            return own.clone();
        }
        let mut pools = lock(&self.0);
        let mine = |ip: IpAddr| own.bind.iter().position(|b| *b == ip).map(|i| own.pools[i].clone());
        let pools = interfaces
            .iter()
            .map(|i| {
                mine(i.bind).unwrap_or_else(|| {
                    pools
                        .entry(i.bind)
                        .or_insert_with(|| Arc::new(Mutex::new(PortPool::new(range.0, range.1))))
                        .clone()
                })
            })
            .collect();
        Arc::new(Home::new(interfaces.to_vec(), pools, Some(from.to_string())))
    }
}
