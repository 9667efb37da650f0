"""The report's HTML, read back with html.parser: tables, gallery items, image references."""

import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest

from gcfeat.cli.report import main
from gcfeat.io import FeatureFile
from gcfeat.report import ReportError, build_feature_report, build_run_report
from gcfeat.report.gallery import best_ious, mask_box

VOID = {"img", "meta", "br", "input", "rect", "text", "hr", "link"}


class Page(HTMLParser):
    """Tables by class (rows of cell texts), gallery items (attributes, tiles' rects), every
    src / href."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.items, self.refs, self.scripts = {}, [], [], 0
        self._table = self._row = self._cell = None
        self._tile = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            if k in a:
                self.refs.append(a[k])
        if tag == "script":
            self.scripts += 1
        if tag == "table":
            self._table = self.tables.setdefault(a.get("class", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "figure" and "item" in a.get("class", "").split():
            self.items.append({**a, "tiles": []})
        elif tag == "div" and a.get("class") == "tile" and self.items:
            self._tile = {"pred": 0, "gt": 0}
            self.items[-1]["tiles"].append(self._tile)
        elif tag == "rect" and self._tile is not None:
            self._tile["gt" if a.get("class") == "gt" else "pred"] += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "svg":
            self._tile = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _body(table):
    return table[1:]  # first row: the header


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "report.html"
    r = build_run_report(tiny_run, out=out, max_frames=None, progress=False)
    return r, Page(out.read_text())


def test_run_report_tables(report, tiny_run):
    r, p = report
    ap = _body(p.tables["per-class-ap"])
    assert len(ap) == 11
    assert ap[0] == ["bipolar_forceps", "0.900"] and ap[2] == ["large_needle_driver", "n/a"]
    assert _body(p.tables["tune-per-class"]) == [
        ["bipolar_forceps", "0.400", "0.200", "0.250", "0.500", "0.250"]
    ]
    pooled = _body(p.tables["tune-pooled"])
    assert [row[0] for row in pooled] == ["0.200", "0.300", "0.400"]
    assert pooled[1][1] == "0.100"  # mean_iou of all_instruments at T = 0.3
    # box metrics at the feature file's threshold (0.3): one row per class of the study
    bm = _body(p.tables["box-metrics"])
    assert [row[0] for row in bm] == ["bipolar_forceps", "all_instruments"]
    assert bm[0][1] == "0.150"
    # rows per method and class: the feature file's counts
    with FeatureFile(tiny_run / "features.h5") as ff:
        df = ff.to_dataframe()
        classes = ff.classes
    rows = {row[0]: row[1:] for row in _body(p.tables["rows-per-class"])}
    for c in classes:
        want = [int(((df["method"] == m) & (df["class"] == c)).sum()) for m in ("m2", "m3")]
        assert [int(v) for v in rows[c][:2]] == want
    empty_m3 = int(df[(df["method"] == "m3")]["empty"].sum())
    assert int(rows["all"][2]) == empty_m3
    bpf = {row[0]: row for row in _body(p.tables["boxes-per-frame"])}
    assert float(bpf["m2"][1]) == pytest.approx((df["method"] == "m2").sum() / 6, abs=1e-3)
    assert len(p.tables["frame-rows"]) > 0 and "tune" not in r.skipped


def test_run_report_gallery_and_files(report, tiny_run):
    r, p = report
    assert r.frames == 6 and len(p.items) == 6
    assert [int(it["data-order"]) for it in p.items] == list(range(6))
    for it in p.items:
        assert it["data-iou"] == "" or 0.0 <= float(it["data-iou"]) <= 1.0
        assert it["data-classes"]
        assert len(it["tiles"]) >= 1  # the frame; then one tile per shown class
    html = r.html
    for ref in p.refs:
        assert not ref.startswith(("http:", "https:", "//")), ref
        if not ref.startswith("#"):
            assert (html.parent / ref).is_file(), ref
    assert sum(ref.startswith("report_files/") for ref in p.refs) >= 6 + 1  # frames + curves
    assert p.scripts == 1


def test_gallery_boxes_are_the_cam_boxes_of_the_run(report, tiny_run):
    """The frame tile shows every non-tissue box at the run's T; the feature file's M2 rows
    hold the same boxes (same checkpoint, same T): their counts agree frame by frame."""
    r, p = report
    with FeatureFile(tiny_run / "features.h5") as ff:
        df = ff.to_dataframe("m2")
    for it in p.items:
        sub = df[(df["video"] == it["data-video"]) & (df["frame_index"] == int(it["data-frame"]))]
        assert it["tiles"][0]["pred"] == int((sub["class"] != "tissue").sum())


def test_max_frames_is_a_seeded_sample(tiny_run, tmp_path):
    a = build_run_report(tiny_run, out=tmp_path / "a.html", max_frames=3, seed=1, progress=False)
    b = build_run_report(tiny_run, out=tmp_path / "b.html", max_frames=3, seed=1, progress=False)
    fa = [(i["data-video"], i["data-frame"]) for i in Page(a.html.read_text()).items]
    fb = [(i["data-video"], i["data-frame"]) for i in Page(b.html.read_text()).items]
    assert len(fa) == 3 and fa == fb
    assert (tmp_path / "a_files").is_dir() and a.files_dir == tmp_path / "a_files"


def test_feature_report(tiny_run, tmp_path):
    out = tmp_path / "f.html"
    r = build_feature_report(
        tiny_run / "features.h5",
        tiny_run / "data",
        n=4,
        seed=0,
        checkpoint=tiny_run / "ck.pt",
        out=out,
        progress=False,
    )
    p = Page(out.read_text())
    assert r.frames == 4 and len(p.items) == 4
    with FeatureFile(tiny_run / "features.h5") as ff:
        df = ff.to_dataframe("m2")
    for it in p.items:  # boxes from the file's M2 rows, tissue drawn on its own tile only
        sub = df[(df["video"] == it["data-video"]) & (df["frame_index"] == int(it["data-frame"]))]
        assert it["tiles"][0]["pred"] == int((sub["class"] != "tissue").sum())
    for ref in p.refs:
        if not ref.startswith("#"):
            assert (out.parent / ref).is_file(), ref
    # without a checkpoint: the same boxes, no heatmap images
    r2 = build_feature_report(
        tiny_run / "features.h5", tiny_run / "data", n=4, seed=0, out=tmp_path / "g.html", progress=False
    )
    assert r2.frames == 4 and not list(r2.files_dir.glob("*_c*.jpg"))


def test_run_dir_with_summary_only(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"val_mAP": 0.5, "arch": "resnet18"}))
    r = build_run_report(tmp_path, progress=False)
    p = Page(r.html.read_text())
    assert "gallery" in r.skipped and "features" in r.skipped and "threshold" in r.skipped
    assert "settings" in r.sections and not p.items


def test_errors(tmp_path, tiny_run, capsys):
    with pytest.raises(ReportError, match="no such folder"):
        build_run_report(tmp_path / "nope")
    with pytest.raises(ReportError, match="not a run directory"):
        build_run_report(tmp_path)
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    cases = [
        [str(tmp_path / "nope")],
        [str(tmp_path)],
        [str(bad), "--data", str(tmp_path)],
        [str(tiny_run / "features.h5")],
        [str(tiny_run), "--max-frames", "0"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (argv, err)
    assert bad.read_text() == "not hdf5"
    # a folder the report did not write is never emptied
    mine = tmp_path / "mine"
    (mine / "report_files").mkdir(parents=True)
    (mine / "report_files" / "keep.txt").write_text("x")
    (mine / "summary.json").write_text("{}")
    assert main([str(mine)]) == 2
    assert "not written by gcfeat.report" in capsys.readouterr().err
    assert (mine / "report_files" / "keep.txt").read_text() == "x"


def test_cli_run_dir(tiny_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    assert main([str(run), "--max-frames", "2", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (run / "report.html").is_file() and (run / "report_files").is_dir()


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--data" in text and "summary.json" in text and "--checkpoint" in text


def test_best_ious_and_mask_box():
    import torch

    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    pred = np.array([[0, 0, 10, 5], [20, 20, 30, 30]], np.float32)
    # same class: 0.5 for the half box; a box of another class does not count
    np.testing.assert_allclose(best_ious(gt, np.array([1, 2]), pred, np.array([1, 3])), [0.5, 0.0])
    assert best_ious(gt, np.array([1, 2]), pred[:0], np.zeros(0, int)).tolist() == [0.0, 0.0]
    m = torch.zeros(4, 6, 8, dtype=torch.bool)
    m[1:3, 2:5, 3:4] = True
    assert mask_box(m).tolist() == [1, 2, 3, 3, 5, 4]
    assert mask_box(m[1]).tolist() == [3, 2, 4, 5]
    assert mask_box(torch.zeros(3, 3, dtype=torch.bool)) is None


def test_volume_run_montages(tmp_path):
    """organ3d: each gallery item is a montage of axial slices through the ground-truth organ,
    whose box is drawn (dashed) on every shown slice; the evaluation's table is rendered."""
    import torch

    from gcfeat.data.mri_synthetic import write_organ3d
    from gcfeat.models.task_checkpoint import save_task_checkpoint
    from gcfeat.tasks import get_task

    task = get_task("organ3d")
    write_organ3d(tmp_path / "data", n_train=2, n_val=2, n_test=3, seed=0)
    torch.manual_seed(0)
    save_task_checkpoint(tmp_path / "ck.pt", task.build_model("resnet3d_18_slim"), task, "resnet3d_18_slim")
    fa = {
        "gradcam": {
            k: {"mean": 0.25, "std": 0.1} for k in ("dauc_prob", "iauc_prob", "dauc_correct", "iauc_correct")
        }
    }
    loc = {"gradcam": {"pointing_game": {"mean": 0.5, "n": 3}, "iou": {"mean": 0.125, "n": 3}}}
    (tmp_path / "summary.json").write_text(
        json.dumps(
            {
                "task": "organ3d",
                "data": str(tmp_path / "data"),
                "checkpoint": str(tmp_path / "ck.pt"),
                "classification": {"accuracy": 0.5},
                "faithfulness": fa,
                "localisation": loc,
            }
        )
    )
    r = build_run_report(tmp_path, progress=False)
    p = Page(r.html.read_text())
    assert len(p.items) == 3
    for it in p.items:
        frame_tile = it["tiles"][0]
        assert frame_tile["gt"] >= 1  # the organ's box on the slices through it
    assert _body(p.tables["faithfulness"])[0][:4] == ["gradcam", "0.500", "0.125", "3"]
    assert _body(p.tables["classification"]) == [["accuracy", "0.5000"]]
    for ref in p.refs:
        if not ref.startswith("#"):
            assert (r.html.parent / ref).is_file(), ref
