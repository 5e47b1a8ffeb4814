//! `samserve eval`: interactive-segmentation mIoU of a model on a COCO dataset.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use samserve::model::Runtime;

#[derive(Args)]
pub struct EvalArgs {
    /// The model: a catalogue name (`samserve models list`), hf:OWNER/REPO[@REVISION][/SUBFOLDER], a model folder, or
    /// samserve-s, the built-in demo model. Hub files are downloaded once into the Hugging Face cache.
    #[arg(long, default_value = samserve::model::BUILTIN_MODEL)]
    model: String,
    /// The COCO annotation file (instance masks as RLE or polygons).
    #[arg(long)]
    coco: PathBuf,
    /// The folder of the images named by the annotation file.
    #[arg(long)]
    images: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(runtime: &Runtime, args: &EvalArgs) -> Result<()> {
    let model = super::load_model(runtime, &args.model)?;
    let dataset = samserve::coco::load(&args.coco)?;
    let report = samserve::eval::evaluate(&model, &dataset, &args.images)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
