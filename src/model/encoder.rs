//! The image encoder: preprocess an RGB8 image and run it once, giving an [`Embedding`].

use std::borrow::Cow;

use half::f16;
use image::RgbImage;
use ndarray::Array4;
use ort::session::Session;
use ort::value::TensorRef;

use super::pool::SessionPool;
use super::preprocess::{ImageSize, normalize_and_pad, resize_bilinear, resized_size};
use super::{Manifest, ModelError, static_dims};

/// What the encoder made of one image, with the sizes needed to map prompts and masks between frames.
#[derive(Debug, Clone)]
pub struct Embedding {
    tensor: EmbeddingTensor,
    /// The image as uploaded (after EXIF orientation).
    pub original: ImageSize,
    /// The image after ResizeLongestSide, before padding to S x S.
    pub resized: ImageSize,
}

/// [1, C, h, w], as the encoder gave it or stored in half precision (half the memory of a cache entry).
#[derive(Debug, Clone)]
enum EmbeddingTensor {
    F32(Array4<f32>),
    F16(Array4<f16>),
}

impl Embedding {
    pub fn size_in_bytes(&self) -> usize {
        match &self.tensor {
            EmbeddingTensor::F32(tensor) => tensor.len() * std::mem::size_of::<f32>(),
            EmbeddingTensor::F16(tensor) => tensor.len() * std::mem::size_of::<f16>(),
        }
    }

    /// The same embedding stored as f16 (rounded to nearest).
    pub fn into_f16(self) -> Self {
        let tensor = match self.tensor {
            EmbeddingTensor::F32(tensor) => EmbeddingTensor::F16(tensor.mapv(f16::from_f32)),
            half => half,
        };
        Self { tensor, ..self }
    }

    /// The tensor in f32, as the decoder takes it (converted when stored as f16).
    pub fn tensor_f32(&self) -> Cow<'_, Array4<f32>> {
        match &self.tensor {
            EmbeddingTensor::F32(tensor) => Cow::Borrowed(tensor),
            EmbeddingTensor::F16(tensor) => Cow::Owned(tensor.mapv(f16::to_f32)),
        }
    }
}

pub struct Encoder {
    sessions: SessionPool,
    input_name: String,
    output_name: String,
    input_size: usize,
    embedding_shape: [usize; 3],
    pixel_mean: [f32; 3],
    pixel_std: [f32; 3],
}

impl Encoder {
    /// Reads the shapes from the first session; all sessions are of the same file.
    pub(super) fn new(sessions: Vec<Session>, manifest: &Manifest) -> Result<Self, ModelError> {
        let session = &sessions[0];
        let file = &manifest.encoder;
        let contract = |message: String| ModelError::Contract { file: file.display().to_string(), message };
        let (Some(input), Some(output)) = (session.inputs().first(), session.outputs().first()) else {
            return Err(contract("it needs one input and one output".to_string()));
        };
        let (input_name, output_name) = (input.name().to_string(), output.name().to_string());
        let input_dims = static_dims(session.inputs(), &input_name, file)?;
        let input_size = match input_dims.as_slice() {
            [_, Some(3), Some(h), Some(w)] if h == w => *h,
            [_, Some(3), None, None] => manifest
                .image_size
                .ok_or_else(|| contract("the input size is dynamic and model.toml gives no image_size".into()))?,
            other => {
                return Err(contract(format!("input `{input_name}` must be [1, 3, S, S], not {other:?}")));
            }
        };
        if manifest.image_size.is_some_and(|s| s != input_size) {
            return Err(contract(format!(
                "its input is {input_size} px but model.toml says image_size = {:?}",
                manifest.image_size
            )));
        }
        let embedding_shape = match static_dims(session.outputs(), &output_name, file)?.as_slice() {
            [_, Some(c), Some(h), Some(w)] => [*c, *h, *w],
            other => {
                return Err(contract(format!("output `{output_name}` must be [1, C, h, w], not {other:?}")));
            }
        };
        Ok(Self {
            sessions: SessionPool::new(sessions),
            input_name,
            output_name,
            input_size,
            embedding_shape,
            pixel_mean: manifest.pixel_mean,
            pixel_std: manifest.pixel_std,
        })
    }

    /// S: the side of the square the encoder takes.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// [C, h, w] of the embedding.
    pub fn embedding_shape(&self) -> [usize; 3] {
        self.embedding_shape
    }

    /// The official preprocessing alone: resized RGB8 and the normalized, padded input tensor.
    pub fn preprocess(&self, image: &RgbImage) -> (ImageSize, Array4<f32>) {
        let original = ImageSize::new(image.height() as usize, image.width() as usize);
        let resized_size = resized_size(original, self.input_size);
        let resized = resize_bilinear(image, resized_size);
        (resized_size, normalize_and_pad(&resized, self.input_size, self.pixel_mean, self.pixel_std))
    }

    /// Preprocesses and encodes one image.
    pub fn encode(&self, image: &RgbImage) -> Result<Embedding, ModelError> {
        let original = ImageSize::new(image.height() as usize, image.width() as usize);
        let (resized, input) = self.preprocess(image);
        let tensor = self.sessions.with_session(|session| -> Result<Array4<f32>, ModelError> {
            let outputs = session.run(ort::inputs![self.input_name.as_str() => TensorRef::from_array_view(&input)?])?;
            outputs[self.output_name.as_str()]
                .try_extract_array::<f32>()?
                .into_dimensionality::<ndarray::Ix4>()
                .map(|view| view.to_owned())
                .map_err(|e| ModelError::Contract { file: "encoder".into(), message: e.to_string() })
        })?;
        Ok(Embedding { tensor: EmbeddingTensor::F32(tensor), original, resized })
    }
}
