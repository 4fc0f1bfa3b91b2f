//! Settings: built-in defaults < `--config chorus.toml` < `CHORUS_*`
//! environment variables < command-line flags.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// A named media address. The default interface is `media_bind`/`advertise`;
/// more can be listed in the config file for multi-homed hosts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Interface {
    pub name: String,
    pub bind: IpAddr,
    /// Address written into SDP when it differs from `bind` (NAT, cloud).
    #[serde(default)]
    pub advertise: Option<IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP API (and /metrics) listen address.
    pub http_listen: SocketAddr,
    /// rtpengine ng protocol over UDP; `None` turns it off (it stays on HTTP /ng).
    pub ng_listen: Option<SocketAddr>,
    /// Address media sockets of the default interface bind to.
    pub media_bind: IpAddr,
    /// Address advertised in SDP for the default interface, if not `media_bind`.
    pub advertise: Option<IpAddr>,
    /// Extra named interfaces.
    pub interfaces: Vec<Interface>,
    /// Media port range, inclusive.
    pub port_min: u16,
    pub port_max: u16,
    /// Media worker threads; 0 = one per core.
    pub workers: usize,
    /// Threads of the control plane (HTTP, ng, Redis, streams to
    /// applications). One keeps a request and its reply on one thread:
    /// half the context switches per set-up of two (BENCHMARKS.md).
    pub control_threads: usize,
    /// SO_RCVBUF / SO_SNDBUF of media sockets in bytes; 0 = OS default.
    pub socket_recv_buffer: usize,
    pub socket_send_buffer: usize,
    /// DSCP of outgoing media (46 = EF, expedited forwarding).
    pub dscp: u8,
    /// Seconds without media after which a call is torn down; 0 = never.
    pub media_timeout: u64,
    /// URL that receives a JSON POST when chorus ends a call by itself.
    pub callback_url: Option<String>,
    /// Bearer token required on /v1 when set.
    pub token: Option<String>,
    /// `text` or `json`.
    pub log_format: String,
    /// Seconds to wait for calls to end after SIGTERM.
    pub drain_timeout: u64,
    /// Calls held at most; more are refused (503) until some end.
    pub max_calls: usize,
    /// Participants per conference at most (a conference's own
    /// `max_participants` may only be lower).
    pub max_participants: usize,
    /// From this many participants on, a conference's new participants
    /// are read and sent to by the other media workers (see
    /// `worker::recv_pool`, `worker::send_pool`); 0 = never.
    pub mixer_offload_min: usize,
    /// `m=` lines per SDP at most; this also bounds the streams of a call.
    pub max_sdp_media: usize,
    /// Control requests (HTTP and ng) per second from one source IP; more
    /// are refused (HTTP 429, ng error) and counted. 0 = no limit (the
    /// default: a proxy is one source and sends every call's commands).
    pub max_requests_per_second: u32,
    /// Redis holding the records of calls and the instances' heartbeats
    /// (`redis://host:port/db`); `None` keeps state in memory only.
    pub redis_url: Option<String>,
    /// This instance's name among its peers; the host name when unset. A
    /// restarted instance with the same name restores its calls.
    pub instance_id: Option<String>,
    /// Milliseconds between heartbeats; an instance is dead after three missed.
    pub redis_heartbeat_ms: u64,
    /// Seconds a call's record outlives its owner's last refresh.
    pub redis_record_ttl: u64,
    /// Base URL other instances reach this one's HTTP API at, to forward
    /// commands on its calls; by default `http://` + `http_listen` (with
    /// the media address when that listens on all addresses).
    pub advertise_http: Option<String>,
    /// PEM files of the DTLS certificate and key chorus shows browsers;
    /// by default a fresh ECDSA P-256 certificate is made at start.
    pub dtls_certificate: Option<String>,
    pub dtls_private_key: Option<String>,
    /// WebSocket audio streams to applications running at most (each is
    /// a task, a connection and up to 30 s of the application's audio).
    pub max_streams: usize,
    /// PEM certificates trusted for `wss://` streams besides Mozilla's
    /// roots (a private CA).
    pub stream_ca_file: Option<String>,
    /// Where recordings (WAV and metadata JSON, named by recording id) go.
    pub recording_dir: String,
    /// Where files played into conferences are looked up (by name only).
    pub media_dir: String,
    /// Forward latched plain RTP in the kernel (eBPF): `auto` where the
    /// machine allows it, `on` (or refuse to start), `off`.
    pub kernel_forward: crate::offload::Mode,
    /// Interfaces to attach the kernel forwarder to; empty: loopback and
    /// those holding a media address (all, for an unspecified address).
    pub kernel_interfaces: Vec<String>,
    /// Stream directions the kernel forwarder holds at most (its map's
    /// size); the rest relay in userspace.
    pub kernel_streams: u32,
    /// How workers read and send call sockets: `uring` (io_uring; a
    /// worker whose kernel refuses it says so and uses epoll), or `epoll`.
    pub io: IoMode,
}

/// How media workers wait for and move datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// epoll readiness, then recvfrom and sendto per datagram.
    Epoll,
    /// io_uring: multishot receives, batched sends.
    #[default]
    Uring,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_listen: "127.0.0.1:8080".parse().expect("literal address"),
            ng_listen: Some("127.0.0.1:22222".parse().expect("literal address")),
            media_bind: "127.0.0.1".parse().expect("literal address"),
            advertise: None,
            interfaces: Vec::new(),
            port_min: 30000,
            port_max: 39999,
            workers: 0,
            control_threads: 1,
            socket_recv_buffer: 0,
            socket_send_buffer: 0,
            dscp: 46,
            media_timeout: 60,
            callback_url: None,
            token: None,
            log_format: "text".into(),
            drain_timeout: 30,
            max_calls: 10_000,
            max_participants: 1000,
            mixer_offload_min: 64,
            max_sdp_media: 16,
            max_requests_per_second: 0,
            redis_url: None,
            instance_id: None,
            redis_heartbeat_ms: 200,
            redis_record_ttl: 120,
            advertise_http: None,
            dtls_certificate: None,
            dtls_private_key: None,
            max_streams: 256,
            stream_ca_file: None,
            recording_dir: "recordings".into(),
            media_dir: "media".into(),
            kernel_forward: crate::offload::Mode::Auto,
            kernel_interfaces: Vec::new(),
            kernel_streams: 65536,
            io: IoMode::Uring,
        }
    }
}

/// Settings that `CHORUS_<KEY>` may set (lists are for the config file).
const ENV_KEYS: &[&str] = &[
    "http_listen",
    "ng_listen",
    "media_bind",
    "advertise",
    "port_min",
    "port_max",
    "workers",
    "control_threads",
    "socket_recv_buffer",
    "socket_send_buffer",
    "dscp",
    "media_timeout",
    "callback_url",
    "token",
    "log_format",
    "drain_timeout",
    "max_calls",
    "max_participants",
    "mixer_offload_min",
    "max_sdp_media",
    "max_requests_per_second",
    "redis_url",
    "instance_id",
    "redis_heartbeat_ms",
    "redis_record_ttl",
    "advertise_http",
    "dtls_certificate",
    "dtls_private_key",
    "max_streams",
    "stream_ca_file",
    "recording_dir",
    "media_dir",
    "kernel_forward",
    "kernel_streams",
    "io",
];

impl Config {
    /// Layers the sources; `overrides` holds only the flags given on the command line.
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Config, String> {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            f = f.merge(Toml::file(path));
        }
        let config: Config = f
            // Only known keys: Kubernetes injects CHORUS_PORT, CHORUS_SERVICE_HOST...
            // for a service named chorus, and those must not stop it starting.
            .merge(Env::prefixed("CHORUS_").only(ENV_KEYS))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.port_min > self.port_max || self.port_max - self.port_min < 1 {
            return Err(format!(
                "port range {}..{} must hold at least two ports",
                self.port_min, self.port_max
            ));
        }
        if !(1..=1 << 22).contains(&self.kernel_streams) {
            return Err(format!(
                "kernel_streams {} is not within 1..=4194304",
                self.kernel_streams
            ));
        }
        if self.dscp > 63 {
            return Err(format!("dscp {} is not a 6-bit value", self.dscp));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!("log_format `{}` is neither text nor json", self.log_format));
        }
        if let Some(url) = &self.redis_url {
            if !url.starts_with("redis://") && !url.starts_with("unix://") {
                return Err(format!(
                    "redis_url `{url}` must start with redis:// or unix:// (TLS is not built in)"
                ));
            }
        }
        if !(50..=10_000).contains(&self.redis_heartbeat_ms) {
            return Err(format!(
                "redis_heartbeat_ms {} is not within 50..=10000",
                self.redis_heartbeat_ms
            ));
        }
        if self.redis_record_ttl < 10 {
            return Err(format!("redis_record_ttl {} s is below 10 s", self.redis_record_ttl));
        }
        if let Some(id) = &self.instance_id {
            if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!("instance_id {id:?} must be 1..=128 characters without spaces"));
            }
        }
        let ifaces = self.all_interfaces();
        for (i, a) in ifaces.iter().enumerate() {
            if ifaces[..i].iter().any(|b| b.name == a.name) {
                return Err(format!("interface `{}` is defined twice", a.name));
            }
            if a.advertise.unwrap_or(a.bind).is_unspecified() {
                return Err(format!(
                    "interface `{}` binds {} and needs an `advertise` address for SDP",
                    a.name, a.bind
                ));
            }
        }
        Ok(())
    }

    /// `instance_id`, or the host name.
    pub fn instance_name(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "chorus".into())
        })
    }

    /// The default interface first, then the configured ones.
    pub fn all_interfaces(&self) -> Vec<Interface> {
        let mut v = vec![Interface {
            name: "default".into(),
            bind: self.media_bind,
            advertise: self.advertise,
        }];
        v.extend(self.interfaces.iter().cloned());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/chorus.toml");
        let c = Config::load(Some(&path), serde_json::json!({})).unwrap();
        assert_eq!(c.advertise, Some("192.0.2.10".parse().unwrap()));
        let names: Vec<String> = c.all_interfaces().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["default", "internal", "public"]);
    }

    #[test]
    fn flags_override_and_bad_values_are_explained() {
        let c = Config::load(None, serde_json::json!({"port_min": 20000, "port_max": 20010})).unwrap();
        assert_eq!((c.port_min, c.port_max, c.dscp), (20000, 20010, 46));
        let e = Config::load(None, serde_json::json!({"port_min": 20000, "port_max": 100})).unwrap_err();
        assert!(e.contains("port range"), "{e}");
        let e = Config::load(None, serde_json::json!({"media_bind": "0.0.0.0"})).unwrap_err();
        assert!(e.contains("needs an `advertise`"), "{e}");
        let e = Config::load(None, serde_json::json!({"kernel_streams": 0})).unwrap_err();
        assert!(e.contains("kernel_streams 0 is not within"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature
    fn environment_sets_known_keys_and_ignores_others() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CHORUS_PORT_MIN", "21000");
            // What Kubernetes injects for a service named `chorus`.
            jail.set_env("CHORUS_PORT", "tcp://10.96.0.7:8080");
            jail.set_env("CHORUS_SERVICE_HOST", "10.96.0.7");
            let c = Config::load(None, serde_json::json!({})).unwrap();
            assert_eq!(c.port_min, 21000);
            Ok(())
        });
    }

    #[test]
    fn typos_in_the_config_file_are_errors() {
        let dir = std::env::temp_dir().join(format!("chorus-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "port_mni = 20000\n").unwrap();
        let e = Config::load(Some(&path), serde_json::json!({})).unwrap_err();
        assert!(e.contains("port_mni"), "{e}");
    }
}
