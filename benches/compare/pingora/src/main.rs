//! Pingora as a peer in erratum's side-by-side harness (benches/compare/table.py).
//!
//! A minimal reverse proxy on `pingora-proxy` doing the job the nginx and HAProxy
//! configurations of the harness do, so that the comparison is of the same work:
//! - every request to the origin with the forwarded fields ingress-nginx sets by default
//!   (X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host, X-Request-Id), over
//!   Pingora's keep-alive pool;
//! - an origin 503 replaced by the custom page (`--page`), a refused upstream (`/refused/`)
//!   answered 502 with the same page;
//! - `secure.bench` redirected to HTTPS with a 308;
//! - with `--regex-routes N`, N regular-expression routes tried before the catch-all (what
//!   ingress-nginx's `use-regex` gives); the bench's requests match the last one;
//! - with `--access-log PATH`, one line per request;
//! - with `--route HOST=SCHEME://ADDR[,ADDR...]`, a host's own upstream (table.py's upstream
//!   scenarios): `http` round robin over its endpoints with a retry on the next endpoint
//!   when a connection fails (Pingora's `fail_to_connect` retry; nginx's next upstream), `https` verified against `--ca-file`
//!   as `--upstream-sni`, `h2c` HTTP/2 by prior knowledge (gRPC);
//! - TLS (rustls) with HTTP/2 by ALPN on `--tls-listen`, HTTP/2 cleartext (h2c) beside
//!   HTTP/1.1 on `--listen`.
//!
//! What it does not do, and the harness's table says so: cache error answers, serve stale
//! copies (both would need pingora-cache and a storage backend, not a minimal proxy).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use clap::Parser;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::prelude::*;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use regex::RegexSet;

#[derive(Parser)]
struct Args {
    /// Plain HTTP/1.1 and h2c.
    #[arg(long)]
    listen: String,
    /// TLS (HTTP/2 and HTTP/1.1 by ALPN); needs --cert and --key.
    #[arg(long)]
    tls_listen: Option<String>,
    #[arg(long)]
    cert: Option<String>,
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads (one per core, as Pingora scales).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The custom error page for a 503 from the origin and a refused upstream.
    #[arg(long)]
    page: Option<String>,
    #[arg(long)]
    access_log: Option<String>,
    #[arg(long, default_value_t = 0)]
    regex_routes: usize,
    /// HOST=SCHEME://ADDR[,ADDR...] with SCHEME http, https or h2c; repeatable.
    #[arg(long = "route")]
    routes: Vec<String>,
    /// The name asked for and verified on `https` routes.
    #[arg(long, default_value = "")]
    upstream_sni: String,
    /// The CA that signs `https` routes' certificates.
    #[arg(long)]
    ca_file: Option<String>,
}

/// A host's own upstream.
struct Route {
    endpoints: Vec<SocketAddr>,
    scheme: Scheme,
    next: AtomicUsize,
}

#[derive(Clone, Copy, PartialEq)]
enum Scheme {
    Http,
    Https,
    H2c,
}

fn parse_route(spec: &str) -> (String, Route) {
    let (host, target) = spec.split_once('=').expect("--route HOST=SCHEME://ADDR");
    let (scheme, addrs) = target.split_once("://").expect("--route needs a scheme");
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        "h2c" => Scheme::H2c,
        other => panic!("--route scheme {other}: http, https or h2c"),
    };
    let endpoints = addrs.split(',').map(|a| a.parse().expect("--route address")).collect();
    (host.to_owned(), Route { endpoints, scheme, next: AtomicUsize::new(0) })
}

struct Bench {
    upstream: SocketAddr,
    page: Bytes,
    log: Option<Mutex<BufWriter<File>>>,
    routes: Option<RegexSet>,
    hosts: HashMap<String, Route>,
    sni: String,
    ids: AtomicU64,
    seed: u64,
}

#[derive(Default)]
struct Ctx {
    replace: bool,
    /// Upstream connections tried for this request.
    tries: usize,
    /// The endpoint of the route the first try went to; a retry takes the next one.
    first: usize,
}

const REFUSED: &str = "/refused/";

#[async_trait]
impl ProxyHttp for Bench {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<bool> {
        let host = host_of(session.req_header());
        if host == "secure.bench" {
            let location = format!("https://{host}{}", session.req_header().uri);
            let mut resp = ResponseHeader::build(308, Some(2))?;
            resp.insert_header("Location", location)?;
            resp.insert_header("Content-Length", "0")?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        }
        if let Some(routes) = &self.routes {
            // The first matching route wins (ingress-nginx's regex locations); every route goes
            // to the same origin here, so the match only has to be made.
            if routes.matches(session.req_header().uri.path()).iter().next().is_none() {
                session.respond_error(404).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.tries += 1;
        if let Some(route) = self.hosts.get(host_of(session.req_header())) {
            if ctx.tries == 1 {
                ctx.first = route.next.fetch_add(1, Ordering::Relaxed);
            }
            let addr = route.endpoints[(ctx.first + ctx.tries - 1) % route.endpoints.len()];
            let mut peer = HttpPeer::new(addr, route.scheme == Scheme::Https, self.sni.clone());
            if route.scheme == Scheme::H2c {
                peer.options.set_http_version(2, 2);
            }
            return Ok(Box::new(peer));
        }
        let addr = if session.req_header().uri.path().starts_with(REFUSED) {
            SocketAddr::from(([127, 0, 0, 1], 1))
        } else {
            self.upstream
        };
        Ok(Box::new(HttpPeer::new(addr, false, String::new())))
    }

    fn fail_to_connect(&self, session: &mut Session, _peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        // Another endpoint of the host's route, as many tries as it has endpoints (what
        // ingress-nginx's `proxy_next_upstream error` does).
        if let Some(route) = self.hosts.get(host_of(session.req_header())) {
            if ctx.tries < route.endpoints.len() {
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        let client =
            session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string()).unwrap_or_default();
        let forwarded_for = match req.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {client}"),
            None => client.clone(),
        };
        let proto =
            if session.digest().and_then(|d| d.ssl_digest.as_ref()).is_some() { "https" } else { "http" };
        let host = host_of(req).to_owned();
        req.insert_header("X-Forwarded-For", forwarded_for)?;
        req.insert_header("X-Real-IP", client)?;
        req.insert_header("X-Forwarded-Proto", proto)?;
        req.insert_header("X-Forwarded-Host", host)?;
        req.insert_header("X-Request-Id", self.request_id())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.as_u16() == 503 && !self.page.is_empty() {
            ctx.replace = true;
            resp.insert_header("Content-Type", "text/html")?;
            resp.insert_header("Content-Length", self.page.len().to_string())?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.replace {
            // The origin's body is dropped; the page goes out once, at its end.
            *body = end_of_stream.then(|| self.page.clone());
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let code = match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => 0,
            _ => 500,
        };
        if code == 502 && !self.page.is_empty() {
            let sent = async {
                let mut resp = ResponseHeader::build(502, Some(2))?;
                resp.insert_header("Content-Type", "text/html")?;
                resp.insert_header("Content-Length", self.page.len().to_string())?;
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(self.page.clone()), true).await
            };
            let reuse = sent.await.is_ok();
            return FailToProxy { error_code: 502, can_reuse_downstream: reuse };
        }
        if code > 0 {
            let _ = session.respond_error(code).await;
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, _ctx: &mut Ctx) {
        let Some(log) = &self.log else { return };
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let client = session.client_addr().map(|a| a.to_string()).unwrap_or_default();
        let line = format!(
            "{client} \"{} {} {:?}\" {status} {} \"{}\"\n",
            req.method,
            req.uri,
            req.version,
            session.body_bytes_sent(),
            host_of(req)
        );
        // A buffered file, written when the buffer fills (nginx's `buffer=64k`).
        if let Ok(mut w) = log.lock() {
            let _ = w.write_all(line.as_bytes());
        }
    }
}

impl Bench {
    /// 128 bits in hex like nginx's `$request_id`: a counter mixed with a process seed.
    fn request_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let a = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.seed;
        let b = a.rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        format!("{a:016x}{b:016x}")
    }
}

fn host_of(req: &RequestHeader) -> &str {
    req.headers.get("host").and_then(|v| v.to_str().ok()).or_else(|| req.uri.host()).unwrap_or("")
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        ca_file: args.ca_file.clone(),
        // The same pool size as the other proxies' (nginx `keepalive 64` per worker).
        upstream_keepalive_pool_size: 64,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let page = match &args.page {
        Some(p) => Bytes::from(std::fs::read(p).expect("--page is readable")),
        None => Bytes::new(),
    };
    let log = args.access_log.as_ref().map(|p| {
        let f = File::options().create(true).append(true).open(p).expect("--access-log opens");
        Mutex::new(BufWriter::with_capacity(64 * 1024, f))
    });
    let routes = (args.regex_routes > 0).then(|| {
        // The harness's routes: /r0/..., /r1/..., each with a capture like ingress-nginx's.
        let patterns = (0..args.regex_routes).map(|i| format!("^/r{i}/(.*)$"));
        RegexSet::new(patterns.chain(std::iter::once("^/".to_owned()))).expect("routes compile")
    });
    let bench = Bench {
        upstream: args.upstream,
        page,
        log,
        routes,
        hosts: args.routes.iter().map(|r| parse_route(r)).collect(),
        sni: args.upstream_sni.clone(),
        ids: AtomicU64::new(0),
        seed: u64::from(std::process::id()) << 32,
    };
    let mut service = pingora_proxy::http_proxy_service(&server.configuration, bench);
    if let Some(app) = service.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    service.add_tcp(&args.listen);
    if let Some(addr) = &args.tls_listen {
        let (cert, key) = (args.cert.as_deref().expect("--cert"), args.key.as_deref().expect("--key"));
        let mut tls = TlsSettings::intermediate(cert, key).expect("certificate and key load");
        tls.enable_h2();
        service.add_tls_with_settings(addr, None, tls);
    }
    server.add_service(service);
    server.run_forever();
}
