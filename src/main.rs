//! The samserve command line: parses the arguments and hands them to the subcommand's module in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use samserve::http::ServeOptions;

use cli::batch::BatchArgs;
use cli::bench::BenchArgs;
use cli::eval::EvalArgs;
use cli::everything::EverythingArgs;
use cli::models::{ModelsArgs, PullArgs};
use cli::runtime::RuntimeArgs;
use cli::segment::SegmentArgs;

#[derive(Parser)]
#[command(version, about = "Promptable image segmentation (Segment Anything) with ONNX Runtime")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (docs/api.md) and the web page until SIGTERM or Ctrl-C.
    Serve(Box<ServeOptions>),
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
    /// Download models by name into the Hugging Face cache (or bring a branch's files up to date).
    Pull(PullArgs),
    /// The model catalogue (`list`), what samserve makes of a model (`inspect`), removing downloads (`rm`).
    Models(ModelsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The S3 client and the Redis client link rustls with different crypto backends; one must be chosen.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Serving and downloading say what they do; the other commands print their results only.
    cli::init_logging(if matches!(cli.command, Command::Serve(_) | Command::Pull(_)) { "info" } else { "warn" });
    // A batch runs one image per core, each on one thread, unless told otherwise.
    let default_threads = match &cli.command {
        Command::Batch(args) => Some(args.threads_per_worker()),
        _ => None,
    };
    let outcome = cli.runtime.load(default_threads).and_then(|runtime| match cli.command {
        Command::Serve(options) => cli::serve::run(runtime, *options),
        Command::Segment(args) => cli::segment::run(&runtime, &args),
        Command::Eval(args) => cli::eval::run(&runtime, &args),
        Command::Everything(args) => cli::everything::run(&runtime, &args),
        Command::Batch(args) => cli::batch::run(&runtime, &args),
        Command::Bench(args) => cli::bench::run(&runtime, &args),
        Command::Pull(args) => cli::models::pull(&args),
        Command::Models(args) => cli::models::run(&runtime, &args),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
