//! The small runtime trait the drivers are generic over: accepting and opening TCP streams,
//! and reading the wall clock. Production uses [`TokioNet`]; the simulator supplies a turmoil
//! implementation, so the same driver code runs over simulated sockets. (Monotonic time comes
//! from `tokio::time`, which turmoil already simulates.) No Cargo feature switches between the
//! two: features unify across a workspace and could leak simulated types into the binary.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

pub trait Net: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Listener: Listener<Stream = Self::Stream>;

    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Wall clock, milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;

    /// Runs a driver whose latency matters more than anything else's — the coinserver driver,
    /// which submits found blocks — where no amount of stratum work can delay it. The result
    /// arrives on the receiver (dropped unsent if the driver panicked). By default an ordinary
    /// task; [`TokioNet`] gives it an OS thread and a runtime of its own.
    fn spawn_priority<F>(&self, name: &str, fut: F) -> oneshot::Receiver<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let _ = name;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TokioNet;

#[derive(Debug)]
pub struct TokioListener(pub tokio::net::TcpListener);

impl Listener for TokioListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (s, a) = self.0.accept().await?;
        // Small stratum lines must leave at once; batching is done by the writer.
        let _ = s.set_nodelay(true);
        Ok((s, a))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Net for TokioNet {
    type Stream = tokio::net::TcpStream;
    type Listener = TokioListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<TokioListener> {
        Ok(TokioListener(tokio::net::TcpListener::bind(addr).await?))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }

    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// The stratum ports keep the shared runtime's worker threads busy under a share flood; a
    /// found block must not wait for one of them to be free, so its driver (and the RPC calls
    /// it spawns) run on a current-thread runtime on their own OS thread, which the kernel
    /// schedules as soon as a block wakes it. Falls back to an ordinary task if the thread or
    /// its runtime cannot be created.
    fn spawn_priority<F>(&self, name: &str, fut: F) -> oneshot::Receiver<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let (fut, tx) = match rt {
            Ok(rt) => {
                let slot = std::sync::Arc::new(std::sync::Mutex::new(Some((fut, tx))));
                let taken = slot.clone();
                let spawned = std::thread::Builder::new()
                    .name(name.to_owned())
                    .spawn(move || {
                        let job = taken.lock().ok().and_then(|mut j| j.take());
                        if let Some((fut, tx)) = job {
                            let _ = tx.send(rt.block_on(fut));
                        }
                    });
                match spawned {
                    Ok(_) => return rx,
                    // The closure never ran: take the driver back and run it as a task.
                    Err(e) => {
                        tracing::warn!(error = %e, "no thread for {name}: running it as a task");
                        match slot.lock().ok().and_then(|mut j| j.take()) {
                            Some(job) => job,
                            None => return rx,
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no runtime for {name}: running it as a task");
                (fut, tx)
            }
        };
        tokio::spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx
    }
}

/// A stream whose first bytes were already read from it (past a PROXY protocol header): reads
/// give those back first, then what the stream has. Writes go straight to the stream.
#[derive(Debug)]
pub struct Prefixed<S> {
    early: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(early: Vec<u8>, inner: S) -> Self {
        Prefixed {
            early,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let left = &this.early[this.pos..];
        if left.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = left.len().min(buf.remaining());
        buf.put_slice(&left[..n]);
        this.pos += n;
        if this.pos == this.early.len() {
            this.early = Vec::new();
            this.pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
