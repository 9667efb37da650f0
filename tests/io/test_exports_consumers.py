"""The exports load through re-implementations of the consumers' own reading rules.

Each reader below is written from the consumer's code (cited per function) and used as-is over
the exports of a synthetic MICCAI 2018 set at the real frame size (1024x1280), every frame, for
both methods that carry boxes (m1, m2; m3 for the skip counts), with annotated boxes.
"""

import glob
import json
import os
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from gcfeat.data import SURGICAL_CLASSES, Miccai18Dataset, read_frame_gt
from gcfeat.data.synthetic import write_miccai18
from gcfeat.extract.pipeline import extract_dataset
from gcfeat.io import FeatureFile
from gcfeat.io.exports import export_captioning, export_interaction
from gcfeat.models import build_classifier

SIZE = (1024, 1280)
INPUT = (64, 80)
# Global-reasoned-multi-task-model models/surgicalDataset.py SurgicalSceneConstants
INSTRUMENT_CLASSES = (
    "kidney",
    "bipolar_forceps",
    "prograsp_forceps",
    "large_needle_driver",
    "monopolar_curved_scissors",
    "ultrasound_probe",
    "suction",
    "clip_applier",
    "stapler",
    "maryland_dissector",
    "spatulated_monopolar_cautery",
)
ACTION_CLASSES = (
    "Idle",
    "Grasping",
    "Retraction",
    "Tissue_Manipulation",
    "Tool_Manipulation",
    "Cutting",
    "Cauterization",
    "Suction",
    "Looping",
    "Suturing",
    "Clipping",
    "Staple",
    "Ultrasound_Sensing",
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("consumers")
    data = root / "data"
    write_miccai18(data, num_videos=2, num_frames=3, size=SIZE, seed=0, progress=False)
    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=len(SURGICAL_CLASSES))
    with torch.no_grad():  # every class predicted: m3 has a row per class and frame
        model.fc.bias.fill_(5.0)
    info = SimpleNamespace(
        classes=list(SURGICAL_CLASSES), arch="resnet18", input_size=INPUT, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    ds = Miccai18Dataset(data, split="all", size=INPUT)
    feats = root / "feats.h5"
    extract_dataset(
        ds,
        model,
        info,
        methods=("m1", "m2", "m3"),
        out=str(feats),
        batch_size=4,
        num_workers=0,
        progress=False,
        layout=(32, 4, 4),
        crop_size=(32, 32),
        boxes="gt",
    )
    cap = {
        m: export_captioning(str(feats), m, str(root / f"cap_{m}"), progress=False, data=data)
        for m in ("m1", "m2")
    }
    inter = export_interaction(str(feats), str(root / "inter"), ("m1", "m2", "m3"), progress=False, data=data)
    return SimpleNamespace(root=root, data=data, feats=feats, cap=cap, inter=inter)


# ------------------------------------------------------------------ CIDACaptioning
def cida_examples(features_path, annotation_folder):
    """data/dataset.py COCO.__init__ (img_root = features_path, ann_root = id_root =
    annotation_folder) and COCO.get_samples: position-matched lists, image = join(img, id)."""
    out = {}
    for split in ("train", "val"):
        anns = json.load(open(os.path.join(annotation_folder, f"captions_{split}.json")))
        ids = json.load(open(os.path.join(annotation_folder, f"WithCaption_id_path_{split}.json")))
        out[split] = [(os.path.join(features_path, ids[i]), anns[i]["caption"]) for i in range(len(ids))]
    return out


def cida_preprocess(detections_path, x, max_detections=6):
    """data/field.py ImageDetectionsField.preprocess (train.py: max_detections=6)."""
    precomp_data = np.load(os.path.join(detections_path, x))
    delta = max_detections - precomp_data.shape[0]
    if delta > 0:
        precomp_data = np.concatenate([precomp_data, np.zeros((delta, precomp_data.shape[1]))], axis=0)
    elif delta < 0:
        precomp_data = precomp_data[:max_detections]
    return precomp_data.astype(np.float32)


def xml_caption(path):
    """Preprocessing/CaptionCollection.py: _xml.find('caption') (None -> frame skipped)."""
    c = ET.parse(path).getroot().find("caption")
    return None if c is None else c.text


@pytest.mark.parametrize("method", ["m1", "m2"])
def test_captioning_loads_in_cida(exported, method):
    res = exported.cap[method]
    features_path = res.features_path  # absolute, as the README says
    assert os.path.isabs(features_path)
    examples = cida_examples(features_path, res.annotation_folder)
    xmls = sorted(glob.glob(str(exported.data / "seq_*" / "xml" / "*.xml")))
    expected = {"train": {}, "val": {}}
    for p in xmls:
        seq = p.split(os.sep)[-3]
        cap = xml_caption(p)
        if cap is not None:
            expected["val" if seq == "seq_1" else "train"][(seq, os.path.basename(p)[:-4])] = cap
    assert res.skipped_no_caption == len(xmls) - sum(len(e) for e in expected.values()) > 0
    with FeatureFile(exported.feats) as ff:
        tissue = SURGICAL_CLASSES.index("tissue")
        for split in ("train", "val"):
            got = {}
            for image, caption in examples[split]:
                rel = os.path.relpath(image, features_path)
                seq, folder, fname = rel.split(os.sep)
                assert fname.endswith("_node_features.npy") and folder == f"gcfeat_{method}"
                frame = fname[: -len("_node_features.npy")]
                got[(seq, frame)] = caption
                x = cida_preprocess(features_path, image)
                assert x.shape == (6, 512) and x.dtype == np.float32
                raw = np.load(image)
                assert raw.dtype == np.float32 and raw.shape[1] == 512
                rows = dict(ff[seq].frames(method))[int(frame[5:])]
                assert raw.shape[0] == len(rows["label"])
                np.testing.assert_array_equal(x[0], rows["features"][rows["label"] == tissue][0])
                np.testing.assert_array_equal(x[len(raw) :], 0)
            assert got == expected[split]


# ------------------------------------------------------------------ SurgicalSceneDataset
def surgical_scene_items(data_dir, seq_set, feature_extractor, word2vec):
    """models/surgicalDataset.py SurgicalSceneDataset.__init__ / __getitem__ (model_train.py:
    img_dir '/left_frames/', mask_dir '/annotations/'), without the resize and augmentation."""
    xml_dir_list = []
    for i in seq_set:
        xml_dir_list = xml_dir_list + glob.glob(data_dir + str(i) + "/xml/" + "/*.xml")
    for xml in xml_dir_list:
        file_name = os.path.splitext(os.path.basename(xml))[0]
        file_root = os.path.dirname(os.path.dirname(xml))
        _img_loc = os.path.join(file_root + "/left_frames/" + file_name + ".png")
        _mask_loc = os.path.join(file_root + "/annotations/" + file_name + ".png")
        _img = Image.open(_img_loc).convert("RGB")
        _target = torch.from_numpy(np.array(Image.open(_mask_loc))).long()
        frame_data = h5py.File(
            os.path.join(file_root + "/vsgat/" + feature_extractor + "/" + file_name + "_features.hdf5"), "r"
        )
        img_name = frame_data["img_name"][()]
        if isinstance(img_name, bytes):  # h5py >= 3; their pinned h5py 2.10 returns str
            img_name = img_name.decode()
        data = {
            "xml": xml,
            "img_name": img_name[:] + ".jpg",
            "img_loc": _img_loc,
            "img": np.array(_img),
            "mask": _target,
        }
        data["node_num"] = frame_data["node_num"][()]
        data["roi_labels"] = frame_data["classes"][:]
        data["det_boxes"] = frame_data["boxes"][:]
        data["edge_labels"] = frame_data["edge_labels"][:]
        data["edge_num"] = data["edge_labels"].shape[0]
        data["features"] = frame_data["node_features"][:]
        data["spatial_feat"] = frame_data["spatial_features"][:]
        data["word2vec"] = np.vstack([word2vec[INSTRUMENT_CLASSES[n]] for n in data["roi_labels"]])
        frame_data.close()
        yield data


def collect_edge(node_num, roi_label):
    """models/scene_graph.py _collect_edge (node_space 0) and the failing unpack of
    _build_graph: ``src, dst = tuple(zip(*edge_list))``."""
    h_node_list = np.where(roi_label == 0)[0]
    edge_list = [(s, d) for s in range(node_num) for d in range(node_num) if s != d]
    readout_edge_list = [
        (src, dst) for dst in h_node_list for src in np.arange(roi_label.shape[0]) if src not in h_node_list
    ]
    src, dst = tuple(zip(*edge_list))
    return edge_list, readout_edge_list


def authors_writer(xml):
    """Feature_extraction.ipynb (Domain-Generalization-for-Surgical-Scene-Graph): classes,
    boxes and edge_labels from the XML."""
    _xml = ET.parse(xml).getroot()
    det_classes, act_classes, det_boxes_all = [], [], []
    for obj in _xml.iter("objects"):
        name = obj.find("name").text.strip()
        interact = obj.find("interaction").text.strip()
        det_classes.append(INSTRUMENT_CLASSES.index(str(name)))
        act_classes.append(ACTION_CLASSES.index(str(interact)))
        bbox = obj.find("bndbox")
        det_boxes_all.append(np.array([int(bbox.find(pt).text) for pt in ["xmin", "ymin", "xmax", "ymax"]]))
    tissue_num = len(np.where(np.array(det_classes) == 0)[0])
    node_num = len(det_classes)
    edges = np.cumsum(node_num - np.arange(tissue_num) - 1)[-1] if tissue_num > 0 else 0
    edge_labels = np.zeros((edges, len(ACTION_CLASSES)))
    edge_index = 0
    for tissue in range(tissue_num):
        for obj_index in range(tissue + 1, node_num):
            edge_labels[edge_index, act_classes[tissue_num + edge_index]] = 1
            edge_index += 1
    return det_classes, np.array(det_boxes_all), edge_labels


# vs-gats datasets/hico_spatial_feature.py, transcribed
def center_offset(box1, box2, im_wh):
    c1 = [(box1[2] + box1[0]) / 2, (box1[3] + box1[1]) / 2]
    c2 = [(box2[2] + box2[0]) / 2, (box2[3] + box2[1]) / 2]
    offset = np.array(c1) - np.array(c2) / np.array(im_wh)
    return offset


def box_with_respect_to_img(box, im_wh):
    feats = [
        box[0] / (im_wh[0] + 1e-6),
        box[1] / (im_wh[1] + 1e-6),
        box[2] / (im_wh[0] + 1e-6),
        box[3] / (im_wh[1] + 1e-6),
    ]
    box_area = (box[2] - box[0]) * (box[3] - box[1])
    img_area = im_wh[0] * im_wh[1]
    feats += [box_area / (img_area + 1e-6)]
    return feats


def box1_with_respect_to_box2(box1, box2):
    feats = [
        (box1[0] - box2[0]) / (box2[2] - box2[0] + 1e-6),
        (box1[1] - box2[1]) / (box2[3] - box2[1] + 1e-6),
        np.log((box1[2] - box1[0]) / (box2[2] - box2[0] + 1e-6)),
        np.log((box1[3] - box1[1]) / (box2[3] - box2[1] + 1e-6)),
    ]
    return feats


def calculate_spatial_feats(det_boxes, im_wh):
    spatial_feats = []
    for i in range(det_boxes.shape[0]):
        for j in range(det_boxes.shape[0]):
            if j == i:
                continue
            single_feat = []
            box1_wrt_img = box_with_respect_to_img(det_boxes[i], im_wh)
            box2_wrt_img = box_with_respect_to_img(det_boxes[j], im_wh)
            box1_wrt_box2 = box1_with_respect_to_box2(det_boxes[i], det_boxes[j])
            offset = center_offset(det_boxes[i], det_boxes[j], im_wh)
            single_feat = single_feat + box1_wrt_img + box2_wrt_img + box1_wrt_box2 + offset.tolist()
            spatial_feats.append(single_feat)
    return np.array(spatial_feats)


def _iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def word2vec(exported):
    """A stand-in for the repository's dataset/surgicalscene_word2vec.hdf5 (300-d per name)."""
    p = exported.root / "w2v.hdf5"
    with h5py.File(p, "w") as f:
        for k, name in enumerate(INSTRUMENT_CLASSES + ("tissue",)):
            f[name] = np.full(300, k, np.float32)
    with h5py.File(p, "r") as f:
        yield f


@pytest.mark.parametrize("method", ["m1", "m2"])
def test_interaction_loads_in_surgical_scene_dataset(exported, word2vec, method):
    res = exported.inter
    items = list(surgical_scene_items(os.path.join(res.root(method), "seq_"), [1, 2], method, word2vec))
    xmls = sorted(glob.glob(str(exported.data / "seq_*" / "xml" / "*.xml")))
    few = [p for p in xmls if len(authors_writer(p)[0]) < 2]
    assert len(items) == res.frames[method] == len(xmls) - len(few) > 0
    assert res.skipped_few_nodes[method] == len(few) > 0 and res.skipped_no_xml == 0
    ious = []
    for d in items:
        stem = os.path.basename(d["xml"])[:-4]
        assert d["img_name"] == stem + ".jpg"
        n = int(d["node_num"])
        edge_list, readout = collect_edge(n, d["roi_labels"])
        assert d["features"].shape == (n, 512) and d["word2vec"].shape == (n, 300)
        assert d["spatial_feat"].shape == (len(edge_list), 16)
        assert len(readout) == d["edge_num"] == n - 1
        assert d["roi_labels"][0] == 0 and d["img"].shape[:2] == SIZE == tuple(d["mask"].shape)
        # the authors' writer run on the same XML gives the same classes, boxes, edge labels
        classes, boxes, edge_labels = authors_writer(d["xml"])
        assert d["roi_labels"].tolist() == classes
        np.testing.assert_array_equal(d["det_boxes"], boxes)
        np.testing.assert_array_equal(d["edge_labels"], edge_labels)
        assert d["edge_labels"].sum(1).tolist() == [1.0] * (n - 1)
        np.testing.assert_array_equal(
            d["spatial_feat"], calculate_spatial_feats(d["det_boxes"], [1024, 1280])
        )
        # the model crops each box from the full frame (models/mtl_model.py forward)
        seq = d["xml"].split(os.sep)[-3]
        gt = read_frame_gt(exported.data / "groundtruth" / seq / f"{stem}.json")
        for c, bndbox in zip(d["roi_labels"], d["det_boxes"]):
            roi = np.array(bndbox).astype(int)
            crop = d["img"][roi[1] : roi[3] + 1, roi[0] : roi[2] + 1, :]
            assert crop.size > 0
            k = SURGICAL_CLASSES.index("tissue" if c == 0 else INSTRUMENT_CLASSES[c])
            drawn = (roi[0], roi[1], roi[0] + crop.shape[1], roi[1] + crop.shape[0])
            ious.append(_iou(drawn, gt.boxes[k]))
            if c != 0:  # the label mask marks the instrument inside its crop
                m = d["mask"].numpy()[roi[1] : roi[3] + 1, roi[0] : roi[2] + 1]
                assert (m == k + 1).any()
    assert np.mean(ious) >= 0.9


def test_skip_counts_m3(exported, word2vec):
    """m3 rows of a random model: empty masks (zero boxes) and hook / specimen_bag are dropped;
    frames without a tissue node or with < 2 nodes are skipped; nothing is listed without
    its file."""
    res = exported.inter
    with FeatureFile(exported.feats) as ff:
        rows = [ff[v].rows("m3") for v in ff.videos]
        total = ff.num_frames()
    label = np.concatenate([r["label"] for r in rows])
    # an empty mask, or (annotated boxes) a predicted class without a box: all-zero box
    empty = np.concatenate([r["empty"] | (r["box"] == 0).all(1) for r in rows])
    unmapped = np.isin(label, [SURGICAL_CLASSES.index("hook"), SURGICAL_CLASSES.index("specimen_bag")])
    assert res.dropped_unmapped["m3"] == unmapped.sum() > 0
    assert res.dropped_zero_area["m3"] == (empty & ~unmapped).sum() > 0
    assert res.frames["m3"] + res.skipped_few_nodes["m3"] == total
    listed = glob.glob(os.path.join(res.root("m3"), "seq_*", "xml", "*.xml"))
    assert len(listed) == res.frames["m3"] > 0
    for d in surgical_scene_items(os.path.join(res.root("m3"), "seq_"), [1, 2], "m3", word2vec):
        n = int(d["node_num"])
        edge_list, readout = collect_edge(n, d["roi_labels"])
        assert len(readout) == d["edge_num"] and d["spatial_feat"].shape == (len(edge_list), 16)
        assert np.isfinite(d["spatial_feat"]).all()
        for roi in d["det_boxes"]:
            assert d["img"][roi[1] : roi[3] + 1, roi[0] : roi[2] + 1].size > 0


def test_source_size_and_source_boxes(exported):
    with FeatureFile(exported.feats) as ff:
        for v in ff:
            assert v.source_size == SIZE
            for f, rows in v.frames("m2", source_pixels=True):
                gt = read_frame_gt(exported.data / "groundtruth" / v.name / f"frame{f:03d}.json")
                want = np.array([gt.boxes[c] for c in rows["label"]], np.float64)
                np.testing.assert_allclose(rows["box_source"], want, atol=1e-3)
