//! How a decoder graph takes the prompts' points: the input names, shapes and dtypes of each published layout.

use std::borrow::Cow;

use half::f16;
use ndarray::{Array2, Array3, ArrayD, Axis};
use ort::session::SessionInputValue;
use ort::value::{Outlet, Tensor};

use super::Family;

/// The box input of transformers' Sam2Model exports: `[x0, y0, x1, y1]` per prompt, in the resized frame.
pub(super) const BOX_INPUT: &str = "input_boxes";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointInputs {
    /// `point_coords` [L, N, 2] and `point_labels` [L, N], float32, one row per prompt: SamOnnxModel and the
    /// exports that keep its contract (samexporter's SAM and SAM 2, EdgeSAM).
    SamOnnx,
    /// `input_points` [1, L, N, 2] float32 and `input_labels` [1, L, N] int64, the prompts along the second axis,
    /// and where the graph has it `input_boxes` [1, L or 0, 4]: transformers' SamModel as optimum exports it (the
    /// transformers.js files, `Xenova/slimsam-77-uniform`: no box input, and labels 2 and 3 mean nothing to its
    /// prompt encoder), and Sam2Model as `onnx-community` publishes it (with boxes). The graph pads every prompt.
    Transformers,
    /// `batched_point_coords` [1, 1, N, 2] and `batched_point_labels` [1, 1, N], float32, in original pixels, one
    /// prompt per run: EfficientSAM's export. Box corners are points labelled 2 and 3; the graph pads or cuts the
    /// points to [`EFFICIENT_SAM_POINTS`].
    EfficientSam,
}

/// The points EfficientSAM's decoder takes: its graph pads to this many and drops any beyond.
pub const EFFICIENT_SAM_POINTS: usize = 6;

impl PointInputs {
    /// The layout of a decoder graph with these inputs, if it is one.
    pub fn detect(inputs: &[Outlet]) -> Option<Self> {
        let has = |name: &str| inputs.iter().any(|input| input.name() == name);
        [Self::SamOnnx, Self::Transformers, Self::EfficientSam].into_iter().find(|layout| {
            let (coords, labels) = layout.names();
            has(coords) && has(labels)
        })
    }

    /// The names of the coordinates and labels inputs.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::SamOnnx => ("point_coords", "point_labels"),
            Self::Transformers => ("input_points", "input_labels"),
            Self::EfficientSam => ("batched_point_coords", "batched_point_labels"),
        }
    }

    /// The axis of the coordinates input along which prompts go: dynamic there, many prompts share one run.
    pub fn prompt_axis(self) -> usize {
        match self {
            Self::SamOnnx => 0,
            Self::Transformers | Self::EfficientSam => 1,
        }
    }

    /// Whether a prompt can have a box: as two corner points labelled 2 and 3, or in `input_boxes`.
    pub fn takes_boxes(self, inputs: &[Outlet]) -> bool {
        self != Self::Transformers || self.box_input(inputs)
    }

    /// Whether boxes go in an input of their own (`input_boxes`), not as corner points.
    pub fn box_input(self, inputs: &[Outlet]) -> bool {
        self == Self::Transformers && inputs.iter().any(|input| input.name() == BOX_INPUT)
    }

    /// The most point slots (clicks and box corners) a prompt may have, where the graph limits them.
    pub fn max_points(self) -> Option<usize> {
        (self == Self::EfficientSam).then_some(EFFICIENT_SAM_POINTS)
    }

    /// Whether the caller adds the padding point, (0, 0) labelled -1, to a prompt without a box. SamOnnxModel
    /// leaves it to the caller, as SamPredictor adds it before its prompt encoder; SAM 2's and transformers'
    /// exports add it in the graph.
    pub fn caller_pads(self, family: Family) -> bool {
        self == Self::SamOnnx && family == Family::Sam
    }

    /// `boxes` [L or 0, 4] as the box input.
    pub fn box_value(boxes: Array2<f32>) -> Result<(Cow<'static, str>, SessionInputValue<'static>), ort::Error> {
        Ok((BOX_INPUT.into(), Tensor::from_array(boxes.insert_axis(Axis(0)))?.into()))
    }

    /// `coords` [L, N, 2] and `labels` [L, N] as this layout's two inputs, by name; `half`: the graph takes its
    /// float point inputs in float16.
    pub fn values(
        self,
        coords: Array3<f32>,
        labels: Array2<f32>,
        half: bool,
    ) -> Result<[(Cow<'static, str>, SessionInputValue<'static>); 2], ort::Error> {
        let (coords_name, labels_name) = self.names();
        let float = |array: ArrayD<f32>| -> Result<SessionInputValue<'static>, ort::Error> {
            Ok(if half {
                Tensor::from_array(array.mapv(f16::from_f32))?.into()
            } else {
                Tensor::from_array(array)?.into()
            })
        };
        Ok(match self {
            Self::SamOnnx => {
                [(coords_name.into(), float(coords.into_dyn())?), (labels_name.into(), float(labels.into_dyn())?)]
            }
            Self::EfficientSam => [
                (coords_name.into(), float(coords.insert_axis(Axis(0)).into_dyn())?),
                (labels_name.into(), float(labels.insert_axis(Axis(0)).into_dyn())?),
            ],
            Self::Transformers => {
                let labels = labels.mapv(|label| label as i64).insert_axis(Axis(0));
                [
                    (coords_name.into(), float(coords.insert_axis(Axis(0)).into_dyn())?),
                    (labels_name.into(), Tensor::from_array(labels)?.into()),
                ]
            }
        })
    }
}
