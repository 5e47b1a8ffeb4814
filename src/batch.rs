//! Batch segmentation, shared by `samserve batch` and the HTTP jobs: what to do with each image, and the results
//! of many images as one COCO-style file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::amg::{self, AmgError, AmgInput, AmgParams};
use crate::image_input::{ImageError, ImageLimits, decode_image};
use crate::mask::rle::CocoRle;
use crate::model::{ModelError, PromptError, SamModel};
use crate::segment::{PromptSpec, SmallRegions, check_supported, segment_masks};

/// What a batch does with each image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum BatchTask {
    /// The prompts given for each file (by file name); one mask per prompt (the single-mask output).
    Prompts { prompts: HashMap<String, Vec<PromptSpec>> },
    /// Automatic mask generation on every image.
    Everything { params: AmgParams },
}

impl BatchTask {
    /// Checks what can be checked before any image is seen.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Prompts { prompts } => {
                for (file, specs) in prompts {
                    for (index, spec) in specs.iter().enumerate() {
                        if spec.mask_input.is_some() {
                            return Err(format!("{file}: prompt {index}: mask_input is not available in batches"));
                        }
                        spec.to_prompt().map_err(|e| format!("{file}: prompt {index}: {e}"))?;
                    }
                }
                Ok(())
            }
            Self::Everything { params } => params.validate().map_err(|e| e.to_string()),
        }
    }

    /// Checks that `model` can do the task at all (a decoder without the multimask candidates cannot segment
    /// everything; one without a box input cannot take boxes).
    pub fn check_model(&self, model: &SamModel) -> Result<(), String> {
        match self {
            Self::Prompts { prompts } => {
                for (file, specs) in prompts {
                    for (index, spec) in specs.iter().enumerate() {
                        let prompt = spec.to_prompt().map_err(|e| format!("{file}: prompt {index}: {e}"))?;
                        check_supported(model, index, &prompt).map_err(|e| format!("{file}: {e}"))?;
                    }
                }
                Ok(())
            }
            Self::Everything { .. } => crate::amg::check_model(model).map_err(|e| e.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageFailure {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("no prompts given for this file")]
    NoPrompts,
    #[error("prompt {index}: {error}")]
    Prompt { index: usize, error: PromptError },
    #[error("{0}")]
    Model(String),
}

impl From<ModelError> for ImageFailure {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::Prompt { index, error } => Self::Prompt { index, error },
            other => Self::Model(other.to_string()),
        }
    }
}

impl From<AmgError> for ImageFailure {
    fn from(error: AmgError) -> Self {
        match error {
            AmgError::Model(error) => error.into(),
            other => Self::Model(other.to_string()),
        }
    }
}

/// One mask of one image, before ids are given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageAnnotation {
    pub segmentation: CocoRle,
    pub area: u64,
    /// COCO `[x, y, w, h]` (pycocotools `toBbox`).
    pub bbox: [f64; 4],
    /// Predicted IoU.
    pub score: f32,
    pub stability_score: f32,
    /// The prompt's index in the file's prompt list (prompt mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_index: Option<usize>,
    /// The grid point (everything mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point_coords: Option<Vec<[f64; 2]>>,
}

/// What one image gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageOutcome {
    pub width: usize,
    pub height: usize,
    pub annotations: Vec<ImageAnnotation>,
}

/// Decodes one image file and runs the task on it. `file_name` picks the prompts in prompt mode.
pub fn segment_file(
    model: &SamModel,
    bytes: &[u8],
    file_name: &str,
    limits: &ImageLimits,
    task: &BatchTask,
) -> Result<ImageOutcome, ImageFailure> {
    let image = decode_image(bytes, limits)?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let annotations = match task {
        BatchTask::Prompts { prompts } => {
            let specs = prompts.get(file_name).filter(|specs| !specs.is_empty()).ok_or(ImageFailure::NoPrompts)?;
            let prompts = specs
                .iter()
                .enumerate()
                .map(|(index, spec)| spec.to_prompt().map_err(|error| ImageFailure::Prompt { index, error }))
                .collect::<Result<Vec<_>, _>>()?;
            let embedding = model.encoder.encode(&image)?;
            segment_masks(model, &embedding, &prompts, false, SmallRegions::default())?
                .into_iter()
                .enumerate()
                .filter_map(|(index, masks)| masks.into_iter().next().map(|mask| (index, mask)))
                .map(|(index, mask)| ImageAnnotation {
                    area: mask.runs.area,
                    bbox: mask.runs.bbox_xywh(),
                    segmentation: mask.runs.rle(),
                    score: mask.score,
                    stability_score: mask.stability_score,
                    prompt_index: Some(index),
                    point_coords: None,
                })
                .collect()
        }
        BatchTask::Everything { params } => amg::generate(model, AmgInput::Image(&image), params)?
            .into_iter()
            .map(|generated| {
                let [x0, y0, x1, y1] = generated.extent.map(f64::from);
                let bbox = if generated.area == 0 { [0.0; 4] } else { [x0, y0, x1 - x0 + 1.0, y1 - y0 + 1.0] };
                ImageAnnotation {
                    segmentation: generated.rle(),
                    area: generated.area,
                    bbox,
                    score: generated.predicted_iou,
                    stability_score: generated.stability_score,
                    prompt_index: None,
                    point_coords: Some(vec![generated.point]),
                }
            })
            .collect(),
    };
    Ok(ImageOutcome { width, height, annotations })
}

/// A COCO-style results file: the images that were segmented and every mask, ids from 1 in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoResults {
    pub images: Vec<ResultImage>,
    pub annotations: Vec<ResultAnnotation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultImage {
    pub id: u64,
    pub file_name: String,
    pub width: usize,
    pub height: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultAnnotation {
    pub id: u64,
    pub image_id: u64,
    #[serde(flatten)]
    pub annotation: ImageAnnotation,
}

impl CocoResults {
    /// From `(file name, outcome)` in input order; images that failed are left out (their errors are reported
    /// apart). Ids depend only on the order, so a resumed batch numbers everything as an uninterrupted one.
    pub fn assemble<'a>(outcomes: impl IntoIterator<Item = (&'a str, &'a ImageOutcome)>) -> Self {
        let mut results = Self { images: Vec::new(), annotations: Vec::new() };
        for (file_name, outcome) in outcomes {
            let image_id = results.images.len() as u64 + 1;
            results.images.push(ResultImage {
                id: image_id,
                file_name: file_name.to_string(),
                width: outcome.width,
                height: outcome.height,
            });
            for annotation in &outcome.annotations {
                let id = results.annotations.len() as u64 + 1;
                results.annotations.push(ResultAnnotation { id, image_id, annotation: annotation.clone() });
            }
        }
        results
    }
}

/// One input file of a local batch and the name its results and prompts go by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInput {
    pub path: PathBuf,
    /// The file name for a file given directly, the path below the folder (with `/`) for a file found in a folder.
    pub name: String,
}

const IMAGE_EXTENSIONS: [&str; 9] = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "jfif"];

/// The files to process: files as given, and the image files under folders (recursively, sorted by name).
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<BatchInput>, String> {
    let mut files = Vec::new();
    for input in inputs {
        let metadata = std::fs::metadata(input).map_err(|e| format!("{}: {e}", input.display()))?;
        if metadata.is_dir() {
            let mut found = Vec::new();
            walk(input, input, &mut found)?;
            found.sort_by(|a: &BatchInput, b| a.name.cmp(&b.name));
            files.extend(found);
        } else {
            let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            files.push(BatchInput { path: input.clone(), name });
        }
    }
    Ok(files)
}

fn walk(root: &Path, folder: &Path, found: &mut Vec<BatchInput>) -> Result<(), String> {
    let entries = std::fs::read_dir(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", folder.display()))?.path();
        if path.is_dir() {
            walk(root, &path, found)?;
        } else if path
            .extension()
            .is_some_and(|ext| IMAGE_EXTENSIONS.iter().any(|known| ext.to_string_lossy().eq_ignore_ascii_case(known)))
        {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let name = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            found.push(BatchInput { path, name });
        }
    }
    Ok(())
}

/// Runs the task on every input with `workers` images in flight; outcomes in input order. `on_done` is called as
/// each image finishes (from the worker threads), e.g. to move a progress bar.
pub fn run_local(
    model: &SamModel,
    inputs: &[BatchInput],
    task: &BatchTask,
    limits: &ImageLimits,
    workers: usize,
    on_done: impl Fn(&BatchInput, &Result<ImageOutcome, String>) + Sync,
) -> Result<Vec<Result<ImageOutcome, String>>, String> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(workers.max(1)).build().map_err(|e| e.to_string())?;
    Ok(pool.install(|| {
        inputs
            .par_iter()
            .map(|input| {
                let outcome =
                    std::fs::read(&input.path).map_err(|e| format!("cannot read it: {e}")).and_then(|bytes| {
                        segment_file(model, &bytes, &input.name, limits, task).map_err(|e| e.to_string())
                    });
                on_done(input, &outcome);
                outcome
            })
            .collect()
    }))
}
