//! An embedding as a safetensors file: its tensors by decoder input name (F32, or F16 as `--cache-f16` stores
//! them), and in the metadata the image's sizes plus whatever the caller adds. What replicas share through Redis.

use std::collections::HashMap;
use std::sync::Arc;

use half::f16;
use ndarray::ArrayD;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::{Embedding, EmbeddingPart, EmbeddingTensor};
use crate::model::ImageSize;

const ORIGINAL: &str = "original_size";
const RESIZED: &str = "resized_size";

#[derive(Debug, thiserror::Error)]
#[error("not a samserve embedding: {0}")]
pub struct EmbeddingFileError(String);

impl Embedding {
    /// The host tensors (device copies are not written) and `metadata`, with the sizes added as `"H,W"`.
    pub fn to_safetensors(&self, mut metadata: HashMap<String, String>) -> Vec<u8> {
        let size = |s: ImageSize| format!("{},{}", s.height, s.width);
        metadata.insert(ORIGINAL.to_string(), size(self.original));
        metadata.insert(RESIZED.to_string(), size(self.resized));
        let data: Vec<(&str, Dtype, &[usize], Vec<u8>)> = self
            .parts
            .iter()
            .map(|part| match &part.tensor {
                EmbeddingTensor::F32(t) => (&*part.decoder_input, Dtype::F32, t.shape(), le_bytes(t, f32::to_le_bytes)),
                EmbeddingTensor::F16(t) => (&*part.decoder_input, Dtype::F16, t.shape(), le_bytes(t, f16::to_le_bytes)),
            })
            .collect();
        let views = data.iter().map(|(name, dtype, shape, bytes)| {
            (*name, TensorView::new(*dtype, shape.to_vec(), bytes).expect("the bytes fill the shape"))
        });
        safetensors::serialize(views, Some(metadata)).expect("in-memory serialization cannot fail")
    }

    /// The embedding and the metadata of a file [`Self::to_safetensors`] wrote. Tensors come back in the order
    /// written (the decoder takes them by name anyway).
    pub fn from_safetensors(bytes: &[u8]) -> Result<(Self, HashMap<String, String>), EmbeddingFileError> {
        let error = |message: String| EmbeddingFileError(message);
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| error(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let file = SafeTensors::deserialize(bytes).map_err(|e| error(e.to_string()))?;
        let size = |key: &str| -> Result<ImageSize, EmbeddingFileError> {
            let text = metadata.get(key).ok_or_else(|| error(format!("no {key}")))?;
            let parsed: Option<Vec<usize>> = text.split(',').map(|n| n.trim().parse().ok()).collect();
            match parsed.as_deref() {
                Some([height, width]) => Ok(ImageSize::new(*height, *width)),
                _ => Err(error(format!("{key} {text:?}"))),
            }
        };
        let (original, resized) = (size(ORIGINAL)?, size(RESIZED)?);
        // The header's order: offsets ascending, the order the tensors were written in.
        let mut named = file.tensors();
        named.sort_by_key(|(_, view)| view.data().as_ptr() as usize);
        let mut parts = Vec::with_capacity(named.len());
        for (name, view) in named {
            let shape = view.shape().to_vec();
            let tensor = match view.dtype() {
                Dtype::F32 => EmbeddingTensor::F32(array(shape, view.data(), f32::from_le_bytes)?),
                Dtype::F16 => EmbeddingTensor::F16(array(shape, view.data(), f16::from_le_bytes)?),
                other => return Err(error(format!("{name}: dtype {other:?}"))),
            };
            parts.push(EmbeddingPart { decoder_input: Arc::from(name.as_str()), tensor, on_device: None });
        }
        Ok((Self { parts, original, resized }, metadata))
    }
}

fn array<T, const N: usize>(
    shape: Vec<usize>,
    bytes: &[u8],
    from_le: impl Fn([u8; N]) -> T,
) -> Result<ArrayD<T>, EmbeddingFileError> {
    let values: Vec<T> =
        bytes.chunks_exact(N).map(|chunk| from_le(chunk.try_into().expect("chunks of N bytes"))).collect();
    ArrayD::from_shape_vec(shape, values).map_err(|e| EmbeddingFileError(e.to_string()))
}

/// The little-endian bytes of a tensor's values, in logical (row-major) order.
fn le_bytes<T: Copy, const N: usize>(tensor: &ArrayD<T>, to_le: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    tensor.iter().flat_map(|&value| to_le(value)).collect()
}
