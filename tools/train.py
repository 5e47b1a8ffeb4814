"""SAM-style interactive training of a small official-architecture model on synthetic scenes.

Per step: a batch of scenes is encoded once; for each scene a few instances get a prompt (a random point inside the
target, or its box with jitter), then `rounds - 1` corrective rounds add a point from the error region and feed the
previous low-res logits back as mask_input, as in the SAM paper. Loss: focal (x20) + dice on the best of the three
multimask outputs for a single point, on the single-mask token otherwise, plus MSE of the predicted IoU.
"""

import time
from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from synthetic import make_scene


def _scene_batch(rng, sam, batch_size, max_instances):
    size = sam.image_encoder.img_size
    images, targets = [], []
    for _ in range(batch_size):
        aspect = rng.uniform(0.6, 1.0)
        h, w = (size, int(size * aspect + 0.5)) if rng.uniform() < 0.5 else (int(size * aspect + 0.5), size)
        image, masks = make_scene(rng, h, w)
        while not masks:
            image, masks = make_scene(rng, h, w)
        chosen = rng.permutation(len(masks))[:max_instances]
        x = torch.from_numpy(image).permute(2, 0, 1).float()
        images.append(sam.preprocess(x[None])[0])
        padded = np.zeros((len(chosen), size, size), dtype=np.float32)
        for row, index in enumerate(chosen):
            padded[row, :h, :w] = masks[index]
        targets.append(torch.from_numpy(padded))
    return torch.stack(images), targets


def _random_points(rng, region):
    """One (x, y) per mask, uniformly from the True pixels of region[i] (all-False regions give the centre)."""
    points = []
    for m in region:
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            points.append((m.shape[1] / 2, m.shape[0] / 2))
        else:
            k = rng.integers(0, len(xs))
            points.append((float(xs[k]), float(ys[k])))
    return points


def _jittered_boxes(rng, targets):
    boxes = []
    for m in targets:
        ys, xs = np.nonzero(m)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        jitter = 0.1 * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
        box = np.array([x0, y0, x1, y1], dtype=np.float64) + rng.normal(0, 1, 4) * np.minimum(jitter, 20)
        boxes.append(box)
    return torch.tensor(np.array(boxes), dtype=torch.float32)


def _mask_loss(logits, target):
    """Focal (x20) + dice per mask, logits and target of shape [N, K, H, W] -> [N, K]."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha = 0.25 * target + 0.75 * (1 - target)
    focal = (alpha * ce * (1 - p_t) ** 2).flatten(2).mean(-1)
    inter = (prob * target).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(2).sum(-1) + target.flatten(2).sum(-1) + 1)
    return 20 * focal + dice


def _iou(logits, target):
    pred = logits > 0
    truth = target > 0.5
    inter = (pred & truth).flatten(2).sum(-1).float()
    union = (pred | truth).flatten(2).sum(-1).float()
    return inter / union.clamp(min=1)


def train(sam, steps, seed, batch_size=4, max_instances=4, rounds=3, lr=1e-3, log_every=25):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    sam.train()
    optimizer = torch.optim.AdamW(sam.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    low_res = 4 * sam.prompt_encoder.image_embedding_size[0]
    start = time.time()
    recent = deque(maxlen=log_every)  # losses of the last steps, averaged in the log
    for step in range(steps):
        images, targets = _scene_batch(rng, sam, batch_size, max_instances)
        embeddings = sam.image_encoder(images)
        dense_pe = sam.prompt_encoder.get_dense_pe()
        loss = 0.0
        for b, target_full in enumerate(targets):
            target = F.interpolate(target_full[:, None], (low_res, low_res), mode="bilinear", align_corners=False)
            target_np = target_full.numpy() > 0.5
            use_box = rng.uniform() < 0.5
            boxes = _jittered_boxes(rng, target_np) if use_box else None
            coords = torch.tensor(_random_points(rng, target_np), dtype=torch.float32)[:, None] if not use_box else None
            labels = torch.ones(coords.shape[:2]) if coords is not None else None
            mask_input = None
            for r in range(rounds):
                sparse, dense = sam.prompt_encoder(
                    points=(coords, labels) if coords is not None else None, boxes=boxes, masks=mask_input
                )
                masks, iou_pred = sam.mask_decoder.predict_masks(embeddings[b : b + 1], dense_pe, sparse, dense)
                per_mask = _mask_loss(masks, target.expand_as(masks))
                single_point = r == 0 and not use_box
                if single_point:
                    best = per_mask[:, 1:].argmin(dim=1) + 1
                else:
                    best = torch.zeros(len(masks), dtype=torch.long)
                rows = torch.arange(len(masks))
                loss = loss + per_mask[rows, best].mean()
                loss = loss + F.mse_loss(iou_pred, _iou(masks, target.expand_as(masks)).detach())
                chosen = masks[rows, best][:, None].detach()
                if r + 1 < rounds:
                    up = F.interpolate(chosen, target_full.shape[-2:], mode="bilinear", align_corners=False)[:, 0] > 0
                    error = up.numpy() != target_np
                    new_points = _random_points(rng, error)
                    new_labels = [float(target_np[i, int(y), int(x)]) for i, (x, y) in enumerate(new_points)]
                    new_coords = torch.tensor(new_points, dtype=torch.float32)[:, None]
                    coords = new_coords if coords is None else torch.cat([coords, new_coords], 1)
                    new_labels = torch.tensor(new_labels)[:, None]
                    labels = new_labels if labels is None else torch.cat([labels, new_labels], 1)
                    mask_input = chosen
        loss = loss / (len(targets) * rounds)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recent.append(loss.item())
        if step % log_every == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {np.mean(recent):.4f}  {time.time() - start:6.0f}s", flush=True)
    sam.eval()
    return sam
