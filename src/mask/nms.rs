//! Box non-maximum suppression with torchvision's `nms` semantics, as segment_anything's generator uses it.

/// An axis-aligned box `[x0, y0, x1, y1]`.
pub type BoxXyxy = [f32; 4];

/// torchvision `box_iou` of two boxes: areas are `(x1 - x0) * (y1 - y0)` (no +1). Degenerate boxes give NaN (0/0),
/// which suppresses nothing, as in torchvision.
fn iou(a: &BoxXyxy, b: &BoxXyxy) -> f32 {
    let area = |r: &BoxXyxy| (r[2] - r[0]) * (r[3] - r[1]);
    let width = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let height = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let intersection = width * height;
    intersection / (area(a) + area(b) - intersection)
}

/// The indices kept, best score first: a box is dropped when its IoU with a kept, higher-scored box is above
/// `iou_threshold`. Equal scores keep their input order (torchvision sorts stably). As in torchvision, the IoU is
/// computed in f32 and compared with the threshold in f64: an IoU that rounds to the f32 nearest 0.98 is above 0.98.
pub fn nms(boxes: &[BoxXyxy], scores: &[f32], iou_threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut kept: Vec<usize> = Vec::new();
    for candidate in order {
        // `any(>)`, not `all(<=)`: a NaN IoU suppresses nothing.
        if !kept.iter().any(|&k| f64::from(iou(&boxes[k], &boxes[candidate])) > iou_threshold) {
            kept.push(candidate);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_of_overlapping_boxes_and_all_disjoint_ones() {
        let boxes = [[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 9.0]];
        let scores = [0.5, 0.9, 0.1, 0.7];
        // IoU(1, 0) = 81/100, IoU(1, 3) = 72/99: both above 0.7; box 2 overlaps nothing.
        assert_eq!(nms(&boxes, &scores, 0.7), vec![1, 2]);
        assert_eq!(nms(&boxes, &scores, 0.95), vec![1, 3, 0, 2]);
    }

    #[test]
    fn equal_scores_keep_input_order_and_degenerate_boxes_survive() {
        let boxes = [[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]];
        assert_eq!(nms(&boxes, &[1.0; 4], 0.5), vec![0, 2, 3]);
    }

    #[test]
    fn the_threshold_is_compared_in_f64_as_torchvision_does() {
        // IoU 13426 / 13700 = 0.98 exactly, which f32 rounds up to 0.98000002 > 0.98 (torchvision suppresses).
        let boxes = [[25.0, 55.0, 125.0, 192.0], [25.0, 55.0, 123.0, 192.0]];
        assert_eq!(nms(&boxes, &[0.9, 0.8], 0.98), vec![0]);
    }
}
