//! `chorus serve`: configuration, workers, HTTP API, signals. Nothing else.

use chorus::config::Config;
use chorus::control::{http, State};
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "RTP media relay for SIP proxies, driven over HTTP"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay. Every setting can also come from a TOML file
    /// (--config) or a CHORUS_<SETTING> environment variable (e.g.
    /// CHORUS_PORT_MIN=20000); flags win over both.
    Serve(ServeArgs),
}

#[derive(Parser, Serialize)]
struct ServeArgs {
    /// TOML file with settings (same names as the flags, with underscores).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// HTTP API listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_listen: Option<SocketAddr>,
    /// rtpengine ng protocol over UDP [default: 127.0.0.1:22222]; also on HTTP POST /ng.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ng_listen: Option<SocketAddr>,
    /// Address media sockets bind to [default: 127.0.0.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    media_bind: Option<IpAddr>,
    /// Address written into SDP when it differs from --media-bind (NAT, cloud).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise: Option<IpAddr>,
    /// Lowest media port [default: 30000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    port_min: Option<u16>,
    /// Highest media port [default: 39999].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    port_max: Option<u16>,
    /// Media worker threads; 0 = one per core [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<usize>,
    /// Control-plane threads (HTTP, ng, Redis, streams) [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    control_threads: Option<usize>,
    /// SO_RCVBUF of media sockets in bytes; 0 = OS default [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_recv_buffer: Option<usize>,
    /// SO_SNDBUF of media sockets in bytes; 0 = OS default [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_send_buffer: Option<usize>,
    /// DSCP of outgoing media, 0..63 [default: 46, EF].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dscp: Option<u8>,
    /// Seconds without media before a call is torn down; 0 = never [default: 60].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    media_timeout: Option<u64>,
    /// URL that gets a JSON POST when chorus ends a call itself (media timeout).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<String>,
    /// PEM certificate for DTLS with browsers [default: one made at start].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dtls_certificate: Option<String>,
    /// PEM private key of `--dtls-certificate`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dtls_private_key: Option<String>,
    /// Bearer token the /v1 API requires (prefer CHORUS_TOKEN: flags show in `ps`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// Log format: text or json [default: text]. Log level: CHORUS_LOG (e.g. debug).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
    /// Seconds to wait for calls to end after SIGTERM [default: 30].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_timeout: Option<u64>,
    /// Calls held at most [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_calls: Option<usize>,
    /// Participants per conference at most [default: 1000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_participants: Option<usize>,
    /// From this many participants on, a conference's new participants are read and sent to by the other media workers; 0 = never [default: 64].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mixer_offload_min: Option<usize>,
    /// m= lines per SDP at most (bounds streams per call) [default: 16].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_sdp_media: Option<usize>,
    /// Control requests per second per source IP; 0 = no limit [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_requests_per_second: Option<u32>,
    /// WebSocket audio streams to applications at most [default: 256].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_streams: Option<usize>,
    /// PEM certificates trusted for wss:// streams besides Mozilla's roots [default: none].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_ca_file: Option<String>,
    /// Directory recordings are written to [default: recordings].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    recording_dir: Option<String>,
    /// Directory of the files played into conferences [default: media].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    media_dir: Option<String>,
    /// Redis for call records and heartbeats, redis://host:port/db [default: none, in memory].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_url: Option<String>,
    /// This instance's name among its peers [default: the host name].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<String>,
    /// Milliseconds between heartbeats; dead after three missed [default: 200].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_heartbeat_ms: Option<u64>,
    /// Seconds a call's record outlives its owner's last refresh [default: 120].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_record_ttl: Option<u64>,
    /// Base URL peers reach this instance's HTTP API at [default: from --http-listen].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_http: Option<String>,
    /// Forward latched plain RTP in the kernel (eBPF): auto, on (or refuse to start), off [default: auto].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_forward: Option<chorus::offload::Mode>,
    /// Stream directions forwarded in the kernel at most; the rest relay in userspace [default: 65536].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_streams: Option<u32>,
    /// How workers read and send call sockets: uring (io_uring, epoll where the kernel refuses it), or epoll [default: uring].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    io: Option<chorus::config::IoMode>,
}

/// mimalloc: the control plane allocates per request (bencode, SDP, JSON);
/// against glibc's malloc it took 0.81-0.84x the CPU per call set-up and
/// 1.20-1.26x the set-ups per second in alternating rounds, for 9-18 MB
/// more resident in one run each (BENCHMARKS.md).
/// The packet path allocates nothing either way.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let Cmd::Serve(args) = cli.command;
    let config = match Config::load(args.config.as_deref(), &args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chorus: {e}");
            std::process::exit(2);
        }
    };
    init_logging(&config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.control_threads.clamp(1, 64))
        .thread_name("chorus-control")
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    if let Err(e) = runtime.block_on(serve(config)) {
        tracing::error!(error = %e, "chorus stopped");
        std::process::exit(1);
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHORUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a log file.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(config: Config) -> std::io::Result<()> {
    let listen = config.http_listen;
    let drain_timeout = Duration::from_secs(config.drain_timeout);
    let files = chorus::worker::ports::raise_open_files_limit();
    let started = State::start(config)?;
    let state = started.state.clone();
    let range = (state.config.port_max as usize + 1).saturating_sub(state.config.port_min as usize);
    let parkable = chorus::worker::ports::park_limit_for(files, range * state.home.interfaces.len());
    chorus::worker::ports::set_park_limit(parkable);
    tokio::spawn(chorus::control::lifecycle::pump_worker_events(
        state.clone(),
        started.events,
    ));
    tokio::spawn(chorus::control::streams::pump_events(
        state.clone(),
        started.stream_events,
    ));
    if let Some(store) = &state.store {
        chorus::control::replicate::claim_name(store, &state.boot)
            .await
            .map_err(std::io::Error::other)?;
        tracing::info!(instance = %store.instance, "redis: writing call records and heartbeats");
        tokio::spawn(chorus::control::replicate::run(state.clone()));
    }
    if let Some(queue) = started.callback_queue {
        tokio::spawn(chorus::control::callbacks::deliver(state.clone(), queue));
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    if let Some(ng) = state.config.ng_listen {
        let socket = tokio::net::UdpSocket::bind(ng).await?;
        tracing::info!(%ng, "ng protocol listening (UDP)");
        tokio::spawn(chorus::control::ng::serve_udp(state.clone(), socket));
    }
    tracing::info!(
        http = %listen,
        workers = state.workers.len(),
        interfaces = ?state.home.interfaces,
        ports = format!("{}-{}", state.config.port_min, state.config.port_max),
        open_files_limit = files,
        parkable,
        "chorus listening"
    );
    let s = state.clone();
    let shutdown = async move {
        wait_for_signal().await;
        tracing::info!(calls = s.call_count(), "draining: new calls refused");
        tokio::select! {
            _ = chorus::control::lifecycle::drain(&s, Instant::now() + drain_timeout) => {}
            _ = wait_for_signal() => tracing::warn!("second signal: stopping now"),
        }
    };
    let app = http::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    for w in &state.workers {
        let _ = w.send(chorus::worker::Command::Shutdown);
    }
    for t in started.threads {
        let _ = t.join();
    }
    tracing::info!("chorus stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
