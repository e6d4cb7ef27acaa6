//! The `erratum` binary: parse flags, set up logging, start the runtime.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use erratum::args::{Args, Command, EXIT_USAGE};

// mimalloc instead of glibc malloc: the request path allocates many small, short-lived
// buffers, and glibc's malloc/free showed up as ~8% of CPU per proxied request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // One TLS provider for the whole process (the Kubernetes client and the HTTPS listener).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    if let Err(e) = erratum::telemetry::init(args.log_format, &args.log_level) {
        eprintln!("erratum: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    huge_pages(args.transparent_huge_pages);
    let task = match args.command {
        Command::Run(run) => match run.into_config() {
            Ok(config) => Task::Run(Box::new(config)),
            Err(e) => {
                eprintln!("erratum: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Command::Demo(demo) => Task::Demo(demo),
        Command::Origin { addr, delay_ms } => Task::Origin(addr, delay_ms),
        Command::Crd => {
            print!("{}", erratum::crd::crd_yaml());
            return ExitCode::SUCCESS;
        }
        Command::Migrate(args) => return migrate(&args),
    };
    match run(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("erratum: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc asks for transparent huge pages (`madvise`) by default, so each 2 MiB its pages
/// touch is resident whole: with 9,000 idle keep-alive clients that was ~23 KB of RSS per
/// connection instead of ~9 KB. Turned off for the process (`PR_SET_THP_DISABLE`, what mimalloc
/// itself does when told `MIMALLOC_ALLOW_THP=0`) before the runtime allocates, unless asked.
fn huge_pages(allowed: bool) {
    #[cfg(target_os = "linux")]
    if !allowed && let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!("transparent huge pages stay on: prctl(PR_SET_THP_DISABLE): {e}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = allowed;
}

/// `erratum migrate`: 0 when nothing reaches `--fail-on`, 1 when something does, 2 when the
/// input cannot be read.
fn migrate(args: &erratum::args::MigrateArgs) -> ExitCode {
    use erratum::migrate;
    if args.list {
        print!("{}", migrate::markdown_table());
        return ExitCode::SUCCESS;
    }
    let input = || -> anyhow::Result<_> {
        let configmap_file = args.configmap.as_deref().map(std::path::Path::new).filter(|p| p.exists());
        let (ingresses, mut config_map) = match &args.manifests {
            Some(path) => (migrate::from_files(path)?.0, None),
            None => {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let cluster_cm = args.configmap.as_deref().filter(|_| configmap_file.is_none());
                runtime.block_on(migrate::from_cluster(args.namespace.as_deref(), cluster_cm))?
            }
        };
        if let Some(file) = configmap_file {
            let (_, maps) = migrate::from_files(file)?;
            config_map = Some(maps.into_iter().next().context("no ConfigMap in the --configmap file")?);
        } else if args.manifests.is_some() && args.configmap.is_some() {
            anyhow::bail!("--configmap with --manifests is a file of manifests holding the ConfigMap");
        }
        Ok((ingresses, config_map))
    };
    let (mut ingresses, config_map) = match input() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("erratum migrate: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !args.classes.is_empty() {
        ingresses.retain(|i| migrate::class_of(i).is_some_and(|c| args.classes.contains(&c)));
    }
    let mut report = migrate::report(&ingresses, config_map.as_ref());
    if let Some(folder) = &args.write_policies {
        report.policies = migrate::plan_policies(&ingresses, config_map.as_ref(), folder);
        let write = |p: &migrate::PolicyPlan| -> anyhow::Result<()> {
            let Some(file) = &p.file else { return Ok(()) };
            let file = std::path::Path::new(file);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(file, &p.yaml).with_context(|| format!("cannot write {}", file.display()))
        };
        if let Err(e) = report.policies.iter().try_for_each(write) {
            eprintln!("erratum migrate: {e:#}");
            return ExitCode::from(2);
        }
    }
    match args.output {
        erratum::args::MigrateOutput::Text => print!("{}", report.to_text()),
        erratum::args::MigrateOutput::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("erratum migrate: {e}");
                return ExitCode::from(2);
            }
        },
    }
    if report.fails(args.fail_on) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

enum Task {
    Run(Box<erratum::runtime::RunConfig>),
    Demo(Box<erratum::args::DemoArgs>),
    Origin(std::net::SocketAddr, u64),
}

fn run(task: Task) -> anyhow::Result<()> {
    // A current-thread runtime, like one nginx worker process: no work-stealing queues or
    // cross-thread wake-ups on the request path. With `--workers` > 1 it runs the source and
    // the admin server, and each worker is a thread with a runtime of its own
    // (`runtime::spawn_workers`), as nginx, HAProxy and Pingora scale: 1.8 % fewer
    // instructions per request than one multi-thread runtime (BENCHMARKS.md, session 15).
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().thread_name("erratum-main");
    let max_connections = match &task {
        Task::Run(config) => Some(config.proxy.max_connections),
        Task::Demo(args) => Some(args.tuning.max_connections),
        Task::Origin(..) => None,
    };
    if let Some(max) = max_connections {
        raise_open_files(max);
    }
    let rt = builder.build().context("starting the async runtime")?;
    rt.block_on(async {
        match task {
            Task::Run(config) => {
                let signal = erratum::runtime::shutdown_signal();
                let running = erratum::runtime::start(*config).await?;
                running.run_until(signal).await;
            }
            Task::Demo(args) => erratum::demo::run(*args).await?,
            Task::Origin(addr, delay_ms) => {
                let signal = erratum::runtime::shutdown_signal();
                let origin = erratum::origin::Origin::start(addr).await.context("starting the origin")?;
                origin.delay(std::time::Duration::from_millis(delay_ms));
                eprintln!("origin listening on {}", origin.addr);
                signal.await;
            }
        }
        anyhow::Ok(())
    })
}

/// Raises the soft open-files limit to the hard one, as Go's runtime does and nginx's
/// `worker_rlimit_nofile` lets you: a soft limit of 1024 is common and would cap the proxy far
/// below `--max-connections` (each client connection may hold an upstream one too).
fn raise_open_files(max_connections: usize) {
    let needed = 2 * max_connections as u64 + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            max_connections,
            "the open-files limit is below what --max-connections needs (two per connection); \
             raise it (ulimit -n, or the container runtime's nofile) or lower --max-connections"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
}
