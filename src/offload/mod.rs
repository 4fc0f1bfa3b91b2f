//! Kernel forwarding: `bpf/forward.c`, loaded at start and attached to the
//! ingress of the interfaces media arrives on, forwards the RTP of latched
//! plain streams without waking a worker. The workers decide which streams
//! qualify and install and remove their entries (`worker::runner::kernel`).
//!
//! The program is attached as a tcx link (Linux 6.6+), which lives exactly
//! as long as this process: a chorus that is killed leaves no program
//! behind to forward ports it no longer owns. Where that cannot be had
//! (older kernel, no CAP_BPF or CAP_NET_ADMIN, not built), chorus says why
//! and relays in userspace, or refuses to start when told `on`.

mod interfaces;
pub mod map;
pub mod route;

use aya::maps::{Map, PerCpuArray};
use aya::programs::tc::{SchedClassifier, TcAttachOptions, TcAttachType};
use aya::programs::LinkOrder;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::Mutex;

pub use map::{ForwardMap, Key, Route};

/// Whether to forward in the kernel (`kernel_forward`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Userspace only.
    Off,
    /// In the kernel where the machine allows it; otherwise say why and go on.
    #[default]
    Auto,
    /// In the kernel, or refuse to start.
    On,
}

/// The loaded program, its links and its maps, for the process's lifetime.
pub struct KernelForward {
    pub map: ForwardMap,
    totals: Mutex<PerCpuArray<aya::maps::MapData, [u64; 2]>>,
    pub interfaces: Vec<String>,
    /// Holds the program and its links: dropping it detaches them.
    _ebpf: Mutex<aya::Ebpf>,
}

impl std::fmt::Debug for KernelForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelForward")
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

#[cfg(chorus_bpf)]
static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/forward.o"));
#[cfg(not(chorus_bpf))]
static PROGRAM: &[u8] = &[];

impl KernelForward {
    /// Loads and attaches the program, per `mode`. `media_ips` are the
    /// addresses media sockets bind to; `named` overrides the interfaces
    /// (empty: loopback and those holding a media address, or every
    /// interface when media binds to an unspecified address).
    pub fn start(
        mode: Mode,
        media_ips: &[IpAddr],
        named: &[String],
        streams: u32,
    ) -> Result<Option<KernelForward>, String> {
        if mode == Mode::Off {
            return Ok(None);
        }
        let interfaces = if named.is_empty() {
            interfaces::carrying(media_ips)?
        } else {
            named.to_vec()
        };
        match Self::load(&interfaces, streams) {
            Ok(k) => {
                tracing::info!(interfaces = ?k.interfaces, streams, "forwarding latched plain RTP in the kernel (eBPF, tcx)");
                Ok(Some(k))
            }
            Err(why) if mode == Mode::Auto => {
                tracing::warn!("relaying in userspace only: kernel forwarding unavailable: {why}");
                Ok(None)
            }
            Err(why) => Err(format!("kernel_forward = \"on\", but {why}")),
        }
    }

    fn load(interfaces: &[String], streams: u32) -> Result<KernelForward, String> {
        if PROGRAM.is_empty() {
            return Err("this build has no eBPF program (clang was missing when it was built)".into());
        }
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries("chorus_fwd", streams)
            .load(PROGRAM)
            .map_err(|e| format!("cannot load the eBPF program: {e}"))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut("chorus_forward")
            .ok_or("the eBPF object has no chorus_forward")?
            .try_into()
            .map_err(|e| format!("chorus_forward: {e}"))?;
        prog.load()
            .map_err(|e| format!("the kernel refused the eBPF program (CAP_BPF?): {e}"))?;
        for name in interfaces {
            let order = TcAttachOptions::TcxOrder(LinkOrder::default());
            prog.attach_with_options(name, TcAttachType::Ingress, order)
                .map_err(|e| {
                    format!("cannot attach to {name}'s ingress (tcx needs Linux 6.6 and CAP_NET_ADMIN): {e}")
                })?;
        }
        let fd = match ebpf.map("chorus_fwd") {
            Some(Map::HashMap(data)) => data.fd().as_fd().try_clone_to_owned(),
            _ => return Err("the eBPF object has no chorus_fwd hash map".into()),
        };
        let fd = fd.map_err(|e| format!("chorus_fwd: {e}"))?;
        let totals = ebpf.take_map("chorus_fwd_totals").ok_or("no chorus_fwd_totals map")?;
        let totals = PerCpuArray::try_from(totals).map_err(|e| format!("chorus_fwd_totals: {e}"))?;
        Ok(KernelForward {
            map: ForwardMap::new(fd, streams as usize),
            totals: Mutex::new(totals),
            interfaces: interfaces.to_vec(),
            _ebpf: Mutex::new(ebpf),
        })
    }

    /// Packets and UDP payload bytes forwarded in the kernel so far.
    pub fn totals(&self) -> (u64, u64) {
        let Ok(t) = self.totals.lock() else { return (0, 0) };
        // One [packets, bytes] per CPU.
        t.get(&0, 0)
            .map(|cpus| cpus.iter().fold((0, 0), |(p, b), c| (p + c[0], b + c[1])))
            .unwrap_or((0, 0))
    }
}
