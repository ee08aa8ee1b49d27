//! The physical limit of the HTTP stack: a bare hyper 1 server, built like the
//! edge's listener (tokio multi-thread runtime, hyper-util's auto connection
//! builder for HTTP/1.1 and h2c, TCP_NODELAY), answering every request with a
//! fixed body of `--body-size` bytes and the same content type as a value GET.
//!
//! `baseline --listen 127.0.0.1:0 --body-size 100` prints
//! `baseline listening on http://ADDR` and serves until killed.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut body_size = 100usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--body-size" => body_size = value.parse()?,
            other => anyhow::bail!("unknown flag {other}: use --listen ADDR --body-size N"),
        }
    }
    let body = Bytes::from(vec![b'v'; body_size]);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            println!("baseline listening on http://{}", listener.local_addr()?);
            let builder = auto::Builder::new(TokioExecutor::new());
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
                    let mut response = Response::new(Full::new(body.clone()));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/octet-stream"),
                    );
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        })
}
