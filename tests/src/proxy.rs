//! A TCP proxy that can fall silent: [`Proxy::freeze`] makes every connection open at that
//! moment stop forwarding in both directions *without closing* — what a vanished host, a
//! stalled load balancer or a frozen Redis looks like from the client. Connections opened
//! afterwards are forwarded normally, so a client that gives a silent connection up and
//! reconnects recovers; one that waits on it never does. [`Proxy::reset`] then closes every
//! connection open at that moment with a TCP reset (RST), as a rebooted host or a NAT that
//! forgot them would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    /// Bumped by [`Proxy::reset`]: every connection accepted before it closes with RST.
    reset: tokio::sync::watch::Sender<u64>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Forwards 127.0.0.1:<free port> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let (all, count) = (frozen.clone(), connections.clone());
        let reset = tokio::sync::watch::Sender::new(0u64);
        let resets = reset.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                // Closed with RST, not FIN, when dropped.
                let _ = client.set_zero_linger();
                let _ = server.set_zero_linger();
                count.fetch_add(1, Ordering::SeqCst);
                let flag = Arc::new(AtomicBool::new(false));
                all.lock().unwrap().push(flag.clone());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let generation = *resets.borrow();
                tokio::spawn(pump(cr, sw, flag.clone(), resets.subscribe(), generation));
                tokio::spawn(pump(sr, cw, flag, resets.subscribe(), generation));
            }
        });
        Self { addr, frozen, reset, connections, task }
    }

    /// `redis://` URL through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Every connection open now stops forwarding, and stays open.
    pub fn freeze(&self) {
        for flag in self.frozen.lock().unwrap().iter() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Every connection open now is closed with a TCP reset (frozen ones included); later ones
    /// are forwarded normally.
    pub fn reset(&self) {
        self.frozen.lock().unwrap().clear();
        self.reset.send_modify(|generation| *generation += 1);
    }

    /// How many connections the proxy has accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    mut reset: tokio::sync::watch::Receiver<u64>,
    generation: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // Returns (dropping both halves: RST, their linger being zero) once reset.
    let mut was_reset = async move || {
        let _ = reset.wait_for(|g| *g > generation).await;
    };
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = was_reset() => return,
        };
        if frozen.load(Ordering::SeqCst) {
            // Silent from now on: hold both sockets open, forward nothing, until reset.
            was_reset().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
