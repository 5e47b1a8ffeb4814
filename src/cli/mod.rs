//! The subcommands of the `samserve` binary, one module each, and what several of them share: logging, the
//! ONNX Runtime options, and loading a model and an image from the command line's paths.

pub mod batch;
pub mod bench;
pub mod eval;
pub mod everything;
pub mod models;
pub mod runtime;
pub mod segment;
pub mod serve;

use std::path::Path;

use anyhow::{Context, Result};
use samserve::hub::Hub;
use samserve::image_input::{ImageLimits, decode_image};
use samserve::model::{Runtime, SamModel, SessionCounts};

/// Logs go to stderr: plain text, or JSON lines with LOG_FORMAT=json; the level comes from RUST_LOG.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into());
    // Colours only on a terminal, not in log files and pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The model `--model` names (see [`samserve::hub`]), fetched first if it is a hub model the cache lacks.
fn load_model(runtime: &Runtime, spec: &str) -> Result<SamModel> {
    load_model_with(runtime, spec, SessionCounts::default())
}

fn load_model_with(runtime: &Runtime, spec: &str, sessions: SessionCounts) -> Result<SamModel> {
    samserve::hub::load(spec, &Hub::from_env(), runtime, sessions)
}

/// An image file, decoded as an upload would be (EXIF orientation, default limits).
fn read_image(path: &Path) -> Result<image::RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode_image(&bytes, &ImageLimits::default()).with_context(|| path.display().to_string())
}
