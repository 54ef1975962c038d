//! The accept loop and each connection's life: bans and connection caps at accept, the TLS handshake under a timeout,
//! then HTTP/1.1 or HTTP/2 with header, stream and reset limits, an idle timeout, and a graceful drain on shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::pipeline::ConnInfo;
use crate::stages::ban::canonical;
use crate::Gate;

/// Open connections per client address, with a guard that gives a place back when dropped.
#[derive(Debug, Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, u32>>,
}

#[derive(Debug)]
struct IpGuard {
    ip: IpAddr,
    table: Arc<PerIp>,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<IpGuard> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpGuard {
            ip,
            table: Arc::clone(self),
        })
    }
}

/// The client listener's shared state.
pub struct Listener {
    gate: Arc<Gate>,
    tls: Option<TlsAcceptor>,
    connections: Arc<Semaphore>,
    max_connections: u32,
    per_ip: Arc<PerIp>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener for `gate`, with TLS unless `tls` is `None` (plain HTTP on loopback).
    pub fn new(gate: Arc<Gate>, tls: Option<TlsAcceptor>) -> Listener {
        let max = gate.limits.max_connections;
        Listener {
            gate,
            tls,
            connections: Arc::new(Semaphore::new(max as usize)),
            max_connections: max,
            per_ip: Arc::new(PerIp::default()),
        }
    }

    /// Accepts until `shutdown` turns true, then waits up to `grace` for open connections to finish.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let (stream, addr) = match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ip = canonical(addr.ip());
            let metrics = &self.gate.metrics;
            if self.gate.bans.banned_for(ip).is_some() {
                metrics.connection_refused("banned");
                continue;
            }
            let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
                metrics.connection_refused("max_connections");
                continue;
            };
            let Some(ip_guard) = self.per_ip.enter(
                crate::stages::ban::client(ip, self.gate.limits.ipv6_client_prefix),
                self.gate.limits.max_connections_per_ip,
            ) else {
                metrics.connection_refused("max_connections_per_ip");
                continue;
            };
            metrics.connections.inc();
            let this = Arc::clone(&self);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                this.connection(stream, ip, shutdown, permit, ip_guard)
                    .await;
            });
        }
        drop(listener);
        let drained = tokio::time::timeout(grace, async {
            while self.connections.available_permits() < self.max_connections as usize {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("connections still open after the grace period; closing them");
        }
    }

    async fn connection(
        &self,
        stream: TcpStream,
        ip: IpAddr,
        shutdown: watch::Receiver<bool>,
        _permit: OwnedSemaphorePermit,
        _ip_guard: IpGuard,
    ) {
        let metrics = &self.gate.metrics;
        metrics.connections_open.inc();
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => {
                let info = ConnInfo {
                    ip,
                    client_certs: Arc::new(Vec::new()),
                };
                self.http(stream, info, shutdown).await;
            }
            Some(acceptor) => {
                let handshake = tokio::time::timeout(
                    self.gate.limits.handshake_timeout,
                    acceptor.accept(stream),
                )
                .await;
                match handshake {
                    Ok(Ok(tls)) => {
                        let certs = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(<[_]>::to_vec)
                            .unwrap_or_default();
                        let info = ConnInfo {
                            ip,
                            client_certs: Arc::new(certs),
                        };
                        self.http(tls, info, shutdown).await;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(client_ip = %ip, error = %err, "TLS handshake failed");
                        metrics.connection_refused("tls_handshake");
                        if self.gate.bans.strike(ip) != crate::stages::ban::Strike::Counted {
                            metrics.bans.inc();
                        }
                    }
                    Err(_) => {
                        metrics.connection_refused("handshake_timeout");
                        if self.gate.bans.strike(ip) != crate::stages::ban::Strike::Counted {
                            metrics.bans.inc();
                        }
                    }
                }
            }
        }
        metrics.connections_open.dec();
    }

    async fn http<S>(&self, stream: S, info: ConnInfo, mut shutdown: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = &self.gate.limits;
        let epoch = Instant::now();
        let progress = Arc::new(Progress::new(epoch));
        let io = TokioIo::new(Tracked {
            inner: stream,
            progress: Arc::clone(&progress),
            frames: Frames::new(),
            answer: Vec::new(),
            answered: 0,
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
            .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
            // Twice the limit: the pipeline answers lists between the two with the JSON error body of every
            // refusal (`stage_h2_headers`); past it the h2 library answers a bare 431 by itself.
            .max_header_list_size(
                u32::try_from(limits.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
            );
        let gate = Arc::clone(&self.gate);
        let ip = info.ip;
        let info = Arc::new(info);
        let conn = Arc::clone(&info);
        let requests = Arc::clone(&progress);
        let service = service_fn(move |request: Request<Incoming>| {
            let gate = Arc::clone(&gate);
            let info = Arc::clone(&info);
            // In flight from here until its answer's body is dropped (written, or the connection gone).
            let guard = InFlight::begin(Arc::clone(&requests));
            async move {
                let started = Instant::now();
                let reply = contained(gate.handle(&info, request), || {
                    gate.record_panic(&info, started)
                })
                .await;
                Ok::<_, Infallible>(reply.map(|body| Guarded {
                    body,
                    _guard: guard,
                }))
            }
        });
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let (idle, first) = (limits.idle_timeout, limits.header_timeout);
        let mut draining = false;
        let mut violation = None;
        loop {
            let (deadline, _) = progress.deadline(first, idle);
            let check_in = deadline
                .saturating_sub(epoch.elapsed())
                .max(Duration::from_millis(10));
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(client_ip = %ip, error = %err, "connection ended with an error");
                        violation = h2_violation(err.as_ref());
                    }
                    break;
                }
                // An HTTP/2 header block opened: its deadline may be sooner than the one slept to.
                () = progress.changed.notified() => {}
                _ = shutdown.wait_for(|stop| *stop), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = tokio::time::sleep(check_in) => {
                    let (deadline, reason) = progress.deadline(first, idle);
                    if epoch.elapsed() >= deadline {
                        tracing::debug!(client_ip = %ip, reason, "connection closed");
                        self.gate.metrics.connection_refused(reason);
                        return;
                    }
                }
            }
        }
        let unparsed = progress.unparsed.load(Ordering::Relaxed);
        if let Ok(status) = hyper::StatusCode::from_u16(unparsed) {
            self.gate.record_unparsed(&conn, status).await;
        }
        if let Some(reason) = violation {
            self.gate.record_h2_violation(&conn, reason).await;
        }
    }
}

/// The reason an HTTP/2 connection ended with, when the gateway ended it for the client's violation of the protocol
/// or of its limits (a GOAWAY it sent: a rapid-reset burst is `h2_enhance_your_calm`); `None` for anything else (the
/// client's own GOAWAY, a connection lost, HTTP/1).
fn h2_violation(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cause = Some(err);
    while let Some(error) = cause {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            if h2.is_remote() || h2.is_io() || !(h2.is_go_away() || h2.is_library()) {
                return None;
            }
            return Some(match h2.reason()? {
                h2::Reason::NO_ERROR | h2::Reason::CANCEL => return None,
                h2::Reason::ENHANCE_YOUR_CALM => "h2_enhance_your_calm",
                h2::Reason::FLOW_CONTROL_ERROR => "h2_flow_control_error",
                h2::Reason::FRAME_SIZE_ERROR => "h2_frame_size_error",
                h2::Reason::COMPRESSION_ERROR => "h2_compression_error",
                _ => "h2_protocol_error",
            });
        }
        cause = error.source();
    }
    None
}

/// What a connection has done, for its time limits. Only requests and the answers' bytes count: bytes a client
/// sends do not, or one byte before each idle timeout (an HTTP/2 preface or frame dripped) would hold a connection
/// open for ever without a request.
#[derive(Debug)]
struct Progress {
    epoch: Instant,
    /// When a request last began or its answer ended (nanoseconds since `epoch`).
    last_request: AtomicU64,
    /// When bytes were last written to the client (nanoseconds since `epoch`).
    last_write: AtomicU64,
    /// Requests begun (0: none yet).
    begun: AtomicU64,
    /// Requests whose answers are not yet written.
    in_flight: AtomicU64,
    /// The status of hyper's own answer to a request it could not parse (0: none).
    unparsed: AtomicU16,
    /// When an HTTP/2 header block the client left unfinished opened (nanoseconds since `epoch`, plus one; 0: none
    /// open). hyper has no header timeout for HTTP/2 past the first request: this is what holds its later ones to it.
    header_block: AtomicU64,
    /// Told when such a block opens, so that the connection's timer is set again.
    changed: tokio::sync::Notify,
}

impl Progress {
    fn new(epoch: Instant) -> Progress {
        Progress {
            epoch,
            last_request: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            begun: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            unparsed: AtomicU16::new(0),
            header_block: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the connection is to be closed (since `epoch`), and why: without a first request within `first` (the
    /// header timeout, whatever the protocol); with an HTTP/2 header block left unfinished for `first`; idle, no
    /// request in flight, for `idle` since the last began or ended; with requests in flight, when no byte of an
    /// answer has been written for `idle` (a client that stopped reading).
    fn deadline(&self, first: Duration, idle: Duration) -> (Duration, &'static str) {
        let at = |nanos: &AtomicU64| Duration::from_nanos(nanos.load(Ordering::Relaxed));
        if self.begun.load(Ordering::Relaxed) == 0 {
            return (first, "header_timeout");
        }
        let mut last = at(&self.last_request);
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            last = last.max(at(&self.last_write));
        }
        let idle = (last.saturating_add(idle), "idle_timeout");
        match self.header_block.load(Ordering::Relaxed) {
            0 => idle,
            opened => {
                let cut = Duration::from_nanos(opened - 1).saturating_add(first);
                if cut < idle.0 {
                    (cut, "header_timeout")
                } else {
                    idle
                }
            }
        }
    }

    /// Takes what the client's latest bytes left of its HTTP/2 header blocks: `open` whether one is unfinished.
    fn header_block(&self, open: bool) {
        match (open, self.header_block.load(Ordering::Relaxed)) {
            (true, 0) => {
                self.header_block
                    .store(self.now().saturating_add(1), Ordering::Relaxed);
                self.changed.notify_one();
            }
            (false, opened) if opened != 0 => self.header_block.store(0, Ordering::Relaxed),
            _ => {}
        }
    }
}

/// A request in flight, from its start until its answer's body is dropped.
#[derive(Debug)]
struct InFlight(Arc<Progress>);

impl InFlight {
    fn begin(progress: Arc<Progress>) -> InFlight {
        progress.begun.fetch_add(1, Ordering::Relaxed);
        progress.in_flight.fetch_add(1, Ordering::Relaxed);
        progress
            .last_request
            .store(progress.now(), Ordering::Relaxed);
        InFlight(progress)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.last_request.store(self.0.now(), Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request in flight until hyper is done with it.
#[derive(Debug)]
struct Guarded<B> {
    body: B,
    _guard: InFlight,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A stream that records when bytes were last written to the client ([`Progress`]), and gives hyper's own answer to
/// a request it could not parse the JSON body every other refusal has ([`crate::pipeline::unparsed_answer`]).
#[derive(Debug)]
struct Tracked<S> {
    inner: S,
    progress: Arc<Progress>,
    /// The client's HTTP/2 frames, as far as its header blocks.
    frames: Frames,
    /// That answer, rewritten, and how much of it is written.
    answer: Vec<u8>,
    answered: usize,
}

impl<S: AsyncWrite + Unpin> Tracked<S> {
    fn touch(&self) {
        self.progress
            .last_write
            .store(self.progress.now(), Ordering::Relaxed);
    }

    /// Takes hyper's bytes `data` for a rewritten answer when they are its own answer to an unparsed request: hyper
    /// is told they were written, and the rewritten answer is written in their place, before anything else.
    fn rewrite(&mut self, data: &[u8]) -> bool {
        if !self.answer.is_empty() {
            return false;
        }
        match crate::pipeline::unparsed_answer(data) {
            Some((status, answer)) => {
                self.progress
                    .unparsed
                    .store(status.as_u16(), Ordering::Relaxed);
                self.answer = answer;
                true
            }
            None => false,
        }
    }

    /// Writes through `write`, after what is left of a rewritten answer; or takes `whole` (everything hyper writes
    /// now, when it is in one buffer) for a rewritten answer, whose bytes that cannot be written now are written at
    /// the next write, flush or shutdown.
    fn write_with(
        &mut self,
        cx: &mut Context<'_>,
        whole: Option<&[u8]>,
        write: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        if let Some(data) = whole.filter(|data| self.rewrite(data)) {
            if let Poll::Ready(Err(err)) = self.poll_answer(cx) {
                return Poll::Ready(Err(err));
            }
            return Poll::Ready(Ok(data.len()));
        }
        std::task::ready!(self.poll_answer(cx))?;
        let poll = write(Pin::new(&mut self.inner), cx);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    /// Writes what is left of a rewritten answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some(rest) = self.answer.get(self.answered..).filter(|r| !r.is_empty()) {
            let n = match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            };
            self.answered += n;
            self.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), false) = (&polled, self.frames.is_off()) {
            let this = &mut *self;
            let open = this
                .frames
                .feed(buf.filled().get(before..).unwrap_or_default());
            this.progress.header_block(open);
        }
        polled
    }
}

/// The HTTP/2 connection preface, which every HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Follows a client's HTTP/2 frames through the bytes it sends, only as far as telling whether a header block is
/// unfinished: from the first byte of a HEADERS frame to the end of the frame that carries END_HEADERS (that HEADERS
/// frame, or its last CONTINUATION), and while a frame's 9-byte head is incomplete. Payloads are skipped by their
/// length, unread. A connection whose first bytes are not the preface (HTTP/1) is followed no further.
#[derive(Debug)]
enum Frames {
    /// Matching the preface: how many of its bytes have come.
    Preface(usize),
    /// Past the preface.
    Http2(FrameCursor),
    /// Not HTTP/2.
    Off,
}

/// Where the client is in its HTTP/2 frames.
#[derive(Debug, Default)]
struct FrameCursor {
    /// The head of the frame being read, and how much of it has come.
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// The current frame is a HEADERS or CONTINUATION frame, and whether it carries END_HEADERS.
    headers: bool,
    ends_block: bool,
    /// A header block has begun and no frame has ended it.
    block: bool,
}

impl Frames {
    fn new() -> Frames {
        Frames::Preface(0)
    }

    fn is_off(&self) -> bool {
        matches!(self, Frames::Off)
    }

    /// Takes the client's next bytes; whether a header block is unfinished after them.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        match self {
            Frames::Off => false,
            Frames::Http2(cursor) => cursor.feed(bytes),
            Frames::Preface(matched) => {
                let want = PREFACE.get(*matched..).unwrap_or_default();
                let n = want.len().min(bytes.len());
                if bytes.get(..n) != want.get(..n) {
                    *self = Frames::Off;
                    return false;
                }
                *matched += n;
                if *matched < PREFACE.len() {
                    return false;
                }
                let mut cursor = FrameCursor::default();
                let open = cursor.feed(bytes.get(n..).unwrap_or_default());
                *self = Frames::Http2(cursor);
                open
            }
        }
    }
}

impl FrameCursor {
    const HEADERS: u8 = 0x1;
    const CONTINUATION: u8 = 0x9;
    const END_HEADERS: u8 = 0x4;

    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = self.left.min(bytes.len());
                self.left -= n;
                bytes = bytes.get(n..).unwrap_or_default();
                if self.left == 0 {
                    self.end_frame();
                }
                continue;
            }
            let n = (self.head.len() - self.have).min(bytes.len());
            if let (Some(to), Some(from)) =
                (self.head.get_mut(self.have..self.have + n), bytes.get(..n))
            {
                to.copy_from_slice(from);
            }
            self.have += n;
            bytes = bytes.get(n..).unwrap_or_default();
            if self.have == self.head.len() {
                self.have = 0;
                let [l0, l1, l2, kind, flags, ..] = self.head;
                self.left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                self.headers = kind == Self::HEADERS || kind == Self::CONTINUATION;
                self.ends_block = flags & Self::END_HEADERS != 0;
                if self.headers {
                    self.block = true;
                }
                if self.left == 0 {
                    self.end_frame();
                }
            }
        }
        self.block || self.have > 0
    }

    fn end_frame(&mut self) {
        if self.headers && self.ends_block {
            self.block = false;
        }
        self.headers = false;
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_with(cx, Some(data), |inner, cx| inner.poll_write(cx, data))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        let whole = match (filled.next(), filled.next()) {
            (Some(only), None) => Some(&**only),
            _ => None,
        };
        self.write_with(cx, whole, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Connections the admin listener holds at once.
const ADMIN_CONNECTIONS: usize = 64;

/// A plain-HTTP listener for the admin endpoints (metrics, health).
pub async fn serve_admin(
    gate: Arc<Gate>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    // A scraper or two, and an operator: a flood of connections is dropped at accept rather than held, so that it
    // cannot use up the process's file descriptors (and with them the public listener's).
    let open = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            continue;
        };
        let gate = Arc::clone(&gate);
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request: Request<Incoming>| {
                let gate = Arc::clone(&gate);
                async move { Ok::<_, Infallible>(crate::admin::handle(&gate, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
        });
    }
}

/// A request's answer, or 500 if handling it panicked, after `recording` that (its metrics and audit record). The
/// gateway's own code does not panic (its lints deny the ways to); a dependency might, on some request. Without this
/// the panic would end the connection with no answer, and every other request on it (HTTP/2 streams) with it, and
/// leave no audit record; the model's own panics are caught closer, where the request's record is complete
/// (`stages::infer`).
async fn contained<R: std::future::Future<Output = ()>>(
    handling: impl std::future::Future<Output = crate::pipeline::Reply>,
    recording: impl FnOnce() -> R,
) -> crate::pipeline::Reply {
    use futures_util::FutureExt as _;
    match std::panic::AssertUnwindSafe(handling).catch_unwind().await {
        Ok(reply) => reply,
        Err(_) => {
            tracing::error!("handling a request panicked: answered 500");
            recording().await;
            crate::pipeline::json_reply(
                hyper::StatusCode::INTERNAL_SERVER_ERROR,
                crate::pipeline::error_body("internal error"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// The positive case, a GOAWAY the gateway sent, has no public constructor: the rapid-reset test in
    /// `tests/gateway.rs` covers it.
    #[test]
    fn errors_other_than_the_gateways_own_goaway_are_no_violation() {
        for reason in [
            h2::Reason::ENHANCE_YOUR_CALM,
            h2::Reason::PROTOCOL_ERROR,
            h2::Reason::NO_ERROR,
        ] {
            assert_eq!(h2_violation(&h2::Error::from(reason)), None);
        }
        assert_eq!(h2_violation(&std::io::Error::other("HTTP/1")), None);
    }

    #[tokio::test]
    async fn a_panic_while_handling_is_answered_500_and_recorded() {
        let recorded = std::sync::atomic::AtomicUsize::new(0);
        let record = || async {
            recorded.fetch_add(1, Ordering::SeqCst);
        };
        let fine = contained(
            async { crate::pipeline::json_reply(hyper::StatusCode::OK, b"{}".to_vec()) },
            record,
        )
        .await;
        assert_eq!(fine.status(), hyper::StatusCode::OK);
        assert_eq!(recorded.load(Ordering::SeqCst), 0);
        let broken = contained(
            async {
                tokio::task::yield_now().await;
                panic!("a dependency's bug")
            },
            record,
        )
        .await;
        assert_eq!(recorded.load(Ordering::SeqCst), 1);
        assert_eq!(broken.status(), hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let body = broken.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"error":"internal error"}"#);
    }

    /// An HTTP/2 frame: its 9-byte head and payload.
    fn frame(kind: u8, flags: u8, stream: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut out = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            flags,
            0,
            0,
            0,
            stream,
        ];
        out.extend_from_slice(payload);
        out
    }

    /// Whether a header block is unfinished after each of `parts`, fed in turn, and again byte by byte.
    fn opens(parts: &[Vec<u8>]) -> Vec<bool> {
        let mut frames = Frames::new();
        let whole: Vec<bool> = parts.iter().map(|part| frames.feed(part)).collect();
        let mut frames = Frames::new();
        let dripped: Vec<bool> = parts
            .iter()
            .map(|part| part.iter().fold(false, |_, byte| frames.feed(&[*byte])))
            .collect();
        assert_eq!(whole, dripped, "fed whole and byte by byte");
        whole
    }

    #[test]
    fn frames_tell_an_unfinished_header_block() {
        let (headers, continuation, settings, data) = (0x1, 0x9, 0x4, 0x0);
        let block = vec![0x82; 40];
        let parts = [
            PREFACE.to_vec(),
            frame(settings, 0, 0, &[0; 6]),
            // A whole request's headers, END_HEADERS on the HEADERS frame.
            frame(headers, 0x4 | 0x1, 1, &block),
            // One in two frames: open until the CONTINUATION that ends it.
            frame(headers, 0, 3, &block),
            frame(continuation, 0, 3, &block),
            frame(continuation, 0x4, 3, &block),
            // A body's DATA frame is not a header block.
            frame(data, 0x1, 3, &[7; 100]),
            // A HEADERS frame with END_HEADERS but its payload cut short, then the rest.
            frame(headers, 0x4, 5, &block)[..20].to_vec(),
            frame(headers, 0x4, 5, &block)[20..].to_vec(),
            // A frame's head cut short.
            frame(data, 0, 5, &[])[..4].to_vec(),
            frame(data, 0, 5, &[])[4..].to_vec(),
        ];
        assert_eq!(
            opens(&parts),
            [false, false, false, true, true, false, false, true, false, true, false]
        );
    }

    #[test]
    fn http1_is_not_followed() {
        let mut frames = Frames::new();
        assert!(!frames.feed(b"GET / HTTP/1.1\r\n"));
        assert!(frames.is_off());
        // Not even bytes that would open a block over HTTP/2.
        assert!(!frames.feed(&frame(0x1, 0, 1, &[0x82])));
        // A preface cut short is not HTTP/2 yet, and a wrong byte after it makes it HTTP/1.
        let mut frames = Frames::new();
        assert!(!frames.feed(&PREFACE[..10]));
        assert!(!frames.is_off());
        assert!(!frames.feed(b"X"));
        assert!(frames.is_off());
    }

    #[test]
    fn an_unfinished_header_block_brings_the_deadline_to_the_header_timeout() {
        let progress = Progress::new(Instant::now());
        let (first, idle) = (Duration::from_secs(5), Duration::from_secs(60));
        // Past the first request, none in flight: idle.
        progress.begun.store(1, Ordering::Relaxed);
        assert_eq!(progress.deadline(first, idle).1, "idle_timeout");
        progress.header_block(true);
        let (cut, reason) = progress.deadline(first, idle);
        assert_eq!(reason, "header_timeout");
        assert!(cut <= progress.epoch.elapsed() + first, "{cut:?}");
        // A later read that leaves it open keeps the time it opened.
        let opened = progress.header_block.load(Ordering::Relaxed);
        progress.header_block(true);
        assert_eq!(progress.header_block.load(Ordering::Relaxed), opened);
        progress.header_block(false);
        assert_eq!(progress.deadline(first, idle).1, "idle_timeout");
    }
}
