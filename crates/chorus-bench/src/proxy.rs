//! A TCP proxy that delays every chunk by a one-way latency plus random
//! jitter, keeping byte order, to emulate a WAN link between sites for the
//! cross-site scenario. It forwards to one upstream address.

use rand::Rng as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Options of the proxy.
#[derive(clap::Args)]
pub struct Opts {
    /// Address to listen on.
    #[arg(long)]
    pub listen: String,
    /// Address to forward to.
    #[arg(long)]
    pub to: String,
    /// One-way delay added in each direction, in milliseconds.
    #[arg(long, default_value_t = 40)]
    pub delay_ms: u64,
    /// Extra random delay of up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
}

/// Chunks in flight per direction of one connection.
const CHUNKS_IN_FLIGHT_MAX: usize = 4096;

/// Serves until killed.
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&opts.listen).await?;
    eprintln!(
        "proxy {} -> {} (+{} ms, jitter {} ms)",
        opts.listen, opts.to, opts.delay_ms, opts.jitter_ms
    );
    serve(listener, opts).await
}

async fn serve(listener: TcpListener, opts: Opts) -> anyhow::Result<()> {
    loop {
        let (down, _) = listener.accept().await?;
        let (to, delay, jitter) = (opts.to.clone(), opts.delay_ms, opts.jitter_ms);
        tokio::spawn(async move {
            let Ok(up) = TcpStream::connect(&to).await else {
                return;
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            let a = tokio::spawn(pipe(dr, uw, delay, jitter));
            let b = tokio::spawn(pipe(ur, dw, delay, jitter));
            let _ = tokio::join!(a, b);
        });
    }
}

/// Copies one direction, releasing each chunk no earlier than its arrival
/// plus the delay, and never before the chunk ahead of it.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: u64,
    jitter_ms: u64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT_MAX);
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = Instant::now();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let jitter = if jitter_ms > 0 {
            rand::rng().random_range(0..=jitter_ms)
        } else {
            0
        };
        let at = (Instant::now() + Duration::from_millis(delay_ms + jitter)).max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_arrive_in_order_and_late() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let echo_addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.expect("accept");
            let mut buf = vec![0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    return;
                }
                s.write_all(&buf[..n]).await.expect("write");
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listen = listener.local_addr().expect("addr").to_string();
        let opts = Opts {
            listen: listen.clone(),
            to: echo_addr.to_string(),
            delay_ms: 30,
            jitter_ms: 10,
        };
        tokio::spawn(serve(listener, opts));
        let mut c = TcpStream::connect(&listen).await.expect("connect");
        let started = std::time::Instant::now();
        let mut expect = Vec::new();
        for i in 0..50u8 {
            c.write_all(&[i]).await.expect("write");
            expect.push(i);
        }
        let mut got = vec![0u8; expect.len()];
        c.read_exact(&mut got).await.expect("echo");
        assert_eq!(got, expect);
        // Two passes through the proxy: at least twice the delay.
        assert!(
            started.elapsed() >= Duration::from_millis(60),
            "{:?}",
            started.elapsed()
        );
    }
}
