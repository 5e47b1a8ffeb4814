//! Float tensors across the graph's edge: fp16 exports made with `convert_float_to_float16`'s defaults take and
//! give float16 tensors. samserve computes in f32 and converts where a graph's input or output is float16.

use half::f16;
use ndarray::{ArrayView, CowArray, Dimension, IxDyn};
use ort::session::SessionInputValue;
use ort::value::{DynValue, Outlet, Tensor, TensorElementType, TensorRef};

/// Whether the graph's input or output `name` is a float16 tensor.
pub(super) fn is_half(outlets: &[Outlet], name: &str) -> bool {
    outlets.iter().any(|o| o.name() == name && o.dtype().tensor_type() == Some(TensorElementType::Float16))
}

/// `array` as a graph input: borrowed as it is, or converted to float16 for a `half` input.
pub(super) fn float_input<'a, D: Dimension + 'static>(
    array: ArrayView<'a, f32, D>,
    half: bool,
) -> Result<SessionInputValue<'a>, ort::Error> {
    Ok(if half {
        Tensor::from_array(array.mapv(f16::from_f32))?.into()
    } else {
        TensorRef::from_array_view(array)?.into()
    })
}

/// A float output in f32: borrowed when the graph gives f32, converted when it gives float16.
pub(super) fn float_output(value: &DynValue) -> Result<CowArray<'_, f32, IxDyn>, ort::Error> {
    match value.try_extract_array::<f32>() {
        Ok(array) => Ok(array.into()),
        Err(error) => match value.try_extract_array::<f16>() {
            Ok(array) => Ok(array.mapv(f16::to_f32).into()),
            Err(_) => Err(error),
        },
    }
}
