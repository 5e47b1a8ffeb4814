//! `samserve batch`: many images (files and folders) with prompts or everything, one per worker; COCO results.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use samserve::amg::AmgParams;
use samserve::batch::{self, BatchTask, CocoResults, ImageOutcome};
use samserve::image_input::ImageLimits;
use samserve::model::{Runtime, SessionCounts};

#[derive(Args)]
pub struct BatchArgs {
    /// The model: a catalogue name (`samserve models list`), hf:OWNER/REPO[@REVISION][/SUBFOLDER], a model folder, or
    /// samserve-s, the built-in demo model. Hub files are downloaded once into the Hugging Face cache.
    #[arg(long, default_value = samserve::model::BUILTIN_MODEL)]
    model: String,
    /// Image files and folders (searched recursively for image files).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// A JSON file `{"<file name>": [<prompt>, ...]}` (prompts as in the API; names as in the results: the file
    /// name, or the path below the folder given).
    #[arg(long, conflicts_with = "everything")]
    prompts: Option<PathBuf>,
    /// Segment everything in each image.
    #[arg(long)]
    everything: bool,
    #[command(flatten)]
    params: AmgParams,
    /// The COCO results file to write.
    #[arg(long)]
    output: PathBuf,
    /// Also write each mask as a PNG: DIR/<file name without extension>/<k>.png, k counting the image's masks.
    #[arg(long)]
    masks_dir: Option<PathBuf>,
    /// Images in flight at once (default: one per CPU core, each on one thread).
    #[arg(long)]
    workers: Option<usize>,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl BatchArgs {
    fn workers(&self) -> usize {
        self.workers.unwrap_or_else(cores).max(1)
    }

    /// ONNX Runtime threads per session unless --threads says otherwise: the cores shared among the workers.
    pub fn threads_per_worker(&self) -> usize {
        (cores() / self.workers()).max(1)
    }

    fn task(&self) -> Result<BatchTask> {
        let task = match (&self.prompts, self.everything) {
            (Some(file), false) => {
                let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                let prompts = serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not a prompts file", file.display()))?;
                BatchTask::Prompts { prompts }
            }
            (None, true) => BatchTask::Everything { params: self.params.clone() },
            _ => bail!("give --prompts FILE or --everything"),
        };
        task.validate().map_err(anyhow::Error::msg)?;
        Ok(task)
    }
}

pub fn run(runtime: &Runtime, args: &BatchArgs) -> Result<()> {
    let task = args.task()?;
    let inputs = batch::collect_inputs(&args.inputs).map_err(anyhow::Error::msg)?;
    let workers = args.workers();
    let sessions = SessionCounts { encoder: workers, decoder: workers };
    let model = super::load_model_with(runtime, &args.model, sessions)?;
    task.check_model(&model).map_err(anyhow::Error::msg)?;
    let progress = ProgressBar::new(inputs.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  ETA {eta}  {msg}")
            .expect("a valid template"),
    );
    let failed = AtomicUsize::new(0);
    let outcomes = batch::run_local(&model, &inputs, &task, &ImageLimits::default(), workers, |_, outcome| {
        if outcome.is_err() {
            let count = failed.fetch_add(1, Ordering::Relaxed) + 1;
            progress.set_message(format!("{count} failed"));
        }
        progress.inc(1);
    })
    .map_err(anyhow::Error::msg)?;
    progress.finish();
    let succeeded: Vec<(&str, &ImageOutcome)> = inputs
        .iter()
        .zip(&outcomes)
        .filter_map(|(input, o)| o.as_ref().ok().map(|o| (input.name.as_str(), o)))
        .collect();
    let results = CocoResults::assemble(succeeded.iter().copied());
    std::fs::write(&args.output, serde_json::to_vec(&results)?)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if let Some(folder) = &args.masks_dir {
        write_mask_pngs(folder, &succeeded)?;
    }
    eprintln!("{} images, {} masks -> {}", results.images.len(), results.annotations.len(), args.output.display());
    let errors: Vec<String> = inputs
        .iter()
        .zip(&outcomes)
        .filter_map(|(input, outcome)| outcome.as_ref().err().map(|e| format!("  {}: {e}", input.path.display())))
        .collect();
    if !errors.is_empty() {
        bail!("{} of {} images failed:\n{}", errors.len(), inputs.len(), errors.join("\n"));
    }
    Ok(())
}

fn write_mask_pngs(folder: &Path, outcomes: &[(&str, &ImageOutcome)]) -> Result<()> {
    for (name, outcome) in outcomes {
        let stem = Path::new(name).with_extension("");
        let directory = folder.join(stem);
        std::fs::create_dir_all(&directory).with_context(|| format!("creating {}", directory.display()))?;
        for (k, annotation) in outcome.annotations.iter().enumerate() {
            let mask = samserve::mask::rle::decode(&annotation.segmentation)?;
            let path = directory.join(format!("{k}.png"));
            std::fs::write(&path, samserve::mask::png_bytes(&mask))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
