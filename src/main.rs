//! The samserve command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Parser, Subcommand};
use samserve::http::ServeOptions;
use samserve::image_input::{ImageLimits, decode_image};
use samserve::model::{Device, Point, PointLabel, Prompt, Runtime, SamModel, SessionCounts};
use samserve::segment::{OutputFormat, SegmentOptions, segment};

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
    /// Where the models run.
    #[arg(long, env = "SAMSERVE_DEVICE", value_enum, default_value = "auto", global = true)]
    device: Device,
    /// Threads per ONNX Runtime session (default: ONNX Runtime's choice, one per core).
    #[arg(long, env = "SAMSERVE_THREADS", global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (shared/API.md) until SIGTERM or Ctrl-C.
    Serve(ServeOptions),
    /// Segment one image with point and box prompts; writes a PNG mask or, with --json, the API's result JSON.
    Segment(SegmentArgs),
    /// Interactive-segmentation mIoU of a model on a COCO dataset (1 point, 3 points, box, box + point).
    Eval(EvalArgs),
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
    match folder {
        Some(folder) => SamModel::load(folder, runtime, SessionCounts::default())
            .with_context(|| format!("loading {}", folder.display())),
        None => SamModel::builtin(runtime, SessionCounts::default()).context("loading the built-in model"),
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
        let best = results.first().and_then(|r| r.masks.first()).and_then(|m| m.png.as_deref());
        let Some(png) = best else { bail!("the model returned no mask") };
        std::fs::write(&args.out, BASE64.decode(png)?)?;
    }
    Ok(())
}

/// Logs go to stderr: plain text, or JSON lines with LOG_FORMAT=json; the level comes from RUST_LOG.
fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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
    let outcome = Runtime::load(library.as_deref(), cli.runtime.device, cli.runtime.threads)
        .map_err(anyhow::Error::from)
        .and_then(|runtime| match cli.command {
            Command::Serve(options) => actix_web::rt::System::new().block_on(samserve::http::serve(runtime, options)),
            Command::Segment(args) => run_segment(&runtime, &args),
            Command::Eval(args) => run_eval(&runtime, &args),
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
