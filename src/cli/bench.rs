//! `samserve bench`: encoder and decoder times of a model on the chosen device(s).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use samserve::model::{Point, PointLabel, Prompt, Runtime};
use samserve::timing;

#[derive(Args)]
pub struct BenchArgs {
    /// The model: a catalogue name (`samserve models list`), hf:OWNER/REPO[@REVISION][/SUBFOLDER], a model folder, or
    /// samserve-s, the built-in demo model. Hub files are downloaded once into the Hugging Face cache.
    #[arg(long, default_value = samserve::model::BUILTIN_MODEL)]
    model: String,
    /// The image (a synthetic 1500x1000 one by default).
    image: Option<PathBuf>,
    /// Timed runs per measure.
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

pub fn run(runtime: &Runtime, args: &BenchArgs) -> Result<()> {
    let model = super::load_model(runtime, &args.model)?;
    let image = match &args.image {
        Some(path) => super::read_image(path)?,
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
