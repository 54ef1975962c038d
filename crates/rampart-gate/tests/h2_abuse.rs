//! The gateway's limits and timeouts that `gateway.rs` tests for HTTP/1.1, over HTTP/2 on TLS (ALPN h2): slowloris
//! headers, silent connections, slow and oversized bodies, CONTINUATION, PING and SETTINGS floods, compressed bodies.
//! The abuse the `h2` client cannot express is written as raw frames over the TLS stream. Every case is bounded in
//! time, and checks that a well-behaved client is still served.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::time::Duration;

use bytes::Bytes;
use hyper::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

mod sockets;
use sockets::*;

// ---------- HTTP/2 with the h2 client ----------

/// An infer request over HTTP/2 with `headers`, its body to be sent on the stream.
fn h2_infer(key: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut request = Request::post("https://localhost/v2/models/digits/infer")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap()
}

/// Sends `request` (its body to follow on the returned stream).
async fn h2_send(
    client: h2::client::SendRequest<Bytes>,
    request: Request<()>,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut client = tokio::time::timeout(Duration::from_secs(5), client.ready())
        .await
        .unwrap()
        .unwrap();
    client.send_request(request, false).unwrap()
}

/// An HTTP/2 answer's status and body, or `None` if the stream was reset or `limit` passed.
async fn h2_answer(answer: h2::client::ResponseFuture, limit: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + limit;
    let response = tokio::time::timeout_at(deadline, answer).await.ok()?.ok()?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout_at(deadline, body.data()).await.ok()? {
        text.extend_from_slice(&chunk.ok()?);
    }
    Some((status, String::from_utf8_lossy(&text).into_owned()))
}

// ---------- HTTP/2 as raw frames ----------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

type Writer = tokio::io::WriteHalf<TlsStream<TcpStream>>;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with a `prefix`-bit prefix, its first byte's other bits `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A literal header field without indexing, with a literal name, no Huffman coding.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00];
    hpack_int(&mut out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(&mut out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
    out
}

fn request_block(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    [
        (":method", method),
        (":scheme", "https"),
        (":path", path),
        (":authority", "localhost"),
    ]
    .iter()
    .chain(extra)
    .flat_map(|(name, value)| literal(name, value))
    .collect()
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

#[derive(Debug)]
enum End {
    Closed,
    TimedOut,
}

/// The frames the server sends on a raw connection.
#[derive(Debug)]
struct Frames {
    reader: tokio::io::ReadHalf<TlsStream<TcpStream>>,
    buf: Vec<u8>,
}

impl Frames {
    async fn next(&mut self, deadline: Instant) -> Result<Frame, End> {
        loop {
            if self.buf.len() >= 9 {
                let length =
                    u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + length {
                    let frame = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                        payload: self.buf[9..9 + length].to_vec(),
                    };
                    self.buf.drain(..9 + length);
                    return Ok(frame);
                }
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.reader.read(&mut chunk)).await {
                Err(_) => return Err(End::TimedOut),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(End::Closed),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// What the server did on a raw connection while it was watched.
#[derive(Debug, Default)]
struct Seen {
    /// When the server closed the connection, counted from the watch's start; `None`: still open at its end.
    closed_after: Option<Duration>,
    /// The error code of the server's GOAWAY, if it sent one.
    goaway: Option<u32>,
    pongs: usize,
    settings_acks: usize,
    /// Streams the server answered (a HEADERS frame on them).
    answered: Vec<u32>,
}

/// Reads the server's frames until it closes the connection or `limit` after `since` passes.
async fn watch_frames(mut frames: Frames, since: Instant, limit: Duration) -> Seen {
    let mut seen = Seen::default();
    loop {
        match frames.next(since + limit).await {
            Ok(frame) => match frame.kind {
                GOAWAY => {
                    seen.goaway = frame
                        .payload
                        .get(4..8)
                        .map(|code| u32::from_be_bytes(code.try_into().unwrap()));
                }
                PING if frame.flags & ACK != 0 => seen.pongs += 1,
                SETTINGS if frame.flags & ACK != 0 => seen.settings_acks += 1,
                HEADERS => seen.answered.push(frame.stream),
                _ => {}
            },
            Err(End::Closed) => {
                seen.closed_after = Some(since.elapsed());
                return seen;
            }
            Err(End::TimedOut) => return seen,
        }
    }
}

/// A raw HTTP/2 connection over TLS: the preface and an empty SETTINGS sent, the server's SETTINGS acknowledged.
async fn h2_raw(server: &Server) -> (Frames, Writer) {
    let (reader, mut writer) = tokio::io::split(tls_connect(server, b"h2").await);
    writer
        .write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat())
        .await
        .unwrap();
    let mut frames = Frames {
        reader,
        buf: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let frame = frames.next(deadline).await.unwrap();
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            break;
        }
    }
    writer
        .write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .unwrap();
    (frames, writer)
}

/// A GET of the liveness route on `stream` of a raw connection, read to the end of its answer.
async fn raw_get(frames: &mut Frames, writer: &mut Writer, stream: u32) {
    let block = request_block("GET", "/v2/health/live", &[]);
    writer
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &block))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let frame = frames.next(deadline).await.unwrap();
        if frame.stream == stream
            && frame.flags & END_STREAM != 0
            && matches!(frame.kind, DATA | HEADERS)
        {
            return;
        }
    }
}

/// The metrics' count of connections the gateway closed for `reason`.
async fn refused(server: &Server, reason: &str) -> u64 {
    let metrics = scrape(server).await;
    let prefix = format!("rampart_connections_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

// ---------- the cases ----------

const HEADER_TIMEOUT: Duration = Duration::from_millis(500);
const BODY_TIMEOUT: Duration = Duration::from_millis(1000);
const IDLE_TIMEOUT: Duration = Duration::from_millis(6000);
/// What a loaded two-core machine may add to a timeout.
const SLACK: Duration = Duration::from_millis(2500);
const TIMEOUTS: &str = "[limits]\nheader_timeout_ms = 500\nbody_timeout_ms = 1000\nidle_timeout_ms = 6000\n[bans]\nenabled = false\n";

/// Case 1: HEADERS without END_HEADERS and no CONTINUATION ever, as a connection's first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_slowloris_headers_without_end_headers_are_cut_at_the_header_timeout() {
    let server = start(TIMEOUTS, false).await;
    let (frames, mut writer) = h2_raw(&server).await;
    let started = Instant::now();
    let bearer = format!("Bearer {}", server.key);
    let block = request_block(
        "POST",
        "/v2/models/digits/infer",
        &[("authorization", &bearer)],
    );
    writer
        .write_all(&frame(HEADERS, 0, 1, &block))
        .await
        .unwrap();
    let seen = tokio::spawn(watch_frames(frames, started, Duration::from_secs(10)));
    assert_eq!(served(&server).await, 200);
    let seen = seen.await.unwrap();
    eprintln!("h2 slowloris (first request): {seen:?}");
    let closed = seen
        .closed_after
        .expect("the slowloris connection stayed open");
    assert!(closed < HEADER_TIMEOUT + SLACK, "closed after {closed:?}");
    assert!(seen.answered.is_empty(), "{seen:?}");
    assert_eq!(refused(&server, "header_timeout").await, 1);
    stop(server).await;
}

/// Case 1, on a connection that has served a request: HTTP/1.1 cuts the next request's unfinished head at the
/// header timeout, and HTTP/2 an unfinished header block on a new stream as soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_slowloris_after_a_first_request_is_cut_at_the_header_timeout() {
    let server = start(TIMEOUTS, false).await;
    // HTTP/1.1, for comparison: a kept-alive connection's second head, unfinished.
    let mut http1 = tls_connect(&server, b"http/1.1").await;
    let answer = exchange(
        &mut http1,
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let started = Instant::now();
    http1
        .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let rest = read_some(&mut http1, Duration::from_secs(10)).await;
    let http1_closed = started.elapsed();
    eprintln!("HTTP/1.1 second head unfinished: closed after {http1_closed:?} ({rest:?})");
    assert!(http1_closed < HEADER_TIMEOUT + SLACK, "{http1_closed:?}");

    let (mut frames, mut writer) = h2_raw(&server).await;
    raw_get(&mut frames, &mut writer, 1).await;
    let started = Instant::now();
    let block = request_block("GET", "/v2/health/live", &[]);
    writer
        .write_all(&frame(HEADERS, 0, 3, &block))
        .await
        .unwrap();
    let seen = tokio::spawn(watch_frames(frames, started, Duration::from_secs(10)));
    assert_eq!(served(&server).await, 200);
    let seen = seen.await.unwrap();
    eprintln!("h2 slowloris (after a request): {seen:?}");
    let closed = seen
        .closed_after
        .expect("the slowloris connection stayed open");
    assert!(
        closed < HEADER_TIMEOUT + SLACK,
        "closed after {closed:?}, HTTP/1.1 after {http1_closed:?}"
    );
    stop(server).await;
}

/// Case 2: the preface and SETTINGS, then nothing: closed at the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_h2_connection_is_closed_at_the_header_timeout() {
    let server = start(TIMEOUTS, false).await;
    let (frames, _writer) = h2_raw(&server).await;
    let seen = watch_frames(frames, Instant::now(), Duration::from_secs(10)).await;
    eprintln!("h2 silent after SETTINGS: {seen:?}");
    let closed = seen
        .closed_after
        .expect("the silent connection stayed open");
    assert!(closed < HEADER_TIMEOUT + SLACK, "closed after {closed:?}");
    assert_eq!(refused(&server, "header_timeout").await, 1);
    assert_eq!(served(&server).await, 200);
    stop(server).await;
}

/// Case 2, after a request: closed at the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_h2_connection_after_a_request_is_closed_at_the_idle_timeout() {
    let server = start(TIMEOUTS, false).await;
    let (mut frames, mut writer) = h2_raw(&server).await;
    raw_get(&mut frames, &mut writer, 1).await;
    let seen = watch_frames(frames, Instant::now(), Duration::from_secs(15)).await;
    eprintln!("h2 silent after a request: {seen:?}");
    let closed = seen.closed_after.expect("the idle connection stayed open");
    assert!(
        closed > IDLE_TIMEOUT - Duration::from_millis(500) && closed < IDLE_TIMEOUT + SLACK,
        "closed after {closed:?}"
    );
    assert_eq!(refused(&server, "idle_timeout").await, 1);
    assert_eq!(served(&server).await, 200);
    stop(server).await;
}

/// Case 3: a body whose DATA frames trickle, a byte every 300 ms: 408 with the JSON error at the body timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_slow_post_is_answered_408_at_the_body_timeout() {
    let server = start(TIMEOUTS, false).await;
    let (client, driver) = h2_connect(&server).await;
    let started = Instant::now();
    let (answer, mut body) =
        h2_send(client, h2_infer(&server.key, &[("content-length", "5000")])).await;
    let trickle = tokio::spawn(async move {
        for byte in b"{\"inputs\": [".iter().cycle().take(40) {
            if body
                .send_data(Bytes::copy_from_slice(&[*byte]), false)
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // Another connection is served meanwhile.
    assert_eq!(served(&server).await, 200);
    let answer = h2_answer(answer, Duration::from_secs(10)).await;
    let took = started.elapsed();
    eprintln!("h2 slow POST: {answer:?} after {took:?}");
    assert_eq!(
        answer,
        Some((408, r#"{"error":"the body came too slowly"}"#.to_string()))
    );
    assert!(took < BODY_TIMEOUT + SLACK, "{took:?}");
    trickle.abort();
    driver.abort();
    assert_eq!(served(&server).await, 200);
    stop(server).await;
}

/// Case 4: a body over `max_body_bytes` as DATA frames, with no content-length: 413 with the JSON error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_body_over_the_limit_without_a_length_is_answered_413() {
    let server = start(
        "[limits]\nmax_body_bytes = 2048\n[bans]\nenabled = false\n",
        false,
    )
    .await;
    let (client, driver) = h2_connect(&server).await;
    let (answer, mut body) = h2_send(client, h2_infer(&server.key, &[])).await;
    let chunk = Bytes::from("x".repeat(1500));
    for end in [false, false, true] {
        if body.send_data(chunk.clone(), end).is_err() {
            break;
        }
    }
    let answer = h2_answer(answer, Duration::from_secs(5)).await;
    eprintln!("h2 body over the limit: {answer:?}");
    assert_eq!(
        answer,
        Some((413, r#"{"error":"the body is too large"}"#.to_string()))
    );
    driver.abort();
    assert_eq!(served(&server).await, 200);
    stop(server).await;
}

/// Case 5: HEADERS without END_HEADERS, then CONTINUATION frames without end (each a small field, or empty) far past
/// the header list limit: the connection is closed, with nothing answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_continuation_flood_closes_the_connection() {
    let server = start("[bans]\nenabled = false\n", false).await;
    for (what, fragment) in [
        ("small fields", literal("x-flood", &"a".repeat(100))),
        ("empty frames", Vec::new()),
    ] {
        let (frames, mut writer) = h2_raw(&server).await;
        let started = Instant::now();
        let block = request_block("GET", "/v2/health/live", &[]);
        writer
            .write_all(&frame(HEADERS, 0, 1, &block))
            .await
            .unwrap();
        let seen = tokio::spawn(watch_frames(frames, started, Duration::from_secs(10)));
        // 10 000 frames (1.1 MB of fields, or 90 kB of empty frames), a hundred at a time.
        let batch = frame(CONTINUATION, 0, 1, &fragment).repeat(100);
        let mut written = 0;
        for _ in 0..100 {
            match tokio::time::timeout(Duration::from_secs(5), writer.write_all(&batch)).await {
                Ok(Ok(())) => written += 100,
                _ => break,
            }
        }
        let seen = seen.await.unwrap();
        eprintln!("h2 CONTINUATION flood ({what}): {written} frames written, {seen:?}");
        let closed = seen
            .closed_after
            .unwrap_or_else(|| panic!("{what}: the flooding connection stayed open"));
        assert!(closed < Duration::from_secs(3), "{what}: {closed:?}");
        assert!(seen.answered.is_empty(), "{what}: {seen:?}");
    }
    assert_eq!(served(&server).await, 200);
    eprintln!(
        "h2_enhance_your_calm refusals: {}",
        refused(&server, "h2_enhance_your_calm").await
    );
    stop(server).await;
}

/// Writes `count` copies of `unit` over a raw connection that has served a request (so that the first request's
/// header timeout does not end it), while a well-behaved client is served; what the server did, and how long the
/// writing and the other client took.
async fn flood(server: &Server, unit: &[u8], count: usize) -> (Seen, Duration, usize, Duration) {
    let (mut frames, mut writer) = h2_raw(server).await;
    raw_get(&mut frames, &mut writer, 1).await;
    let started = Instant::now();
    let seen = tokio::spawn(watch_frames(
        frames,
        started,
        IDLE_TIMEOUT + Duration::from_secs(10),
    ));
    let batch = unit.repeat(1000);
    let writing = tokio::spawn(async move {
        let mut written = 0;
        while written < count {
            match tokio::time::timeout(Duration::from_secs(10), writer.write_all(&batch)).await {
                Ok(Ok(())) => written += 1000,
                _ => break,
            }
        }
        (written, started.elapsed())
    });
    let other = Instant::now();
    assert_eq!(served(server).await, 200);
    let other = other.elapsed();
    let (written, wrote_in) = writing.await.unwrap();
    (seen.await.unwrap(), wrote_in, written, other)
}

/// Case 6: 100 000 PING frames, then 100 000 SETTINGS frames (each acknowledged by the server), written as fast as
/// they go: the gateway goes on serving others, and the flooding connection is closed (at the latest at the idle
/// timeout: pongs and acknowledgements are no progress).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_ping_and_settings_floods_leave_the_gateway_serving() {
    let server = start(TIMEOUTS, false).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS = 100.
    let floods = [
        ("PING", frame(PING, 0, 0, b"floodin!")),
        ("SETTINGS", frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
    ];
    for (kind, unit) in floods {
        let (seen, wrote_in, written, other) = flood(&server, &unit, 100_000).await;
        eprintln!(
            "h2 {kind} flood: {written} written in {wrote_in:?}, another client served in {other:?}, {seen:?}"
        );
        let closed = seen
            .closed_after
            .unwrap_or_else(|| panic!("the {kind} flooding connection stayed open"));
        assert!(
            closed < IDLE_TIMEOUT + SLACK,
            "{kind}: closed after {closed:?}"
        );
        assert_eq!(served(&server).await, 200);
    }
    stop(server).await;
}

/// Case 7: a gzip-compressed body over HTTP/2 gets HTTP/1.1's answer: 415 with the JSON error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_compressed_body_gets_the_http1_answer() {
    let server = start("[bans]\nenabled = false\n", false).await;
    // gzip of nothing.
    let gzip: &[u8] =
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let mut http1 = tls_connect(&server, b"http/1.1").await;
    let head = format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        server.key,
        gzip.len()
    );
    let answer = exchange(
        &mut http1,
        &[head.as_bytes(), gzip].concat(),
        Duration::from_secs(5),
    )
    .await;
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let over_http1 = (status_of(&answer), body.to_string());
    assert_eq!(over_http1.0, 415, "{answer}");
    assert!(over_http1.1.starts_with(r#"{"error":"#), "{answer}");

    let (client, driver) = h2_connect(&server).await;
    let length = gzip.len().to_string();
    let (answer, mut body) = h2_send(
        client,
        h2_infer(
            &server.key,
            &[("content-encoding", "gzip"), ("content-length", &length)],
        ),
    )
    .await;
    let _ = body.send_data(Bytes::from_static(gzip), true);
    let over_h2 = h2_answer(answer, Duration::from_secs(5)).await;
    eprintln!("compressed body: HTTP/1.1 {over_http1:?}, h2 {over_h2:?}");
    assert_eq!(over_h2, Some(over_http1));
    driver.abort();
    assert_eq!(served(&server).await, 200);
    stop(server).await;
}

// ---------- header limits ----------

/// Sends a GET of the liveness route with `headers` over an HTTP/2 connection: the answer's status and body, or
/// `None` when the stream was reset instead.
async fn h2_get(
    client: &mut h2::client::SendRequest<Bytes>,
    headers: &[(String, String)],
) -> Option<(u16, String)> {
    let mut request = Request::get("https://localhost/v2/health/live");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let ready = client.clone().ready().await.ok()?;
    *client = ready;
    let (answer, _) = client.send_request(request.body(()).unwrap(), true).ok()?;
    let answer = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .ok()?
        .ok()?;
    let status = answer.status().as_u16();
    let mut body = answer.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        text.extend_from_slice(&chunk.ok()?);
    }
    Some((status, String::from_utf8_lossy(&text).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_header_limits_answer_431_with_the_json_error() {
    // 20 fields and 8 KiB of header list, as HTTP/2 sizes it; the h2 library itself takes up to twice that.
    let server = start(
        "[limits]\nmax_headers = 20\nmax_header_bytes = 8192\n[bans]\nenabled = false\n",
        false,
    )
    .await;
    let (mut client, driver) = h2_connect(&server).await;
    let refused = Some((431, r#"{"error":"request headers too large"}"#.to_string()));
    // Under both limits: served.
    let small: Vec<(String, String)> = (0..5).map(|i| (format!("x-h{i}"), "v".into())).collect();
    assert_eq!(h2_get(&mut client, &small).await.map(|a| a.0), Some(200));
    // Too many fields, each small.
    let many: Vec<(String, String)> = (0..30).map(|i| (format!("x-h{i}"), "v".into())).collect();
    assert_eq!(h2_get(&mut client, &many).await, refused);
    // Too large a list, under the h2 library's own cap.
    let large = vec![("x-big".to_string(), "a".repeat(10_000))];
    assert_eq!(h2_get(&mut client, &large).await, refused);
    // Past the library's cap: its own bare 431, or a reset stream.
    let huge = vec![("x-big".to_string(), "a".repeat(20_000))];
    let answer = h2_get(&mut client, &huge).await;
    assert!(
        answer.as_ref().is_none_or(|(status, _)| *status == 431),
        "{answer:?}"
    );
    // The connection goes on serving.
    assert_eq!(h2_get(&mut client, &small).await.map(|a| a.0), Some(200));
    // Refused as HTTP/1's 431 is: stage `http`, reason `headers_too_large`.
    let metrics = scrape(&server).await;
    let line = r#"rampart_refusals_total{stage="http",reason="headers_too_large"} 2"#;
    assert!(metrics.contains(line), "{line} missing in {metrics}");
    drop(client);
    driver.abort();
    stop(server).await;
}
