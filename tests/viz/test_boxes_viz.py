"""Overlays, box drawings and threshold plots (matplotlib Agg)."""

import numpy as np
import pandas as pd
import pytest
import torch

from gcfeat.viz import (
    class_color,
    denormalize,
    draw_boxes,
    new_figure,
    overlay_heatmap,
    plot_class_curves,
    plot_threshold_curves,
    save_box_figure,
)


def test_denormalize_inverts_normalisation():
    mean, std = (0.4664, 0.3421, 0.3651), (0.2030, 0.1825, 0.1965)
    img = np.random.default_rng(0).integers(0, 256, (3, 5, 7)).astype(np.float32)
    x = (torch.from_numpy(img) / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out = denormalize(x, mean, std)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, np.moveaxis(img, 0, -1).astype(np.uint8))
    assert denormalize(x[None].repeat(2, 1, 1, 1), mean, std).shape == (2, 5, 7, 3)
    assert denormalize(torch.full((3, 2, 2), 100.0), mean, std).max() == 255  # clipped
    with pytest.raises(ValueError, match="denormalize"):
        denormalize(torch.zeros(4, 2, 2), mean, std)


def test_overlay_heatmap_blend():
    from matplotlib import colormaps

    img = np.full((4, 6, 3), 200, np.uint8)
    heat = np.linspace(0, 1, 24).reshape(4, 6)
    assert np.array_equal(overlay_heatmap(img, heat, alpha=0.0), img)
    jet = np.rint(colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)
    assert np.abs(overlay_heatmap(img, heat, alpha=1.0).astype(int) - jet).max() <= 1
    half = overlay_heatmap(img, torch.from_numpy(heat), alpha=0.5)
    assert np.abs(half.astype(float) - (0.5 * 200 + 0.5 * jet)).max() <= 1
    assert overlay_heatmap(img[..., 0], heat).shape == (4, 6, 3)  # grey images
    with pytest.raises(ValueError):
        overlay_heatmap(img, heat[:3])


def test_draw_boxes_styles_and_colours():
    fig = new_figure(3, 3)
    ax = fig.subplots()
    ax.imshow(np.zeros((20, 20, 3), np.uint8))
    draw_boxes(
        ax, [[2, 3, 10, 12], [0, 0, 5, 5]], [1, 10], [0.5, 0.9], class_names=[str(i) for i in range(11)]
    )
    draw_boxes(ax, [[1, 1, 4, 4]], [1], dashed=True, prefix="GT ")
    rects = ax.patches
    assert len(rects) == 3
    assert rects[0].get_xy() == (1.5, 2.5) and rects[0].get_width() == 8 and rects[0].get_height() == 9
    assert rects[0].get_linestyle() == "-" and rects[2].get_linestyle() == "--"
    assert rects[0].get_edgecolor()[:3] == pytest.approx(class_color(1))
    assert class_color(1) != class_color(10) and class_color(3) == class_color(3)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["1 0.50", "10 0.90", "GT 1"]


def test_save_box_figure_not_blank(tmp_path):
    import matplotlib.image as mpimg

    img = np.full((64, 80, 3), 90, np.uint8)
    heat = np.zeros((64, 80))
    heat[10:30, 20:50] = 1
    p = save_box_figure(
        tmp_path / "sub" / "f.png",
        img,
        heat,
        boxes=torch.tensor([[20.0, 10, 50, 30]]),
        labels=torch.tensor([3]),
        scores=torch.tensor([0.8]),
        gt_boxes=np.array([[18, 12, 52, 33]]),
        gt_labels=[3],
        title="a\nb",
    )
    arr = mpimg.imread(p)
    assert arr.shape[1] >= 500 and arr[..., :3].std() > 0.05
    # no boxes, no heat: still writes
    assert save_box_figure(tmp_path / "g.png", img).is_file()


def sweep_table():
    rows = []
    for t in (0.1, 0.3, 0.5):
        for cid, name in [(0, "a"), (1, "b"), (-1, "all")]:
            v = {0.1: 0.2, 0.3: 0.6, 0.5: 0.4}[t] * (1 + 0.1 * cid)
            rows.append(
                dict(
                    threshold=t,
                    class_id=cid,
                    class_name=name,
                    mean_iou=v,
                    hit_rate=v / 2,
                    boxes_per_frame=2.0,
                )
            )
    return pd.DataFrame(rows)


def test_threshold_plots(tmp_path):
    import matplotlib.image as mpimg

    df = sweep_table()
    p = plot_threshold_curves(df, tmp_path / "c.png", title="t")
    assert mpimg.imread(p)[..., :3].std() > 0.02
    paths = plot_class_curves(df, tmp_path / "per")
    assert sorted(x.name for x in paths) == ["tune_a.png", "tune_all.png", "tune_b.png"]
    p3 = plot_threshold_curves(df, tmp_path / "d.png", metrics=("mean_iou", "hit_rate", "boxes_per_frame"))
    assert p3.is_file()
