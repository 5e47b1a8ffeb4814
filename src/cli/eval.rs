//! `samserve eval`: interactive-segmentation mIoU of a model on a COCO dataset.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use samserve::model::Runtime;

#[derive(Args)]
pub struct EvalArgs {
    /// A model folder; the built-in model by default.
    #[arg(long)]
    model: Option<PathBuf>,
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
    let model = super::load_model(runtime, args.model.as_deref())?;
    let dataset = samserve::coco::load(&args.coco)?;
    let report = samserve::eval::evaluate(&model, &dataset, &args.images)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
