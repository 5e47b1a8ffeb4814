//! `samserve segment`: one image and its prompts, without a server; a PNG mask or the API's result JSON.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Args;
use samserve::model::{Point, PointLabel, Prompt, Runtime};
use samserve::segment::{OutputFormat, SegmentOptions, SmallRegions, segment};

#[derive(Args)]
pub struct SegmentArgs {
    /// The model: a catalogue name (`samserve models list`), hf:OWNER/REPO[@REVISION][/SUBFOLDER], a model folder, or
    /// samserve-s, the built-in demo model. Hub files are downloaded once into the Hugging Face cache.
    #[arg(long, default_value = samserve::model::BUILTIN_MODEL)]
    model: String,
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
    /// SAM 2 models: fill holes of at most this many low-res pixels before upsampling (SAM2ImagePredictor's
    /// max_hole_area).
    #[arg(long, default_value_t = 0)]
    max_hole_area: usize,
    /// SAM 2 models: remove islands of at most this many low-res pixels before upsampling (max_sprinkle_area).
    #[arg(long, default_value_t = 0)]
    max_sprinkle_area: usize,
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

pub fn run(runtime: &Runtime, args: &SegmentArgs) -> Result<()> {
    let model = super::load_model(runtime, &args.model)?;
    let image = super::read_image(&args.image)?;
    let started = Instant::now();
    let embedding = model.encoder.encode(&image)?;
    let encode_ms = started.elapsed().as_secs_f64() * 1e3;
    let prompt = Prompt { points: args.points.clone(), bbox: args.bbox, mask_input: None };
    let outputs = if args.json { args.output.clone() } else { vec![OutputFormat::Png] };
    let small_regions = SmallRegions { max_hole_area: args.max_hole_area, max_sprinkle_area: args.max_sprinkle_area };
    let options = SegmentOptions { multimask: args.multimask, outputs, small_regions };
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
