//! COCO instance annotations: the images, and each instance's mask from compressed RLE, uncompressed RLE or
//! polygons (rasterized exactly as pycocotools does).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::mask::{BinaryMask, polygon, rle};

#[derive(Debug, thiserror::Error)]
pub enum CocoError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path} is not a COCO annotation file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: annotation {id}: {message}")]
    Annotation { path: PathBuf, id: String, message: String },
}

#[derive(Debug, Deserialize)]
struct RawDataset {
    images: Vec<RawImage>,
    annotations: Vec<RawAnnotation>,
}

#[derive(Debug, Deserialize)]
struct RawImage {
    id: Value,
    file_name: String,
    width: usize,
    height: usize,
}

#[derive(Debug, Deserialize)]
struct RawAnnotation {
    #[serde(default)]
    id: Value,
    image_id: Value,
    segmentation: Value,
    #[serde(default)]
    iscrowd: u8,
}

/// One image with the masks of its instances.
#[derive(Debug)]
pub struct CocoImage {
    pub file_name: String,
    pub width: usize,
    pub height: usize,
    pub instances: Vec<BinaryMask>,
}

/// Reads a COCO annotation file. Crowd annotations (`iscrowd: 1`) and empty masks are left out: they are not
/// objects one would click on. Images keep the order of the file.
pub fn load(path: &Path) -> Result<Vec<CocoImage>, CocoError> {
    let text = std::fs::read_to_string(path).map_err(|error| CocoError::Read { path: path.to_path_buf(), error })?;
    let format = |message: String| CocoError::Format { path: path.to_path_buf(), message };
    let raw: RawDataset = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
    let mut images: Vec<CocoImage> = Vec::with_capacity(raw.images.len());
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for image in raw.images {
        if image.width == 0 || image.height == 0 {
            return Err(format(format!("image {} has no pixels ({}x{})", image.id, image.width, image.height)));
        }
        index_of.insert(image.id.to_string(), images.len());
        images.push(CocoImage {
            file_name: image.file_name,
            width: image.width,
            height: image.height,
            instances: vec![],
        });
    }
    for annotation in raw.annotations {
        let invalid = |message: String| CocoError::Annotation {
            path: path.to_path_buf(),
            id: annotation.id.to_string(),
            message,
        };
        let &index = index_of
            .get(&annotation.image_id.to_string())
            .ok_or_else(|| invalid(format!("its image_id {} is not among the images", annotation.image_id)))?;
        let image = &mut images[index];
        let mask = instance_mask(&annotation.segmentation, image.height, image.width).map_err(invalid)?;
        if annotation.iscrowd == 0 && mask.area() > 0 {
            image.instances.push(mask);
        }
    }
    Ok(images)
}

/// A segmentation in any of COCO's three forms, checked against the image size.
fn instance_mask(segmentation: &Value, height: usize, width: usize) -> Result<BinaryMask, String> {
    match segmentation {
        Value::Array(rings) => {
            let rings = rings
                .iter()
                .map(|ring| {
                    let coordinates = ring
                        .as_array()
                        .ok_or("a polygon must be a list of numbers")?
                        .iter()
                        .map(|v| v.as_f64().filter(|v| v.is_finite()).ok_or("polygon coordinates must be numbers"))
                        .collect::<Result<Vec<f64>, _>>()?;
                    if coordinates.len() < 6 || coordinates.len() % 2 != 0 {
                        return Err("a polygon needs at least 3 points, as [x1, y1, x2, y2, x3, y3, ...]");
                    }
                    Ok(coordinates)
                })
                .collect::<Result<Vec<_>, _>>()?;
            if rings.is_empty() {
                return Err("the polygon list is empty".to_string());
            }
            Ok(polygon::rasterize(&rings, height, width))
        }
        Value::Object(object) => {
            let size: [usize; 2] = serde_json::from_value(object.get("size").cloned().unwrap_or(Value::Null))
                .map_err(|_| "an RLE needs \"size\": [height, width]".to_string())?;
            if size != [height, width] {
                return Err(format!("its RLE size {size:?} is not the image's [{height}, {width}]"));
            }
            match object.get("counts") {
                Some(Value::String(counts)) => {
                    rle::decode(&rle::CocoRle { size, counts: counts.clone() }).map_err(|e| e.to_string())
                }
                Some(Value::Array(counts)) => {
                    let counts = counts
                        .iter()
                        .map(|c| c.as_u64().ok_or("uncompressed RLE counts must be non-negative integers"))
                        .collect::<Result<Vec<u64>, _>>()?;
                    rle::from_counts(&counts, height, width).map_err(|e| e.to_string())
                }
                _ => Err("an RLE needs \"counts\" (a string or a list of integers)".to_string()),
            }
        }
        _ => Err("segmentation must be polygons (a list) or an RLE (an object)".to_string()),
    }
}
