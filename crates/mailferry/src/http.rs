//! The metrics listener (`[daemon] metrics-listen`): the status page at `/`, Prometheus
//! text at `/metrics`, and `/healthz`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailferry_config::Config;
use mailferry_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// A request may take this long to arrive and its reply this long to leave.
const HTTP_LIMIT: Duration = Duration::from_secs(10);

/// Serves the status page at `/`, `/metrics` and `/healthz` (hyper, HTTP/1.1, each
/// connection on its own task and within [`HTTP_LIMIT`]) until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Store,
    config: Arc<Mutex<Arc<Config>>>,
    config_path: Arc<std::path::Path>,
    cancel: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics, /healthz and the status page at /");
    }
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    warn!(cause = %e, "metrics listener");
                    continue;
                }
            },
        };
        let (metrics, store, config, path) = (
            Arc::clone(&metrics),
            store.clone(),
            Arc::clone(&config),
            Arc::clone(&config_path),
        );
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (metrics, store, config, path) = (
                    Arc::clone(&metrics),
                    store.clone(),
                    Arc::clone(&config),
                    Arc::clone(&path),
                );
                async move {
                    Ok::<_, std::convert::Infallible>(
                        answer(&request, &metrics, &store, &config, &path).await,
                    )
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HTTP_LIMIT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(HTTP_LIMIT, connection).await;
        });
    }
}

/// The reply to one request.
async fn answer(
    request: &hyper::Request<hyper::body::Incoming>,
    metrics: &Metrics,
    store: &Store,
    config: &Mutex<Arc<Config>>,
    config_path: &std::path::Path,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let current = || {
        config
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    };
    let (status, ctype, body) = match request.uri().path() {
        "/" => {
            let config = current();
            let sources = crate::page::Sources {
                config: &config,
                config_path,
                store,
            };
            match crate::page::render(&sources).await {
                Ok(page) => (hyper::StatusCode::OK, "text/html; charset=utf-8", page),
                Err(e) => (
                    hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("the state database cannot be read: {e:#}\n"),
                ),
            }
        }
        "/metrics" => (
            hyper::StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(store).await,
        ),
        "/healthz" => {
            let config = current();
            let problems = Metrics::unhealthy(store, &config).await;
            if problems.is_empty() {
                (hyper::StatusCode::OK, "text/plain", "ok\n".to_owned())
            } else {
                (
                    hyper::StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    problems.join("\n") + "\n",
                )
            }
        }
        _ => (
            hyper::StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut reply = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    // Every answer: nothing here is a script, a frame or a referrer's business.
    headers.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        hyper::header::REFERRER_POLICY,
        hyper::header::HeaderValue::from_static("no-referrer"),
    );
    if let Ok(csp) = hyper::header::HeaderValue::from_str(&crate::page::CONTENT_SECURITY_POLICY) {
        headers.insert(hyper::header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    reply
}
