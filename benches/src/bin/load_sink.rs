//! The Sentry and OTLP stand-in for `load/run.sh`: an HTTP/1.1 server on
//! `127.0.0.1:$LOAD_SINK_PORT` that reads every request (headers and body), answers `200 OK` on
//! the same keep-alive connection, and throws the body away.
//!
//! The `sentry`, `assembled` and `-fail10` modes of `load_axum` point their DSN at it, so sentry's
//! real transport (a background thread, envelope serialization, an HTTP POST per envelope with
//! ureq) does its usual work while the receiving side costs next to nothing. The `otel-anchor`
//! mode exports its spans to it over OTLP/HTTP (`POST /v1/traces`, `$LOAD_OTLP_ENDPOINT`): the
//! answer is an empty `ExportTraceServiceResponse` (`application/x-protobuf`, no bytes, so no
//! partial failure), and the spans of each export are counted on the protobuf wire format
//! without decoding it (`load::otlp_span_count`, after gunzip when the body is gzip-encoded).
//! The script pins it with wrk, off the server's core. On SIGTERM or SIGINT it prints a
//! `load-summary` line: the Sentry requests (envelopes), the OTLP exports and the spans in them,
//! the body bytes, and the OTLP bodies it could not count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::io::Read as _;

use qiflow_benches::load;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
/// An empty `ExportTraceServiceResponse`: full success.
const OTLP_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
/// The OTLP/HTTP traces path.
const OTLP_TRACES: &str = "/v1/traces";

/// What the sink received.
#[derive(Default)]
struct Counts {
    /// Requests other than OTLP exports: Sentry envelopes.
    envelopes: AtomicU64,
    /// OTLP trace exports (`POST /v1/traces`).
    otlp_requests: AtomicU64,
    /// Spans in those exports.
    spans: AtomicU64,
    /// OTLP exports whose body did not parse (not counted in `spans`).
    otlp_unparsed: AtomicU64,
    /// Body bytes of every request, as received.
    bytes: AtomicU64,
}

fn main() {
    let port: u16 = std::env::var("LOAD_SINK_PORT")
        .map(|p| p.parse().expect("LOAD_SINK_PORT must be a port number"))
        .unwrap_or(3199);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let counts = Arc::new(Counts::default());
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the sink's port is free");
        eprintln!("load_sink: listening on http://127.0.0.1:{port}");
        let accept = async {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counts = counts.clone();
                tokio::spawn(async move {
                    let _ = connection(stream, &counts).await;
                });
            }
        };
        tokio::select! {
            () = accept => {},
            () = load::shutdown_signal() => {},
        }
    });
    eprintln!(
        "load-summary server=sink envelopes={} otlp_requests={} spans={} otlp_unparsed={} bytes={}",
        counts.envelopes.load(Ordering::Relaxed),
        counts.otlp_requests.load(Ordering::Relaxed),
        counts.spans.load(Ordering::Relaxed),
        counts.otlp_unparsed.load(Ordering::Relaxed),
        counts.bytes.load(Ordering::Relaxed)
    );
}

/// Serves one keep-alive connection until the peer closes it.
async fn connection(stream: TcpStream, counts: &Counts) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    let mut body = Vec::new();
    let mut unzipped = Vec::new();
    loop {
        let mut content_length = 0usize;
        let mut chunked = false;
        let mut gzip = false;
        let mut otlp = false;
        // The request line and headers, up to the empty line.
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            if first {
                // The request line: `POST /v1/traces HTTP/1.1`.
                otlp = header.split_whitespace().nth(1) == Some(OTLP_TRACES);
                first = false;
                continue;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                } else if name.eq_ignore_ascii_case("content-encoding") {
                    gzip = value.eq_ignore_ascii_case("gzip");
                }
            }
        }
        let received = if chunked {
            read_chunked(&mut reader, &mut line, &mut body).await?
        } else {
            body.resize(content_length, 0);
            reader.read_exact(&mut body).await?;
            content_length
        };
        counts.bytes.fetch_add(received as u64, Ordering::Relaxed);
        if otlp {
            counts.otlp_requests.fetch_add(1, Ordering::Relaxed);
            let spans = if gzip {
                unzipped.clear();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut unzipped)
                    .ok()
                    .and_then(|_| load::otlp_span_count(&unzipped))
            } else {
                load::otlp_span_count(&body)
            };
            match spans {
                Some(n) => counts.spans.fetch_add(n, Ordering::Relaxed),
                None => counts.otlp_unparsed.fetch_add(1, Ordering::Relaxed),
            };
            write.write_all(OTLP_RESPONSE).await?;
        } else {
            counts.envelopes.fetch_add(1, Ordering::Relaxed);
            write.write_all(RESPONSE).await?;
        }
    }
}

/// Reads a chunked body into `body` (replacing what it held); returns its length.
async fn read_chunked<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
    body: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    body.clear();
    loop {
        line.clear();
        reader.read_line(line).await?;
        let size = line.trim_end().split(';').next().unwrap_or("0");
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if reader.read_line(line).await? == 0 || line.trim_end().is_empty() {
                    return Ok(total);
                }
            }
        }
        // The chunk and its CRLF, which is then cut off.
        body.resize(total + size + 2, 0);
        reader.read_exact(&mut body[total..]).await?;
        total += size;
        body.truncate(total);
    }
}
