//! `samserve models inspect DIR`: what samserve makes of a model folder, or why it cannot serve it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use samserve::model::manifest::MANIFEST_FILE;
use samserve::model::{InputLayout, MaskTokens, Runtime, SamModel};

#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Load a model folder and print its layout, sizes, what it supports and its files; exit 1 with the reason
    /// when it cannot be served.
    Inspect {
        /// The model folder.
        folder: PathBuf,
    },
}

pub fn run(runtime: &Runtime, args: &ModelsArgs) -> Result<()> {
    match &args.command {
        ModelsCommand::Inspect { folder } => inspect(runtime, folder),
    }
}

fn inspect(runtime: &Runtime, folder: &Path) -> Result<()> {
    let model = super::load_model(runtime, Some(folder))?;
    print!("{}", describe(&model, folder)?);
    Ok(())
}

/// The report `inspect` prints.
fn describe(model: &SamModel, folder: &Path) -> Result<String> {
    let (encoder, decoder) = (&model.encoder, &model.decoder);
    let single = decoder.single_mask();
    let supported = |yes: bool| if yes { "yes" } else { "no: the decoder gives one mask per prompt" }.to_string();
    let embedding: Vec<String> = encoder.embedding_tensors().map(|(name, shape)| format!("{name} {shape:?}")).collect();
    let low_res = decoder.low_res_size();
    let rows = [
        ("model", model.name().to_string()),
        ("family", encoder.family().name().to_string()),
        (
            "model.toml",
            if folder.join(MANIFEST_FILE).is_file() {
                "yes".to_string()
            } else {
                "no: encoder and decoder told apart by their inputs, name from the folder".to_string()
            },
        ),
        (
            "encoder input",
            match encoder.layout() {
                InputLayout::NormalizedSquare => "normalized: [1, 3, S, S], normalized and padded by samserve",
                InputLayout::ResizedHwc => "rgb_hwc: [h, w, 3] resized RGB 0..255, normalized and padded in the graph",
                InputLayout::OriginalUnit => {
                    "original: [1, 3, H, W] RGB 0..1 at the image's size, resized in the graph"
                }
            }
            .to_string(),
        ),
        ("input size", format!("S = {}", encoder.input_size())),
        ("embedding", format!("{:?}", encoder.embedding_shape())),
        ("tensors", embedding.join(", ")),
        (
            "decoder",
            format!(
                "{}, {}, {}",
                if decoder.takes_orig_im_size() { "official export" } else { "lean export" },
                match decoder.mask_tokens() {
                    MaskTokens::SingleAndMultimask => "4 masks per prompt",
                    MaskTokens::Single => "1 mask per prompt, picked in the graph",
                    MaskTokens::Multimask => "3 multimask candidates per prompt (single-mask requests get the best)",
                },
                if decoder.batches_prompts() { "prompts batched in one run" } else { "one prompt per run" }
            ),
        ),
        ("low-res masks", format!("{} x {}", low_res.height, low_res.width)),
        ("prompts", prompt_kinds(decoder.takes_boxes(), decoder.takes_mask_input())),
        ("multimask", supported(!single)),
        ("everything", supported(!single)),
        ("devices", format!("encoder {}, decoder {}", model.placement.0, model.placement.1)),
    ];
    let mut text: String = rows.iter().map(|(label, value)| format!("{label:<15}{value}\n")).collect();
    text.push_str("files\n");
    let (encoder_file, decoder_file) = (&model.manifest.encoder, &model.manifest.decoder);
    let mut others: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("reading {}", folder.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file() && path != encoder_file && path != decoder_file)
        .collect();
    others.sort();
    let listed = [(encoder_file, "encoder"), (decoder_file, "decoder")];
    for (file, role) in listed.into_iter().chain(others.iter().map(|file| (file, ""))) {
        let shown = file.strip_prefix(folder).unwrap_or(file).display().to_string();
        let size = file.metadata().map_or_else(|_| "missing".to_string(), |m| human_size(m.len()));
        let line = format!("  {shown:<40} {size:>10}  {role}");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    Ok(text)
}

fn prompt_kinds(boxes: bool, mask_input: bool) -> String {
    let mut kinds = vec!["points"];
    kinds.push(if boxes { "box" } else { "no box" });
    kinds.push(if mask_input { "mask_input refinement" } else { "no mask_input" });
    kinds.join(", ")
}

fn human_size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}
