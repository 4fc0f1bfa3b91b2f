//! A WebSocket server standing for an application that chorus streams
//! audio to (tokio-tungstenite), and helpers to read what it gets.

use super::{pcmu, rtp};
use base64::Engine as _;
use chorus::media::codec::g711::Law;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// One connection chorus made to the application.
pub struct Conn {
    pub rx: mpsc::UnboundedReceiver<Message>,
    pub tx: mpsc::UnboundedSender<Message>,
    pub headers: Vec<(String, String)>,
}

impl Conn {
    pub async fn next(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a message within 5 s")
            .expect("the connection is open")
    }

    /// The next JSON text message.
    pub async fn json(&mut self) -> Value {
        loop {
            match self.next().await {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
                Message::Close(_) => panic!("closed"),
                _ => {}
            }
        }
    }

    pub fn send(&self, v: Value) {
        let _ = self.tx.send(Message::Text(v.to_string().into()));
    }
}

/// A WebSocket server: each connection chorus makes comes out of the receiver.
pub async fn ws_app() -> (String, mpsc::UnboundedReceiver<Conn>) {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/media", listener.local_addr().unwrap());
    let (conns_tx, conns) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let headers = Arc::new(Mutex::new(Vec::new()));
            let h = headers.clone();
            #[allow(clippy::result_large_err)] // tungstenite's callback type
            let cb = move |req: &Request, resp: Response| {
                let mut h = h.lock().unwrap();
                for (k, v) in req.headers() {
                    h.push((k.to_string(), v.to_str().unwrap_or("").to_string()));
                }
                Ok(resp)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                continue;
            };
            let (mut sink, mut stream) = ws.split();
            let (in_tx, rx) = mpsc::unbounded_channel();
            let (tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
            tokio::spawn(async move {
                while let Some(Ok(m)) = stream.next().await {
                    let _ = in_tx.send(m);
                }
            });
            tokio::spawn(async move {
                while let Some(m) = out_rx.recv().await {
                    let close = matches!(m, Message::Close(_));
                    if sink.send(m).await.is_err() || close {
                        return;
                    }
                }
            });
            let headers = headers.lock().unwrap().clone();
            let _ = conns_tx.send(Conn { rx, tx, headers });
        }
    });
    (url, conns)
}

pub async fn accept(conns: &mut mpsc::UnboundedReceiver<Conn>) -> Conn {
    tokio::time::timeout(Duration::from_secs(5), conns.recv())
        .await
        .expect("chorus connects within 5 s")
        .unwrap()
}

/// Sends `n` packets of a tone from `sock` to `to` in real time.
pub fn send_tone(sock: UdpSocket, to: SocketAddr, freq: f32, n: usize, ssrc: u32) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..n {
            let p = rtp(0, i as u16, i as u32 * 160, ssrc, &pcmu(freq, i * 160));
            let _ = sock.send_to(&p, to);
            std::thread::sleep(
                (start + Duration::from_millis(20 * (i as u64 + 1))).saturating_duration_since(Instant::now()),
            );
        }
    })
}

pub fn mulaw_payload(m: &Value) -> Vec<f32> {
    let b = base64::engine::general_purpose::STANDARD
        .decode(m["media"]["payload"].as_str().expect("payload"))
        .expect("base64");
    let mut pcm = vec![0i16; b.len()];
    Law::Ulaw.decode(&b, &mut pcm);
    pcm.into_iter().map(|s| s as f32 / 32768.0).collect()
}
