//! The samserve command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use samserve::amg::{self, AmgInput, AmgParams};
use samserve::batch::{self, BatchTask, CocoResults, ImageOutcome};
use samserve::http::ServeOptions;
use samserve::image_input::{ImageLimits, decode_image};
use samserve::model::{Device, Point, PointLabel, Prompt, Runtime, RuntimeOptions, SamModel, SessionCounts};
use samserve::segment::{OutputFormat, SegmentOptions, segment};
use samserve::timing;

#[derive(Parser)]
#[command(version, about = "Promptable image segmentation (Segment Anything) with ONNX Runtime")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct RuntimeArgs {
    /// The ONNX Runtime library to load (else $ORT_DYLIB_PATH, else the one `cargo build` fetched from PyPI).
    #[arg(long, env = "SAMSERVE_ORT_LIB", global = true)]
    ort_lib: Option<PathBuf>,
    /// Where the models run: auto (CUDA when it works, else the CPU), cpu, cuda or cuda:N (fail without CUDA).
    #[arg(long, env = "SAMSERVE_DEVICE", default_value = "auto", global = true)]
    device: Device,
    /// Where the decoder runs, if not where the encoder does (a small decoder can be as fast on the CPU).
    #[arg(long, env = "SAMSERVE_DECODER_DEVICE", global = true)]
    decoder_device: Option<Device>,
    /// Threads per ONNX Runtime session (default: ONNX Runtime's choice, one per core).
    #[arg(long, env = "SAMSERVE_THREADS", global = true)]
    threads: Option<usize>,
    /// Let idle ONNX Runtime threads spin (faster on an otherwise idle machine, slower when cores are shared).
    #[arg(long, env = "SAMSERVE_ORT_SPINNING", global = true)]
    ort_spinning: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (shared/API.md) until SIGTERM or Ctrl-C.
    Serve(ServeOptions),
    /// Segment one image with point and box prompts; writes a PNG mask or, with --json, the API's result JSON.
    Segment(SegmentArgs),
    /// Interactive-segmentation mIoU of a model on a COCO dataset (1 point, 3 points, box, box + point).
    Eval(EvalArgs),
    /// Segment everything in one image (SamAutomaticMaskGenerator's semantics); writes the masks as JSON.
    Everything(EverythingArgs),
    /// Segment many images (files and folders, recursively) with prompts or everything; writes COCO results.
    Batch(BatchArgs),
    /// Time the encoder and the decoder on the chosen device(s), with this model and image.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// A model folder; the built-in model by default.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The image (a synthetic 1500x1000 one by default).
    image: Option<PathBuf>,
    /// Timed runs per measure.
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

fn run_bench(runtime: &Runtime, args: &BenchArgs) -> Result<()> {
    let model = load_model(runtime, args.model.as_deref())?;
    let image = match &args.image {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            decode_image(&bytes, &ImageLimits::default()).with_context(|| path.display().to_string())?
        }
        None => image::RgbImage::from_fn(1500, 1000, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])),
    };
    let (width, height) = (f64::from(image.width()), f64::from(image.height()));
    let click = |i: usize| Prompt {
        points: vec![Point {
            x: width * (0.1 + 0.8 * (i % 8) as f64 / 8.0),
            y: height * 0.5,
            label: PointLabel::Foreground,
        }],
        ..Prompt::default()
    };
    let embedding = model.encoder.encode(&image)?;
    let one = [click(0)];
    let batch: Vec<Prompt> = (0..64).map(click).collect();
    let (encode_p50, encode_p99) = timing::percentiles(args.runs, || drop(model.encoder.encode(&image)));
    let (decode_p50, decode_p99) = timing::percentiles(args.runs * 5, || drop(model.decoder.decode(&embedding, &one)));
    let (batch_p50, _) = timing::percentiles(args.runs, || drop(model.decoder.decode(&embedding, &batch)));
    let (encoder_device, decoder_device) = model.placement;
    println!(
        "{} on a {}x{} image; encoder on {encoder_device}, decoder on {decoder_device}",
        model.name(),
        image.width(),
        image.height()
    );
    println!("encode (preprocess + encoder)   p50 {encode_p50:8.2} ms   p99 {encode_p99:8.2} ms");
    println!("decode one click                p50 {decode_p50:8.2} ms   p99 {decode_p99:8.2} ms");
    let per_prompt = batch_p50 / batch.len() as f64;
    println!("decode 64 clicks                p50 {batch_p50:8.2} ms   ({per_prompt:.3} ms per click)");
    Ok(())
}

#[derive(Args)]
struct EverythingArgs {
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

fn run_everything(runtime: &Runtime, args: &EverythingArgs) -> Result<()> {
    let model = load_model(runtime, args.model.as_deref())?;
    let bytes = std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let image = decode_image(&bytes, &ImageLimits::default()).with_context(|| args.image.display().to_string())?;
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

#[derive(Args)]
struct BatchArgs {
    /// A model folder; the built-in model by default.
    #[arg(long)]
    model: Option<PathBuf>,
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

fn run_batch(runtime: &Runtime, args: &BatchArgs, workers: usize) -> Result<()> {
    let task = match (&args.prompts, args.everything) {
        (Some(file), false) => {
            let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let prompts =
                serde_json::from_slice(&text).with_context(|| format!("{} is not a prompts file", file.display()))?;
            BatchTask::Prompts { prompts }
        }
        (None, true) => BatchTask::Everything { params: args.params.clone() },
        _ => bail!("give --prompts FILE or --everything"),
    };
    task.validate().map_err(anyhow::Error::msg)?;
    let inputs = batch::collect_inputs(&args.inputs).map_err(anyhow::Error::msg)?;
    let sessions = SessionCounts { encoder: workers, decoder: workers };
    let model = load_model_with(runtime, args.model.as_deref(), sessions)?;
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

fn write_mask_pngs(folder: &std::path::Path, outcomes: &[(&str, &ImageOutcome)]) -> Result<()> {
    for (name, outcome) in outcomes {
        let stem = std::path::Path::new(name).with_extension("");
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

#[derive(Args)]
struct EvalArgs {
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

fn run_eval(runtime: &Runtime, args: &EvalArgs) -> Result<()> {
    let model = load_model(runtime, args.model.as_deref())?;
    let dataset = samserve::coco::load(&args.coco)?;
    let report = samserve::eval::evaluate(&model, &dataset, &args.images)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

#[derive(Args)]
struct SegmentArgs {
    /// A model folder (model.toml beside encoder and decoder ONNX files); the built-in model by default.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The image (PNG, JPEG, WebP, BMP, TIFF or GIF).
    image: PathBuf,
    /// A point `X,Y` or `X,Y,LABEL` in image pixels; LABEL 1 = foreground (default), 0 = background. Repeatable.
    #[arg(long = "point", value_parser = parse_point)]
    points: Vec<Point>,
    /// A box `X0,Y0,X1,Y1` in image pixels.
    #[arg(long = "box", value_parser = parse_box)]
    bbox: Option<[f64; 4]>,
    /// Return the 3 candidate masks (the PNG gets the best-scored one).
    #[arg(long)]
    multimask: bool,
    /// Write the API's result JSON instead of a PNG.
    #[arg(long)]
    json: bool,
    /// Encodings in the JSON output.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rle")]
    output: Vec<OutputFormat>,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
}

fn parse_numbers<const N: usize>(text: &str, what: &str) -> Result<[f64; N], String> {
    let numbers: Vec<f64> = text
        .split(',')
        .map(|part| part.trim().parse::<f64>().map_err(|_| format!("`{part}` is not a number in {what} `{text}`")))
        .collect::<Result<_, _>>()?;
    numbers.try_into().map_err(|_| format!("{what} `{text}` needs {N} comma-separated numbers"))
}

fn parse_point(text: &str) -> Result<Point, String> {
    let (xy, label) = match text.matches(',').count() {
        1 => (text, PointLabel::Foreground),
        2 => {
            let (xy, label) = text.rsplit_once(',').expect("two commas");
            let code = label.trim().parse::<i64>().map_err(|_| format!("label `{label}` must be 0 or 1"))?;
            (xy, PointLabel::from_code(code).map_err(|e| e.to_string())?)
        }
        _ => return Err(format!("point `{text}` must be X,Y or X,Y,LABEL")),
    };
    let [x, y] = parse_numbers::<2>(xy, "point")?;
    Ok(Point { x, y, label })
}

fn parse_box(text: &str) -> Result<[f64; 4], String> {
    parse_numbers::<4>(text, "box")
}

/// The model folder given, or the built-in model.
fn load_model(runtime: &Runtime, folder: Option<&std::path::Path>) -> Result<SamModel> {
    load_model_with(runtime, folder, SessionCounts::default())
}

fn load_model_with(runtime: &Runtime, folder: Option<&std::path::Path>, sessions: SessionCounts) -> Result<SamModel> {
    match folder {
        Some(folder) => {
            SamModel::load(folder, runtime, sessions).with_context(|| format!("loading {}", folder.display()))
        }
        None => SamModel::builtin(runtime, sessions).context("loading the built-in model"),
    }
}

fn run_segment(runtime: &Runtime, args: &SegmentArgs) -> Result<()> {
    let model = load_model(runtime, args.model.as_deref())?;
    let bytes = std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let image = decode_image(&bytes, &ImageLimits::default()).with_context(|| args.image.display().to_string())?;
    let started = Instant::now();
    let embedding = model.encoder.encode(&image)?;
    let encode_ms = started.elapsed().as_secs_f64() * 1e3;
    let prompt = Prompt { points: args.points.clone(), bbox: args.bbox, mask_input: None };
    let outputs = if args.json { args.output.clone() } else { vec![OutputFormat::Png] };
    let options = SegmentOptions { multimask: args.multimask, outputs };
    let started = Instant::now();
    let results = segment(&model, &embedding, &[prompt], &options)?;
    let decode_ms = started.elapsed().as_secs_f64() * 1e3;
    if args.json {
        let body = serde_json::json!({
            "model": model.name(),
            "width": image.width(),
            "height": image.height(),
            "encode_ms": encode_ms,
            "decode_ms": decode_ms,
            "results": results,
        });
        std::fs::write(&args.out, serde_json::to_vec_pretty(&body)?)?;
    } else {
        let best = results.first().and_then(|r| r.masks.first()).and_then(|m| m.encodings.png.as_deref());
        let Some(png) = best else { bail!("the model returned no mask") };
        std::fs::write(&args.out, BASE64.decode(png)?)?;
    }
    Ok(())
}

/// Logs go to stderr: plain text, or JSON lines with LOG_FORMAT=json; the level comes from RUST_LOG.
fn init_logging(default_level: &str) {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" });
    // ORT_DYLIB_PATH is the name ort's own users know.
    let library = cli.runtime.ort_lib.clone().or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
    // A batch runs one image per core, each on one thread, unless told otherwise.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batch_workers = match &cli.command {
        Command::Batch(args) => args.workers.unwrap_or(cores).max(1),
        _ => 1,
    };
    let threads = match &cli.command {
        Command::Batch(_) => cli.runtime.threads.or(Some((cores / batch_workers).max(1))),
        _ => cli.runtime.threads,
    };
    let options = RuntimeOptions {
        library,
        device: cli.runtime.device,
        decoder_device: cli.runtime.decoder_device,
        intra_threads: threads,
        spinning: cli.runtime.ort_spinning,
    };
    let outcome = Runtime::load(options).map_err(anyhow::Error::from).and_then(|runtime| match cli.command {
        Command::Serve(options) => actix_web::rt::System::new().block_on(samserve::http::serve(runtime, options)),
        Command::Segment(args) => run_segment(&runtime, &args),
        Command::Eval(args) => run_eval(&runtime, &args),
        Command::Everything(args) => run_everything(&runtime, &args),
        Command::Batch(args) => run_batch(&runtime, &args, batch_workers),
        Command::Bench(args) => run_bench(&runtime, &args),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_with_and_without_labels() {
        assert_eq!(parse_point("10,20.5").unwrap(), Point { x: 10.0, y: 20.5, label: PointLabel::Foreground });
        assert_eq!(parse_point("1,2,0").unwrap().label, PointLabel::Background);
        assert!(parse_point("1,2,7").is_err());
        assert!(parse_point("1").is_err());
        assert!(parse_point("a,2").is_err());
        assert_eq!(parse_box("1,2,3,4").unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert!(parse_box("1,2,3").is_err());
    }
}
