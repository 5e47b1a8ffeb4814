//! `samserve models list|inspect|rm` and `samserve pull`: the catalogue, what samserve makes of a model, and the
//! Hugging Face cache's copies of hub models.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use samserve::hub::{self, CatalogueEntry, Hub, LocalModel, ModelSpec};
use samserve::model::manifest::MANIFEST_FILE;
use samserve::model::{InputLayout, MaskTokens, Runtime, SamModel, SessionCounts};

#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// The catalogue: every model known by name, its family, download size, license and source, and whether the
    /// Hugging Face cache holds it.
    List,
    /// Load a model and print its layout, sizes, what it supports and its files; exit 1 with the reason when it
    /// cannot be served.
    Inspect {
        /// A catalogue name, hf:OWNER/REPO[@REVISION][/SUBFOLDER], a model folder or samserve-s.
        model: String,
    },
    /// Remove hub models from the Hugging Face cache (a catalogue name: its files; hf:OWNER/REPO: the whole repo).
    Rm {
        #[arg(required = true)]
        models: Vec<String>,
    },
}

/// `samserve pull NAME...`.
#[derive(Args)]
pub struct PullArgs {
    /// Catalogue names or hf:OWNER/REPO[@REVISION][/SUBFOLDER].
    #[arg(required = true)]
    models: Vec<String>,
}

pub fn run(runtime: &Runtime, args: &ModelsArgs) -> Result<()> {
    match &args.command {
        ModelsCommand::List => {
            print!("{}", list(&Hub::from_env()));
            Ok(())
        }
        ModelsCommand::Inspect { model } => inspect(runtime, model),
        ModelsCommand::Rm { models } => models.iter().try_for_each(|model| remove(&Hub::from_env(), model)),
    }
}

/// Downloads (or brings up to date) each model and checks that its files form a servable pair.
pub fn pull(args: &PullArgs) -> Result<()> {
    let hub = Hub::from_env();
    for text in &args.models {
        let spec = ModelSpec::parse(text)?;
        if matches!(spec, ModelSpec::Builtin | ModelSpec::Folder(_)) {
            anyhow::bail!("{text}: not a hub model (a catalogue name or hf:OWNER/REPO)");
        }
        let local = hub::materialize(&spec, &hub, true)?;
        let LocalModel::Files { name, folder, graphs } = &local else { unreachable!("hub models are files") };
        let manifest = samserve::model::Manifest::detect_among(name.clone(), folder, graphs.clone())?;
        println!("{name}: ready (encoder {}, decoder {})", manifest.encoder.display(), manifest.decoder.display());
    }
    Ok(())
}

fn list(hub: &Hub) -> String {
    let mut text = format!(
        "{:<30} {:<13} {:>9}  {:<11} {:<28} {}\n",
        "NAME", "FAMILY", "DOWNLOAD", "CACHED", "SUPPORTS", "LICENSE, SOURCE"
    );
    for entry in hub::catalogue() {
        let cached =
            entry.downloads().iter().filter(|path| hub.cached(&entry.repo, &entry.revision, path).is_some()).count();
        let state = match cached {
            0 => "no",
            n if n == entry.downloads().len() => "yes",
            _ => "partly",
        };
        text.push_str(&format!(
            "{:<30} {:<13} {:>6} MB  {:<11} {:<28} {}, {}\n",
            entry.name,
            entry.family,
            entry.size_mb.round(),
            state,
            entry.supports.join(","),
            entry.license,
            entry.source
        ));
    }
    text.push_str(&format!("\ncache: {}\n", hub.cache.display()));
    text
}

fn inspect(runtime: &Runtime, text: &str) -> Result<()> {
    let local = hub::materialize(&ModelSpec::parse(text)?, &Hub::from_env(), false)?;
    let model = local.load(runtime, SessionCounts::default())?;
    let folder = match &local {
        LocalModel::Builtin => None,
        LocalModel::Folder(folder) => Some(folder.as_path()),
        LocalModel::Files { folder, .. } => Some(folder.as_path()),
    };
    print!("{}", describe(&model, folder)?);
    Ok(())
}

/// Removes a hub model's files from the cache: for a catalogue entry its snapshot links and the blobs no other
/// snapshot links to (a repo may hold other models); for `hf:` the repo's whole folder.
fn remove(hub: &Hub, text: &str) -> Result<()> {
    let repo_folder = match ModelSpec::parse(text)? {
        ModelSpec::Catalogue(entry) => {
            let freed = remove_entry(hub, entry)?;
            println!("{}: removed {:.1} MB", entry.name, freed as f64 / 1e6);
            return Ok(());
        }
        ModelSpec::Hub(repo) => hub.repo_folder(&repo.repo),
        ModelSpec::Builtin | ModelSpec::Folder(_) => {
            anyhow::bail!("{text}: not a hub model (a catalogue name or hf:OWNER/REPO)")
        }
    };
    if !repo_folder.exists() {
        println!("{text}: not in the cache");
        return Ok(());
    }
    let freed = folder_size(&repo_folder);
    std::fs::remove_dir_all(&repo_folder).with_context(|| format!("removing {}", repo_folder.display()))?;
    println!("{text}: removed {:.1} MB", freed as f64 / 1e6);
    Ok(())
}

fn remove_entry(hub: &Hub, entry: &CatalogueEntry) -> Result<u64> {
    let mut unlinked = Vec::new();
    for path in entry.downloads() {
        let Some(link) = hub.cached(&entry.repo, &entry.revision, path) else { continue };
        unlinked.extend(link.canonicalize().ok());
        std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    // Looked up once, after every link of the entry is gone: what still links a blob is another model's.
    let still_linked = linked_blobs(&hub.repo_folder(&entry.repo).join("snapshots"));
    unlinked.sort();
    unlinked.dedup();
    let mut freed = 0;
    for blob in unlinked.iter().filter(|blob| !still_linked.contains(blob)) {
        freed += blob.metadata().map_or(0, |m| m.len());
        std::fs::remove_file(blob).with_context(|| format!("removing {}", blob.display()))?;
        hub::remove_unpacked(hub, blob)
            .with_context(|| format!("removing what {} was unpacked into", blob.display()))?;
    }
    Ok(freed)
}

/// The blobs the snapshots' links point to.
fn linked_blobs(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else { return vec![] };
    let mut blobs = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.is_dir() && !path.is_symlink() {
            blobs.extend(linked_blobs(&path));
        } else if let Ok(target) = path.canonicalize() {
            blobs.push(target);
        }
    }
    blobs
}

fn folder_size(folder: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(folder) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => folder_size(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The report `inspect` prints.
fn describe(model: &SamModel, folder: Option<&Path>) -> Result<String> {
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
            match folder {
                None => "built into the binary".to_string(),
                Some(folder) if folder.join(MANIFEST_FILE).is_file() => "yes".to_string(),
                Some(_) => "no: encoder and decoder told apart by their inputs".to_string(),
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
    let Some(folder) = folder else { return Ok(text) };
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
