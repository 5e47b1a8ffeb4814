//! How a decoder graph takes the prompts' points: the input names, shapes and dtypes of each published layout.

use std::borrow::Cow;

use ndarray::{Array2, Array3, Axis};
use ort::session::SessionInputValue;
use ort::value::{Outlet, Tensor};

use super::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointInputs {
    /// `point_coords` [L, N, 2] and `point_labels` [L, N], float32, one row per prompt: SamOnnxModel and the
    /// exports that keep its contract (samexporter's SAM and SAM 2, EdgeSAM).
    SamOnnx,
    /// `input_points` [1, L, N, 2] float32 and `input_labels` [1, L, N] int64, the prompts along the second axis:
    /// transformers' SamModel as optimum exports it (the transformers.js files, `Xenova/slimsam-77-uniform`). The
    /// graph has no box input (labels 2 and 3 mean nothing to its prompt encoder) and pads every prompt itself.
    Transformers,
}

impl PointInputs {
    /// The layout of a decoder graph with these inputs, if it is one.
    pub fn detect(inputs: &[Outlet]) -> Option<Self> {
        let has = |name: &str| inputs.iter().any(|input| input.name() == name);
        [Self::SamOnnx, Self::Transformers].into_iter().find(|layout| {
            let (coords, labels) = layout.names();
            has(coords) && has(labels)
        })
    }

    /// The names of the coordinates and labels inputs.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::SamOnnx => ("point_coords", "point_labels"),
            Self::Transformers => ("input_points", "input_labels"),
        }
    }

    /// The axis of the coordinates input along which prompts go: dynamic there, many prompts share one run.
    pub fn prompt_axis(self) -> usize {
        match self {
            Self::SamOnnx => 0,
            Self::Transformers => 1,
        }
    }

    /// Whether a prompt can have a box (as two corner points labelled 2 and 3).
    pub fn takes_boxes(self) -> bool {
        self == Self::SamOnnx
    }

    /// Whether the caller adds the padding point, (0, 0) labelled -1, to a prompt without a box. SamOnnxModel
    /// leaves it to the caller, as SamPredictor adds it before its prompt encoder; SAM 2's and transformers'
    /// exports add it in the graph.
    pub fn caller_pads(self, family: Family) -> bool {
        self == Self::SamOnnx && family == Family::Sam
    }

    /// `coords` [L, N, 2] and `labels` [L, N] as this layout's two inputs, by name.
    pub fn values(
        self,
        coords: Array3<f32>,
        labels: Array2<f32>,
    ) -> Result<[(Cow<'static, str>, SessionInputValue<'static>); 2], ort::Error> {
        let (coords_name, labels_name) = self.names();
        Ok(match self {
            Self::SamOnnx => [
                (coords_name.into(), Tensor::from_array(coords)?.into()),
                (labels_name.into(), Tensor::from_array(labels)?.into()),
            ],
            Self::Transformers => {
                let labels = labels.mapv(|label| label as i64).insert_axis(Axis(0));
                [
                    (coords_name.into(), Tensor::from_array(coords.insert_axis(Axis(0)))?.into()),
                    (labels_name.into(), Tensor::from_array(labels)?.into()),
                ]
            }
        })
    }
}
