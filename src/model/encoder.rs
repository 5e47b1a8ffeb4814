//! The image encoder: preprocess an RGB8 image and run it once, giving an [`Embedding`].
//!
//! SAM encoders are published taking the image in one of two ways (see [`InputLayout`]); both get the same pixels
//! after the official ResizeLongestSide, so both give the official embedding.

use std::borrow::Cow;
use std::sync::Arc;

use half::f16;
use image::RgbImage;
use ndarray::{Array3, Array4, ArrayViewD};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorRef, TensorValueType};

use super::pool::SessionPool;
use super::preprocess::{ImageSize, normalize_and_pad, resize_bilinear, resized_size, to_hwc_f32};
use super::{Manifest, ModelError, Placement, static_dims};

/// What the encoder made of one image, with the sizes needed to map prompts and masks between frames.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// The host copy: what the cache counts and what a decoder on another device takes.
    tensor: EmbeddingTensor,
    /// The encoder's output left where it was computed, when the decoder runs on that same GPU: decoder runs take
    /// it as it is instead of copying the host tensor over each time. Freed with the last clone (cache entry).
    on_device: Option<Arc<Tensor<f32>>>,
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

    /// The same embedding without its device copy: what a decoder on another device gets (for benchmarks).
    pub fn without_device_copy(&self) -> Self {
        Self { on_device: None, ..self.clone() }
    }

    /// The copy on the decoder's device, if the encoder left one there.
    pub(super) fn on_device(&self) -> Option<&Tensor<f32>> {
        self.on_device.as_deref()
    }
}

/// How an encoder graph takes the image, told apart by the shape of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputLayout {
    /// `[1, 3, S, S]` float32, normalized and zero-padded bottom/right by the caller: the official export,
    /// samexporter without `--use-preprocess`.
    NormalizedSquare,
    /// `[h, w, 3]` float32 RGB in 0..255, resized so that the longest side is S; the graph normalizes, transposes
    /// and pads: samexporter's `--use-preprocess`, as published for MobileSAM (`Acly/MobileSAM`) and AnyLabeling.
    ResizedHwc,
}

impl InputLayout {
    /// The name `GET /v1/models` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::NormalizedSquare => "normalized",
            Self::ResizedHwc => "rgb_hwc",
        }
    }
}

/// What the encoder graph is fed for one image.
pub enum EncoderInput {
    NormalizedSquare(Array4<f32>),
    ResizedHwc(Array3<f32>),
}

impl EncoderInput {
    fn into_tensor(self) -> Result<Tensor<f32>, ort::Error> {
        match self {
            Self::NormalizedSquare(tensor) => Tensor::from_array(tensor),
            Self::ResizedHwc(tensor) => Tensor::from_array(tensor),
        }
    }

    fn view(&self) -> Result<SessionInputValue<'_>, ort::Error> {
        Ok(match self {
            Self::NormalizedSquare(tensor) => TensorRef::from_array_view(tensor)?.into(),
            Self::ResizedHwc(tensor) => TensorRef::from_array_view(tensor)?.into(),
        })
    }
}

/// SAM-family image encoders (ViT with 16-pixel patches, TinyViT) make one embedding cell per 16 x 16 input pixels:
/// S when the graph does not state it (a `ResizedHwc` input has no fixed size).
const INPUT_PIXELS_PER_EMBEDDING_CELL: usize = 16;

pub struct Encoder {
    sessions: SessionPool,
    layout: InputLayout,
    input_name: String,
    output_name: String,
    input_size: usize,
    embedding_shape: [usize; 3],
    pixel_mean: [f32; 3],
    pixel_std: [f32; 3],
    /// Where embeddings also stay after the run (IoBinding): the decoder's GPU, when it shares it with the encoder.
    keep_on: Option<Placement>,
}

impl Encoder {
    /// Reads the shapes from the first session; all sessions are of the same file. `decoder_takes` is the
    /// decoder's `image_embeddings` [C, h, w] (`None` where dynamic): it fills what the encoder's output leaves
    /// dynamic (encoders with the preprocessing inside have a dynamic output), and must agree with the rest.
    pub(super) fn new(
        sessions: Vec<Session>,
        manifest: &Manifest,
        decoder_takes: [Option<usize>; 3],
    ) -> Result<Self, ModelError> {
        let session = &sessions[0];
        let file = &manifest.encoder;
        let contract = |message: String| ModelError::Contract { file: file.display().to_string(), message };
        let (Some(input), Some(output)) = (session.inputs().first(), session.outputs().first()) else {
            return Err(contract("it needs one input and one output".to_string()));
        };
        let (input_name, output_name) = (input.name().to_string(), output.name().to_string());
        let gives = match static_dims(session.outputs(), &output_name, file)?.as_slice() {
            [_, c, h, w] => [*c, *h, *w],
            other => {
                return Err(contract(format!("output `{output_name}` must be [1, C, h, w], not {other:?}")));
            }
        };
        let mut embedding_shape = [0; 3];
        for (axis, (given, taken)) in gives.into_iter().zip(decoder_takes).enumerate() {
            embedding_shape[axis] = match (given, taken) {
                (Some(given), Some(taken)) if given != taken => {
                    let show = |dims: [Option<usize>; 3]| format!("{:?}", dims.map(|d| d.map_or(-1, |d| d as i64)));
                    return Err(contract(format!(
                        "it gives embeddings of {} but the decoder takes {} (-1: dynamic): they are not one model",
                        show(gives),
                        show(decoder_takes)
                    )));
                }
                (Some(size), _) | (None, Some(size)) => size,
                (None, None) => {
                    return Err(contract(format!(
                        "neither it nor the decoder states the embedding's axis {}",
                        axis + 1
                    )));
                }
            };
        }
        let (layout, stated_size) = match static_dims(session.inputs(), &input_name, file)?.as_slice() {
            [_, Some(3), Some(h), Some(w)] if h == w => (InputLayout::NormalizedSquare, Some(*h)),
            [_, Some(3), None, None] => (InputLayout::NormalizedSquare, None),
            [_, _, Some(3)] => (InputLayout::ResizedHwc, None),
            other => {
                let expected = "[1, 3, S, S] (normalized) or [h, w, 3] (resized RGB)";
                return Err(contract(format!("input `{input_name}` must be {expected}, not {other:?}")));
            }
        };
        let input_size = match (stated_size, manifest.image_size, layout) {
            (Some(stated), Some(given), _) if stated != given => {
                return Err(contract(format!("its input is {stated} px but model.toml says image_size = {given}")));
            }
            (Some(size), _, _) | (None, Some(size), _) => size,
            (None, None, InputLayout::ResizedHwc) => INPUT_PIXELS_PER_EMBEDDING_CELL * embedding_shape[1],
            (None, None, InputLayout::NormalizedSquare) => {
                return Err(contract("the input size is dynamic and model.toml gives no image_size".into()));
            }
        };
        Ok(Self {
            sessions: SessionPool::new(sessions),
            layout,
            input_name,
            output_name,
            input_size,
            embedding_shape,
            pixel_mean: manifest.pixel_mean,
            pixel_std: manifest.pixel_std,
            keep_on: None,
        })
    }

    /// Leave each embedding on `placement` as well as copying it to the host (see [`Embedding`]).
    pub(super) fn keep_embeddings_on(&mut self, placement: Placement) {
        self.keep_on = Some(placement);
    }

    /// S: the side of the square the encoder takes.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// [C, h, w] of the embedding.
    pub fn embedding_shape(&self) -> [usize; 3] {
        self.embedding_shape
    }

    /// How the graph takes the image.
    pub fn layout(&self) -> InputLayout {
        self.layout
    }

    /// The official preprocessing alone, as far as this graph leaves it to the caller: the resized size and what
    /// the graph is fed.
    pub fn preprocess(&self, image: &RgbImage) -> (ImageSize, EncoderInput) {
        let original = ImageSize::new(image.height() as usize, image.width() as usize);
        let resized_size = resized_size(original, self.input_size);
        let resized = resize_bilinear(image, resized_size);
        let input = match self.layout {
            InputLayout::NormalizedSquare => EncoderInput::NormalizedSquare(normalize_and_pad(
                &resized,
                self.input_size,
                self.pixel_mean,
                self.pixel_std,
            )),
            InputLayout::ResizedHwc => EncoderInput::ResizedHwc(to_hwc_f32(&resized)),
        };
        (resized_size, input)
    }

    /// Preprocesses and encodes one image.
    pub fn encode(&self, image: &RgbImage) -> Result<Embedding, ModelError> {
        let original = ImageSize::new(image.height() as usize, image.width() as usize);
        let (resized, input) = self.preprocess(image);
        let (tensor, on_device) = self.sessions.with_session(|session| -> Result<_, ModelError> {
            match self.keep_on {
                None => {
                    let outputs = session.run(ort::inputs![self.input_name.as_str() => input.view()?])?;
                    Ok((host_array(outputs[self.output_name.as_str()].try_extract_array::<f32>()?)?, None))
                }
                Some(placement) => {
                    let mut binding = session.create_binding()?;
                    // Owned: ort copies a bound view of borrowed data through a helper session that deadlocks
                    // (ort 2.0.0-rc.15, `IdentitySessionHandle::new` re-entering its lock).
                    binding.bind_input(self.input_name.as_str(), &input.into_tensor()?)?;
                    binding.bind_output_to_device(self.output_name.as_str(), &memory_info(placement)?)?;
                    let on_device = session
                        .run_binding(&binding)?
                        .remove(self.output_name.as_str())
                        .ok_or_else(|| ModelError::Contract {
                            file: "encoder".into(),
                            message: "the bound output is missing".into(),
                        })?
                        .downcast::<TensorValueType<f32>>()?;
                    let host = on_device.to(AllocationDevice::CPU, 0)?;
                    Ok((host_array(host.try_extract_array::<f32>()?)?, Some(Arc::new(on_device))))
                }
            }
        })?;
        Ok(Embedding { tensor: EmbeddingTensor::F32(tensor), on_device, original, resized })
    }
}

/// The encoder output (already on the host) as an owned [1, C, h, w] array.
fn host_array(output: ArrayViewD<f32>) -> Result<Array4<f32>, ModelError> {
    output
        .into_dimensionality::<ndarray::Ix4>()
        .map(|view| view.to_owned())
        .map_err(|e| ModelError::Contract { file: "encoder".into(), message: e.to_string() })
}

fn memory_info(placement: Placement) -> Result<MemoryInfo<'static>, ort::Error> {
    let (device, index) = match placement {
        Placement::Cpu => (AllocationDevice::CPU, 0),
        Placement::Cuda(index) => (AllocationDevice::CUDA, index),
    };
    MemoryInfo::new(device, index, AllocatorType::Device, MemoryType::Default)
}
