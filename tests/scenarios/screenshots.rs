//! What people see, in a real browser: erratum's built-in pages and every example's page
//! (the quickstart's and those of `examples/policies/`) screenshotted by headless
//! Chromium (Debian's `chromium`) at desktop and phone widths, in light and dark mode, and
//! compared with the baselines in `tests/screenshots/` with a tolerance (fonts and
//! anti-aliasing may move a few pixels; a changed layout, colour or text does not pass).
//!
//! `ERRATUM_UPDATE_SCREENSHOTS=1 cargo test --test scenarios screenshots` rewrites the
//! baselines after an intended change; look at them before committing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A pixel differs when a channel moves by more than this.
const CHANNEL_TOLERANCE: u8 = 48;
/// The share of pixels that may differ (0.05 %: one changed word is more).
const PIXEL_TOLERANCE: f64 = 0.0005;

struct Shot {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

fn decode(path: &Path) -> Shot {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3 && info.bit_depth == png::BitDepth::Eight, "{path:?}: {info:?}");
    let rgb = buf[..info.buffer_size()].chunks(channels).flat_map(|p| [p[0], p[1], p[2]]).collect();
    Shot { width: info.width, height: info.height, rgb }
}

fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "the screenshot tests need Debian's chromium: apt-get install chromium (CI installs it)"
    );
    path
}

/// Screenshots `url` at `width`×`height` into `out`.
fn screenshot(url: &str, width: u32, height: u32, dark: bool, out: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    // The flags that keep Chromium off a closed network and quick to start (see the
    // machine notes); a fresh profile each time.
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--window-size={width},{height}"))
    .arg(format!("--screenshot={}", out.display()));
    if dark {
        cmd.arg("--force-dark-mode");
    }
    let result = cmd.arg(url).output().unwrap();
    assert!(out.exists(), "chromium made no screenshot: {}", String::from_utf8_lossy(&result.stderr));
}

/// Compares `got` with the baseline `name`, or writes it when asked to.
fn compare(name: &str, got: &Path) -> Result<(), String> {
    let baseline =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/screenshots").join(format!("{name}.png"));
    if std::env::var_os("ERRATUM_UPDATE_SCREENSHOTS").is_some() {
        std::fs::create_dir_all(baseline.parent().unwrap()).unwrap();
        std::fs::copy(got, &baseline).unwrap();
        eprintln!("wrote {}", baseline.display());
        return Ok(());
    }
    if !baseline.exists() {
        return Err(format!(
            "{name}: no baseline {} (ERRATUM_UPDATE_SCREENSHOTS=1 writes it)",
            baseline.display()
        ));
    }
    let (a, b) = (decode(&baseline), decode(got));
    if (a.width, a.height) != (b.width, b.height) {
        return Err(format!(
            "{name}: {}x{} against the baseline's {}x{}",
            b.width, b.height, a.width, a.height
        ));
    }
    let differing = a
        .rgb
        .chunks(3)
        .zip(b.rgb.chunks(3))
        .filter(|(p, q)| p.iter().zip(q.iter()).any(|(x, y)| x.abs_diff(*y) > CHANNEL_TOLERANCE));
    let share = differing.count() as f64 / f64::from(a.width * a.height);
    if share > PIXEL_TOLERANCE {
        return Err(format!(
            "{name}: {:.2}% of pixels differ from the baseline (at most {:.2}%)",
            share * 100.0,
            PIXEL_TOLERANCE * 100.0
        ));
    }
    eprintln!("{name}: {:.3}% of pixels differ", share * 100.0);
    Ok(())
}

/// Mean brightness of a screenshot, 0–255.
fn brightness(path: &Path) -> f64 {
    let s = decode(path);
    s.rgb.iter().map(|b| f64::from(*b)).sum::<f64>() / s.rgb.len() as f64
}

/// The pages people meet first: erratum's own, the quickstart's (`demo`), and the planned
/// maintenance example's, each opened alone from `/pages/preview`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_look_right_on_desktop_and_phone_in_light_and_dark() {
    let o = origin().await;
    let quickstart = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/quickstart.yaml"),
    )
    .unwrap();
    let manifests = [
        storefront(o.addr),
        example("policies/planned-maintenance.yaml"),
        example("policies/branded-5xx.yaml"),
        example("policies/maintenance.yaml"),
        quickstart,
    ]
    .join("---\n");
    let h = Harness::start(&manifests).await;
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let pages = [
        ("builtin-404", "builtin=404"),
        ("builtin-503", "builtin=503"),
        ("quickstart-5xx", "policy=demo/quickstart-errors&code=5xx&format=0"),
        ("planned-maintenance", "policy=shop/planned-maintenance&code=maintenance&format=0"),
        ("branded-5xx", "policy=shop/branded-5xx&code=5xx&format=0"),
        ("maintenance-503", "policy=shop/maintenance&code=503&format=0"),
    ];
    for (page, query) in pages {
        let url = h.admin_url(&format!("/pages/preview/page?{query}"));
        for (size, width, height) in [("desktop", 1280, 800), ("phone", 390, 844)] {
            let mut shades = Vec::new();
            for (scheme, dark) in [("light", false), ("dark", true)] {
                let name = format!("{page}-{size}-{scheme}");
                let out = dir.path().join(format!("{name}.png"));
                screenshot(&url, width, height, dark, &out);
                shades.push(brightness(&out));
                if let Err(e) = compare(&name, &out) {
                    failures.push(e);
                }
            }
            assert!(shades[0] > shades[1] + 100.0, "{page} {size}: dark mode is dark: {shades:?}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    h.shutdown().await;
}
