"""A text file a user saved as UTF-16 (Windows Notepad's "Unicode") is named as UTF-16 wherever
edgecl reads one: label files, class names, data.yaml, image lists, COCO json, tasks.yaml and
the config. Before, each said "not UTF-8 text (byte 0: invalid start byte)" or less."""

import cv2
import numpy as np
import pytest

from edgecl.config import load_config
from edgecl.data.importers import iter_labelled
from edgecl.data.labels import read_yolo_labels
from edgecl.data.tasks import load_tasks
from edgecl.data.yolo_dataset import load_data_yaml
from edgecl.errors import ConfigError, EdgeclError, LabelError, encoding_problem

SAID = "not UTF-8 but UTF-16 text: save it as UTF-8"


def utf16(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-16"))   # with its byte-order mark, as Notepad saves it
    return path


def jpg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((40, 60, 3), 90, np.uint8))
    return path


def test_encoding_problem_names_utf16_and_otherwise_the_byte():
    for data in ("0 0.5 0.5 0.1 0.1".encode("utf-16"), b"\xfe\xff" + "0 0.5".encode("utf-16-be"),
                 "é 0.5".encode("utf-16-le")):  # (ASCII without a byte-order mark is valid UTF-8)
        with pytest.raises(UnicodeDecodeError) as caught:
            data.decode("utf-8")
        assert encoding_problem(caught.value) == SAID
    with pytest.raises(UnicodeDecodeError) as caught:
        "café car".encode("latin-1").decode("utf-8")
    assert encoding_problem(caught.value) == "not UTF-8 text (byte 3: invalid continuation byte)"


def test_a_utf16_label_file(tmp_path):
    with pytest.raises(LabelError) as caught:
        read_yolo_labels(utf16(tmp_path / "a.txt", "0 0.5 0.5 0.2 0.2\r\n"))
    assert str(caught.value) == f"{tmp_path / 'a.txt'}: {SAID}"


def test_a_utf16_class_names_file(tmp_path):
    jpg(tmp_path / "ds" / "a.jpg")
    (tmp_path / "ds" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    utf16(tmp_path / "ds" / "classes.txt", "car\r\nperson\r\n")
    with pytest.raises(ConfigError) as caught:
        iter_labelled(tmp_path / "ds")
    assert str(caught.value) == f"{tmp_path / 'ds' / 'classes.txt'}: {SAID}"


def test_a_utf16_data_yaml_and_image_list(tmp_path):
    yaml_path = utf16(tmp_path / "data.yaml", "train: images\r\nnames: [car]\r\n")
    with pytest.raises(ConfigError) as caught:
        load_data_yaml(yaml_path)
    assert str(caught.value).endswith(f"data.yaml: {SAID}")
    jpg(tmp_path / "images" / "a.jpg")
    (tmp_path / "data.yaml").write_text("train: train.txt\nval: train.txt\nnames: [car]\n")
    utf16(tmp_path / "train.txt", "images/a.jpg\r\n")
    with pytest.raises(ConfigError) as caught:
        load_data_yaml(tmp_path / "data.yaml").images()
    assert str(caught.value) == f"cannot read image list {tmp_path / 'train.txt'}: {SAID}"


def test_a_utf16_coco_json(tmp_path):
    path = utf16(tmp_path / "annotations.json", '{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(ConfigError) as caught:
        list(iter_labelled(path, "coco"))
    assert str(caught.value) == f"cannot read COCO file {path}: {SAID}"


def test_a_utf16_tasks_yaml_and_config(tmp_path):
    tasks = utf16(tmp_path / "tasks.yaml", "names: {0: car}\r\ntasks: []\r\n")
    with pytest.raises(ConfigError) as caught:
        load_tasks(tasks)
    assert SAID in str(caught.value) and str(tasks) in str(caught.value)
    config = utf16(tmp_path / "edgecl.yaml", "state_dir: /tmp/x\r\n")
    with pytest.raises(EdgeclError) as caught:
        load_config(config)
    assert str(caught.value) == f"cannot read config {config}: {SAID}"
