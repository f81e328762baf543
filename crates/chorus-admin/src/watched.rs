//! A connection's activity, for the HTTP listener's idle and write-stall
//! timeouts: the stream wrapper records when bytes last moved and since
//! when a write has been waiting on the client, and the request counter
//! says whether a handler is at work (a connection with a request in
//! flight is never idle, however long the handler takes).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What one connection has been doing.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` when bytes last moved.
    last_ms: AtomicU64,
    /// Milliseconds since `epoch` (plus one) since a write has waited; 0: none.
    blocked_ms: AtomicU64,
    /// Requests received whose response has not started.
    in_flight: AtomicUsize,
}

/// Why a connection was closed by its watchdog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stalled {
    /// No request for the idle timeout.
    Idle,
    /// A write waited on the client longer than the write timeout.
    Write,
}

impl Activity {
    /// A connection that just opened.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            blocked_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Counts a request until the guard drops (its response has started).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether the connection is stalled: idle with no request in flight
    /// for `idle_ms`, or with a write waiting for `write_ms`.
    pub fn stalled(&self, idle_ms: u64, write_ms: u64) -> Option<Stalled> {
        let now = self.now_ms();
        let blocked = self.blocked_ms.load(Ordering::Relaxed);
        if blocked != 0 && now.saturating_sub(blocked - 1) >= write_ms {
            return Some(Stalled::Write);
        }
        let idle = self.in_flight.load(Ordering::Relaxed) == 0 && blocked == 0;
        let quiet = now.saturating_sub(self.last_ms.load(Ordering::Relaxed));
        (idle && quiet >= idle_ms).then_some(Stalled::Idle)
    }

    fn write_poll<T>(&self, p: &Poll<T>) {
        match p {
            Poll::Pending => {
                let since = self.now_ms() + 1;
                let _ = self
                    .blocked_ms
                    .compare_exchange(0, since, Ordering::Relaxed, Ordering::Relaxed);
            }
            Poll::Ready(_) => {
                self.blocked_ms.store(0, Ordering::Relaxed);
                self.touch();
            }
        }
    }
}

/// A request in flight (see [`Activity::request`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that reports its activity.
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    /// Wraps `inner`, reporting to `activity`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Watched<T> {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let p = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(p, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        p
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, data);
        self.activity.write_poll(&p);
        p
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.write_poll(&p);
        p
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.write_poll(&p);
        p
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn quiet_connections_go_idle_and_busy_ones_do_not() {
        let a = Activity::new();
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(a.stalled(1000, 5000), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(a.stalled(1000, 5000), Some(Stalled::Idle));
        // A handler at work, however long, is not idleness.
        let req = a.request();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(a.stalled(1000, 5000), None);
        drop(req);
        assert_eq!(a.stalled(1000, 5000), None, "the response just started");
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(a.stalled(1000, 5000), Some(Stalled::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_stalls_the_write() {
        let a = Activity::new();
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut w = Watched::new(ours, a.clone());
        // Fill the pipe: the next write waits on the client.
        w.write_all(&[7; 64]).await.expect("fits");
        let blocked = tokio::time::timeout(Duration::from_millis(10), w.write_all(&[7; 8])).await;
        assert!(blocked.is_err(), "the pipe is full");
        let _req = a.request();
        // The write has waited 10 ms already (the paused clock jumped
        // through the timeout above).
        tokio::time::advance(Duration::from_millis(4989)).await;
        assert_eq!(a.stalled(60_000, 5000), None);
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(a.stalled(60_000, 5000), Some(Stalled::Write));
        // Once the client reads, the write completes and the stall clears.
        let mut sink = [0u8; 64];
        theirs.read_exact(&mut sink).await.expect("read");
        w.write_all(&[7; 8]).await.expect("room now");
        assert_eq!(a.stalled(60_000, 5000), None);
    }
}
