//! `erratum demo`: the built-in origin plus erratum on `examples/quickstart/`, for a first look
//! without a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::args::DemoArgs;
use crate::origin::Origin;
use crate::runtime;

/// Where the quickstart's EndpointSlice points.
pub const ORIGIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18081);
/// The quickstart manifests, compiled in so the binary works outside the source tree.
const QUICKSTART: &str = include_str!("../examples/quickstart/quickstart.yaml");

/// Errors starting the demo.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The origin port is taken.
    #[error(
        "cannot start the demo origin on {ORIGIN_ADDR} (the quickstart's EndpointSlice points there): {0}"
    )]
    Origin(std::io::Error),
    /// The manifests could not be written.
    #[error("cannot write the quickstart manifests to {0}: {1}")]
    Write(PathBuf, std::io::Error),
    /// Bad flags.
    #[error(transparent)]
    Args(#[from] crate::args::Error),
    /// erratum did not start.
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
}

/// The quickstart folder: the source tree's when run from it (so edits show live), else a
/// temporary copy of the compiled-in manifests.
fn quickstart_dir() -> Result<PathBuf, Error> {
    let local = PathBuf::from("examples/quickstart");
    if local.join("quickstart.yaml").is_file() {
        return Ok(local);
    }
    let dir = std::env::temp_dir().join(format!("erratum-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Write(dir.clone(), e))?;
    std::fs::write(dir.join("quickstart.yaml"), QUICKSTART).map_err(|e| Error::Write(dir.clone(), e))?;
    Ok(dir)
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<(), Error> {
    let origin_addr = ORIGIN_ADDR;
    let dir = quickstart_dir()?;
    let config = args.into_config(dir.clone())?;
    let signal = runtime::shutdown_signal();
    let origin = Origin::start(origin_addr).await.map_err(Error::Origin)?;
    let running = runtime::start(config).await?;
    let http = running.http_addr;
    let admin = running.admin_addr;
    let port = http.port();
    println!(
        "\nerratum demo is running: manifests from {dir}, origin on {origin}\n\n\
         Try:\n\
         \x20 curl -i http://localhost:{port}/                      # 200 through the proxy\n\
         \x20 curl -i http://localhost:{port}/missing/page          # origin 404, passed through\n\
         \x20 curl -i http://localhost:{port}/boom                  # origin 500\n\
         \x20 curl -i http://localhost:{port}/unavailable           # origin 503\n\
         \x20 curl -i http://localhost:{port}/slow/1500             # a slow origin\n\
         \x20 curl -i http://localhost:{port}/reset                 # origin drops the connection: 502\n\
         \x20 curl -i http://localhost:{port}/refused               # connection refused: 502\n\
         \x20 curl -i http://localhost:{port}/not-ready             # no ready endpoint: 503\n\
         \x20 curl -i -H 'Host: nobody.example' http://localhost:{port}/   # no route: 404\n\
         \x20 curl -i --http2-prior-knowledge http://localhost:{port}/     # h2c\n{https}\
         \x20 curl -s http://{admin}/metrics | grep erratum_           # metrics\n\
         \x20 curl -s http://{admin}/table                            # the routing table\n\n\
         Edit {dir}/quickstart.yaml and the routes change live. Ctrl-C stops.\n",
        dir = dir.display(),
        origin = origin.addr,
        https = running
            .https_addr
            .map(|a| format!(
                "\x20 curl -ik https://localhost:{}/                     # TLS (self-signed fallback certificate)\n",
                a.port()
            ))
            .unwrap_or_default(),
    );
    running.run_until(signal).await;
    origin.stop();
    Ok(())
}
