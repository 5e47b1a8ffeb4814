//! COCO instance annotations: the images, and each instance's mask from compressed RLE, uncompressed RLE or
//! polygons (rasterized exactly as pycocotools does).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::image_input::ImageLimits;
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
    parse(&text, path)
}

/// [`load`] of the file's text (`path` names it in errors).
fn parse(text: &str, path: &Path) -> Result<Vec<CocoImage>, CocoError> {
    let format = |message: String| CocoError::Format { path: path.to_path_buf(), message };
    let raw: RawDataset = serde_json::from_str(text).map_err(|e| format(e.to_string()))?;
    let mut images: Vec<CocoImage> = Vec::with_capacity(raw.images.len());
    let mut index_of: HashMap<String, usize> = HashMap::new();
    // Each instance mask is allocated whole: an image the service would refuse to decode is refused here too,
    // before a width x height of 10^12 (or one overflowing usize) asks for that much memory.
    let max_pixels = ImageLimits::default().max_pixels;
    for image in raw.images {
        if image.width == 0 || image.height == 0 {
            return Err(format(format!("image {} has no pixels ({}x{})", image.id, image.width, image.height)));
        }
        let pixels = (image.width as u64).checked_mul(image.height as u64);
        if pixels.is_none_or(|pixels| pixels > max_pixels) {
            return Err(format(format!(
                "image {} is {}x{} pixels, more than the limit of {max_pixels} pixels",
                image.id, image.width, image.height
            )));
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
                    // (The rings' lengths and values are checked by `rasterize`.)
                    ring.as_array()
                        .ok_or("a polygon must be a list of numbers")?
                        .iter()
                        .map(|v| v.as_f64().ok_or("polygon coordinates must be numbers"))
                        .collect::<Result<Vec<f64>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            if rings.is_empty() {
                return Err("the polygon list is empty".to_string());
            }
            polygon::rasterize(&rings, height, width).map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::proptest_support::{config, json_value, mutated};

    const FIXTURE: &str = include_str!("../tests/fixtures/coco/annotations.json");

    fn parse_value(dataset: &Value) -> Result<Vec<CocoImage>, CocoError> {
        parse(&dataset.to_string(), Path::new("annotations.json"))
    }

    fn one_annotation(width: u64, height: u64, segmentation: Value) -> Value {
        json!({
            "images": [{"id": 1, "file_name": "a.png", "width": width, "height": height}],
            "annotations": [{"id": 1, "image_id": 1, "segmentation": segmentation}],
        })
    }

    // Found by the property tests below: images whose masks cannot be allocated (or whose size overflows).
    #[test]
    fn images_past_the_pixel_limit_are_refused() {
        let ring = json!([[0, 0, 1, 0, 1, 1]]);
        for (width, height) in [(1u64 << 40, 1u64 << 40), (u64::MAX, 2), (10_000, 5_001)] {
            let message = parse_value(&one_annotation(width, height, ring.clone())).unwrap_err().to_string();
            assert!(message.contains("more than the limit of 50000000 pixels"), "{message}");
        }
        // The limit itself is fine (nothing allocated without annotations).
        let at_limit =
            json!({"images": [{"id": 1, "file_name": "a.png", "width": 10_000, "height": 5_000}], "annotations": []});
        assert_eq!(parse_value(&at_limit).unwrap()[0].height, 5_000);
        // Uncompressed counts whose sum passes u64, and polygons far outside the image.
        let overflow = one_annotation(2, 1, json!({"size": [1, 2], "counts": [u64::MAX, 3]}));
        assert!(parse_value(&overflow).unwrap_err().to_string().contains("more than 2^64"));
        let far = one_annotation(2, 1, json!([[0, 0, 1e300, 0, 0, 1]]));
        assert!(parse_value(&far).unwrap_err().to_string().contains("far outside"));
    }

    /// Image sides: small ones, and ones past the pixel limit alone or together.
    fn side() -> impl Strategy<Value = u64> {
        prop_oneof![16 => 1u64..24, 1 => Just(0), 1 => (1u64 << 26)..u64::MAX, 1 => Just(50_000_001)]
    }

    /// Polygon coordinates on a `side`-pixel axis: mostly in or near the image, now and then far outside, huge,
    /// tiny or not a number at all.
    fn coordinate(side: u64) -> impl Strategy<Value = Value> {
        let side = side.min(1000) as f64;
        prop_oneof![
            40 => (-1.0..side + 1.0).prop_map(|v| json!(v)),
            10 => (0..=side as i64).prop_map(|v| json!(v)),
            1 => prop::sample::select(vec![1e300, -1e300, 5e-324, -0.0, 1e18, f64::MAX, -2.0 * side, 3.0 * side])
                .prop_map(|v| json!(v)),
            1 => json_value(),
        ]
    }

    /// Run lengths covering `pixels` exactly (when it fits in u64), in random pieces.
    fn runs(pixels: Option<u64>) -> impl Strategy<Value = Vec<u64>> {
        vec(any::<u64>(), 0..8).prop_map(move |pieces| {
            let Some(mut left) = pixels else { return pieces };
            let mut runs: Vec<u64> = pieces
                .into_iter()
                .map(|piece| {
                    let run = piece % (left / 2 + 1);
                    left -= run;
                    run
                })
                .collect();
            runs.push(left);
            runs
        })
    }

    /// Segmentations in COCO's three forms, mostly right for the image, and anything else.
    fn segmentation(height: u64, width: u64) -> impl Strategy<Value = Value> {
        let pixels = height.checked_mul(width);
        let size = prop_oneof![8 => Just(json!([height, width])), 1 => json_value()];
        let ring = vec((coordinate(width), coordinate(height)), 3..8)
            .prop_map(|points| json!(points.into_iter().flat_map(|(x, y)| [x, y]).collect::<Vec<_>>()));
        let odd_count = prop_oneof![any::<u64>().prop_map(|v| json!(v)), Just(json!(u64::MAX)), json_value()];
        prop_oneof![
            4 => vec(ring, 1..3).prop_map(Value::Array),
            1 => vec(vec(coordinate(width), 0..8).prop_map(Value::Array), 0..3).prop_map(Value::Array),
            3 => (size.clone(), runs(pixels))
                .prop_map(|(size, runs)| json!({"size": size, "counts": rle::counts_to_string(&runs)})),
            1 => (size.clone(), "[0-o]{0,24}").prop_map(|(size, counts)| json!({"size": size, "counts": counts})),
            3 => (size.clone(), runs(pixels)).prop_map(|(size, runs)| json!({"size": size, "counts": runs})),
            1 => (size, runs(pixels), any::<prop::sample::Index>(), odd_count).prop_map(|(size, mut runs, at, odd)| {
                let mut counts: Vec<Value> = runs.drain(..).map(|run| json!(run)).collect();
                counts.push(json!(0));
                let at = at.index(counts.len());
                counts[at] = odd;
                json!({"size": size, "counts": counts})
            }),
            1 => json_value(),
        ]
    }

    fn dataset() -> impl Strategy<Value = Value> {
        (side(), side()).prop_flat_map(|(width, height)| {
            // Mostly the image's id: one unknown id ends the file's reading.
            let image_id = prop_oneof![9 => Just(1u64), 1 => 0u64..3];
            let crowd = prop::bool::weighted(0.1).prop_map(u8::from);
            let annotation = (image_id, segmentation(height, width), crowd).prop_map(|(image_id, segmentation, crowd)| {
                json!({"id": 5, "image_id": image_id, "segmentation": segmentation, "iscrowd": crowd})
            });
            vec(annotation, 1..4).prop_map(move |annotations| {
                json!({
                    "images": [{"id": 1, "file_name": "a.png", "width": width, "height": height}],
                    "annotations": annotations,
                })
            })
        })
    }

    proptest! {
        #![proptest_config(config(256))]

        #[test]
        fn datasets_load_or_say_what_is_wrong(dataset in dataset()) {
            let image = &dataset["images"][0];
            let (width, height) = (image["width"].as_u64().unwrap(), image["height"].as_u64().unwrap());
            match parse_value(&dataset) {
                Ok(images) => {
                    prop_assert!(width.saturating_mul(height) <= ImageLimits::default().max_pixels);
                    for image in images {
                        prop_assert!(image.instances.iter().all(|m| m.data.len() == image.width * image.height));
                    }
                }
                Err(CocoError::Format { .. } | CocoError::Annotation { .. }) => {}
                Err(error) => prop_assert!(false, "{error}"),
            }
        }

        #[test]
        fn segmentations_give_masks_of_the_image_size(
            (height, width, segmentation) in (1usize..24, 1usize..24)
                .prop_flat_map(|(h, w)| (Just(h), Just(w), segmentation(h as u64, w as u64)))
        ) {
            if let Ok(mask) = instance_mask(&segmentation, height, width) {
                prop_assert_eq!((mask.width, mask.height, mask.data.len()), (width, height, width * height));
            }
        }
    }

    proptest! {
        // The fixture's three images are 160 x 120 or so: each case rasterizes real masks.
        #![proptest_config(config(64))]

        #[test]
        fn mutated_fixture_files_load_or_say_what_is_wrong(
            bytes in mutated(FIXTURE.as_bytes().to_vec(), 4, &["[", "]", "{", "}", ",", "\"", "0", "-", "1e300",
                "18446744073709551615", "\"size\"", "\"counts\"", "\"width\"", "null"])
        ) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text, Path::new("annotations.json"));
        }
    }
}
