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
    /// The model: a catalogue name (`samserve models list`), hf:OWNER/REPO[@REVISION][/SUBFOLDER], a model folder, or
    /// samserve-s, the built-in demo model. Hub files are downloaded once into the Hugging Face cache.
    #[arg(long, default_value = samserve::model::BUILTIN_MODEL)]
    model: String,
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
    let model = super::load_model(runtime, &args.model)?;
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
