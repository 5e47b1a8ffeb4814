//! `samserve everything`: segment everything in one image (crop layers allowed); writes the route's JSON.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use samserve::amg::{self, AmgInput, AmgParams};
use samserve::model::Runtime;
use samserve::segment::OutputFormat;

#[derive(Args)]
pub struct EverythingArgs {
    /// A model folder; the built-in model by default.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The image.
    image: PathBuf,
    #[command(flatten)]
    params: AmgParams,
    /// Encodings of each mask.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rle")]
    output: Vec<OutputFormat>,
    /// The JSON file to write (the body `POST /v1/images/{id}/everything` answers).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(runtime: &Runtime, args: &EverythingArgs) -> Result<()> {
    let model = super::load_model(runtime, args.model.as_deref())?;
    let image = super::read_image(&args.image)?;
    let started = Instant::now();
    let masks = amg::generate(&model, AmgInput::Image(&image), &args.params)?;
    let body = serde_json::json!({
        "model": model.name(),
        "width": image.width(),
        "height": image.height(),
        "elapsed_ms": started.elapsed().as_secs_f64() * 1e3,
        "masks": amg::encode_all(&masks, &args.output),
    });
    std::fs::write(&args.out, serde_json::to_vec(&body)?).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("{} masks -> {}", masks.len(), args.out.display());
    Ok(())
}
