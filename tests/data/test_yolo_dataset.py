"""A ``data.yaml``'s class names: one name per class, and ``nc`` (when given) their count, as
ultralytics' ``check_det_dataset`` demands; anything else is refused in one line naming the file."""

import re
from pathlib import Path

import pytest
import yaml

from edgecl.data.yolo_dataset import find_dataset, load_data_yaml
from edgecl.errors import ConfigError


def _yaml(tmp_path: Path, tail: str) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "data.yaml"
    path.write_text("train: images\nval: images\n" + tail)
    return path


@pytest.mark.parametrize("names", ["[Car, Car, car, Bicycle]", "{0: Car, 1: ' Car ', 3: Bicycle}"])
def test_a_name_given_to_two_ids_is_refused(tmp_path, names):
    """Before: ids 0 and 1 were silently one class ``Car`` on import, and ``dataset import``
    wrote names without id 0, which ultralytics refuses."""
    path = _yaml(tmp_path, f"names: {names}\n")
    with pytest.raises(ConfigError) as err:
        load_data_yaml(path)
    assert str(err.value) == (f"{path}: class name 'Car' is given to ids 0 and 1; "
                              f"each class needs its own name")
    with pytest.raises(ConfigError, match="is given to ids 0 and 1"):
        find_dataset(tmp_path)


def test_a_name_without_letters_or_digits_given_twice_is_refused(tmp_path):
    path = _yaml(tmp_path, "names: [car, '++', '--', '++']\n")
    with pytest.raises(ConfigError, match=r"class name '\+\+' is given to ids 1 and 3;"):
        load_data_yaml(path)


@pytest.mark.parametrize("names, first, second", [
    ("[Car, Truck, car]", "'Car' (id 0)", "'car' (id 2)"),
    ("{2: other_vehicle, 5: Other Vehicle}", "'other_vehicle' (id 2)", "'Other Vehicle' (id 5)"),
    ("[OtherVehicle, other-vehicle]", "'OtherVehicle' (id 0)", "'other-vehicle' (id 1)"),
])
def test_names_differing_only_in_case_or_separators_are_refused(tmp_path, names, first, second):
    """An import maps such names onto one class (README: ``Car`` for ``car``, ``OtherVehicle``
    for ``other_vehicle``): under two ids they would silently become one."""
    path = _yaml(tmp_path, f"names: {names}\n")
    with pytest.raises(ConfigError) as err:
        load_data_yaml(path)
    message = str(err.value)
    assert message.startswith(f"{path}: class names {first} and {second} differ only in case or "
                              f"separators")
    assert message.endswith("each class needs its own name") and "\n" not in message


def test_names_differing_only_in_unicode_form_are_refused_in_those_words(tmp_path):
    """Before: 'Café' composed and decomposed were said to differ "in case or separators"."""
    path = _yaml(tmp_path, "names: ['Caf\u00e9', 'Cafe\u0301']\n")
    with pytest.raises(ConfigError) as err:
        load_data_yaml(path)
    assert str(err.value) == (f"{path}: class names 'Caf\u00e9' (id 0) and 'Cafe\u0301' (id 1) "
                              f"differ only in their Unicode form (a composed and a decomposed "
                              f"accent: the same text to the eye), so an import takes them for "
                              f"one class; each class needs its own name")


@pytest.mark.parametrize("names", [["car", "cart", "truck"], ["行人", "汽车"], ["++", "--"],
                                   ["car_1", "car_2"], ["Car", "Car 2"]])
def test_distinct_names_are_kept(tmp_path, names):
    """Names whose letters and digits differ are classes of their own (``++`` and ``--`` have
    none: an import matches them to nothing, so they are two classes too)."""
    path = _yaml(tmp_path, yaml.safe_dump({"names": names}, allow_unicode=True))
    assert load_data_yaml(path).names == dict(enumerate(names))


@pytest.mark.parametrize("nc, shown", [("2", "2"), ("5", "5"), ("'4'", "'4'"), ("true", "True")])
def test_nc_that_is_not_the_number_of_names_is_refused(tmp_path, nc, shown):
    """Before: ``nc: 2`` with 4 names was accepted; ultralytics refuses it ("'names' length 4
    and 'nc: 2' must match")."""
    path = _yaml(tmp_path, f"nc: {nc}\nnames: [car, truck, person, bicycle]\n")
    with pytest.raises(ConfigError) as err:
        load_data_yaml(path)
    assert str(err.value) == (f"{path}: 'nc' is {shown} but 'names' lists 4 classes; make them "
                              f"agree (or leave 'nc' out)")


@pytest.mark.parametrize("nc, shown", [("0", "'0'"), ("-1", "'-1'"), ("'4'", "'4'"),
                                       ("2.5", "'2.5'"), ("true", "'True'"), (".inf", "'inf'"),
                                       (".nan", "'nan'")])
def test_an_nc_alone_that_is_no_class_count_is_refused(tmp_path, nc, shown):
    """Before: ``nc: 0`` or ``nc: -1`` (no names) read as no ``nc`` at all, and the labels' ids
    then made the classes, while ``nc: 2`` refused an id 3."""
    path = _yaml(tmp_path, f"nc: {nc}\n")
    with pytest.raises(ConfigError) as err:
        load_data_yaml(path)
    assert str(err.value) == f"{path}: 'nc' must be a whole number of classes >= 1, got {shown}"
    assert load_data_yaml(_yaml(tmp_path, "nc: 3.0\n")).names == {0: "class_0", 1: "class_1",
                                                                  2: "class_2"}


@pytest.mark.parametrize("nc", ["4", "4.0", "null"])
def test_nc_that_is_the_number_of_names_is_read(tmp_path, nc):
    path = _yaml(tmp_path, f"nc: {nc}\nnames: {{0: car, 1: truck, 2: person, 3: bicycle}}\n")
    assert load_data_yaml(path).names == {0: "car", 1: "truck", 2: "person", 3: "bicycle"}


def test_nc_alone_still_names_placeholder_classes(tmp_path):
    path = _yaml(tmp_path, "nc: 3\n")
    assert load_data_yaml(path).names == {0: "class_0", 1: "class_1", 2: "class_2"}


def test_a_path_of_another_machine_gives_way_to_the_yamls_folder(tmp_path, caplog):
    """A Colab download's yaml says ``path: /content/datasets/yard-3`` with its splits beside
    it. Before: "'train' path not found: /content/datasets/yard-3/train/images", a dead end."""
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "images" / "a.jpg").write_bytes(b"")
    (tmp_path / "valid" / "images").mkdir(parents=True)
    path = tmp_path / "data.yaml"
    path.write_text("path: /content/datasets/yard-3\ntrain: train/images\nval: valid/images\n"
                    "names: {0: cone}\n")
    dataset = load_data_yaml(path)
    assert dataset.root == tmp_path.resolve()
    assert dataset.images("train") == [tmp_path.resolve() / "train" / "images" / "a.jpg"]
    assert (f"{path.resolve()}: 'path' /content/datasets/yard-3 does not exist here; the dataset's "
            f"splits were found beside the yaml, in {tmp_path.resolve()}") in caplog.text
    # where a split is not beside the yaml either, the paths are said as the yaml gives them
    path.write_text("path: /content/datasets/yard-3\ntrain: train/images\nval: other/images\n")
    with pytest.raises(ConfigError, match="'train' path not found: /content/datasets/yard-3/train/images"):
        load_data_yaml(path)


def test_absolute_and_windows_split_paths_of_another_machine_are_found_beside_the_yaml(
        tmp_path, caplog):
    """Only 'path:' was relocated: an absolute 'train:' was 'not found', a Windows one was
    glued to the yaml's folder, and an image list's foreign paths were all 'no such image'."""
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "images" / "train" / "a.jpg").write_bytes(b"")
    (tmp_path / "val.txt").write_text("/home/bob/thermal/images/train/a.jpg\n")
    path = tmp_path / "data.yaml"
    path.write_text("train: /home/alice/datasets/thermal/images/train\n"
                    "val: C:\\Users\\alice\\thermal\\images\\train\ntest: val.txt\n"
                    "names: {0: car}\n")
    dataset = load_data_yaml(path)
    image = tmp_path.resolve() / "images" / "train" / "a.jpg"
    assert dataset.splits == {"train": [image], "val": [image], "test": [image]}
    assert (f"'train' path /home/alice/datasets/thermal/images/train does not exist here; read "
            f"from {tmp_path / 'images' / 'train'}, beside the yaml") in caplog.text
    assert "1 listed image(s) do not exist where it says" in caplog.text
    path.write_text("train: ..\\images\\train\nnames: {0: car}\n")  # a Windows Roboflow yaml
    assert load_data_yaml(path).splits["train"] == [image]
    path.write_text("train: C:\\data\\nowhere\\pics\nnames: {0: car}\n")
    with pytest.raises(ConfigError, match=r"'train' path C:\\data\\nowhere\\pics is a Windows "
                                          r"path, and no folder of its tail lies beside the yaml"):
        load_data_yaml(path)


def test_a_split_folder_that_is_a_link_to_nothing_is_named(tmp_path):
    """A dataset whose images folder links to a card that is not mounted. Before: "'train' path
    not found: /mnt/card/images", which names a folder the user never typed."""
    (tmp_path / "images").symlink_to(tmp_path / "card" / "images")
    path = tmp_path / "data.yaml"
    path.write_text("train: images\nval: images\nnames: {0: cone}\n")
    with pytest.raises(ConfigError) as err:
        load_data_yaml(path)
    assert str(err.value) == (f"{path}: 'train' path {tmp_path / 'images'} is a symbolic link to "
                              f"{tmp_path / 'card' / 'images'}, which does not exist (unmounted?)")


@pytest.mark.parametrize("layout", ["relative root", "roboflow"])
def test_a_link_to_nothing_is_named_behind_a_root_or_a_roboflow_path(tmp_path, layout):
    """Before: "'train' path not found" with the link's target (a relative 'path:') or the
    Roboflow fallback's folder ('../train'), never the link the user made."""
    folder = tmp_path / "ds"
    folder.mkdir()
    path = folder / "data.yaml"
    if layout == "relative root":
        link = folder / "root"
        path.write_text("path: root\ntrain: images\nval: images\nnames: {0: cone}\n")
    else:
        link = tmp_path / "train"
        path.write_text("train: ../train\nval: ../train\nnames: {0: cone}\n")
    link.symlink_to(tmp_path / "card")
    with pytest.raises(ConfigError) as err:
        load_data_yaml(path)
    assert f"is a symbolic link to {tmp_path / 'card'}, which does not exist" in str(err.value)
    assert str(err.value).startswith(f"{path}: 'train' path ")


def _alias_bomb(levels: int) -> str:
    """Under 1 KB of YAML whose ``names`` expand to 10**levels strings through nested aliases."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 10)}]" for k in range(1, levels)]
    return "\n".join(lines) + f"\nnames: *l{levels - 1}\ntrain: images\nval: images\n"


def test_nested_aliases_in_a_data_yaml_are_refused_at_once(tmp_path):
    """Before: 9 levels of aliases under ``names`` took 7.6 s and 614 MB to be refused, while
    quoting the expanded value, and 10 levels ran out of memory after a minute ('internal
    error (MemoryError)'). A config file refused aliases already; a dataset's files now do."""
    (tmp_path / "images").mkdir()
    path = tmp_path / "data.yaml"
    path.write_text(_alias_bomb(10))
    with pytest.raises(ConfigError,
                       match=r"data.yaml at line 2: alias \*l0 is not allowed in a dataset file") as caught:
        load_data_yaml(path)
    assert len(str(caught.value)) < 300 and "\n" not in str(caught.value)
    (tmp_path / "tasks.yaml").write_text("tasks: [{name: a, classes: &c [car]}, "
                                         "{name: b, classes: *c}]\n")
    from edgecl.data.tasks import load_tasks
    with pytest.raises(ConfigError, match="alias"):
        load_tasks(tmp_path / "tasks.yaml")


def test_a_key_given_twice_in_a_data_yaml_is_refused(tmp_path):
    """Before: 'names: {0: car, 0: truck}' took truck for class 0 without a word."""
    (tmp_path / "images").mkdir()
    path = tmp_path / "data.yaml"
    path.write_text("train: images\nnames: {0: car, 0: truck}\n")
    with pytest.raises(ConfigError, match=r"data.yaml at line 2: duplicate key '0' \(first at "
                                          r"line 2\)"):
        load_data_yaml(path)


def test_a_split_folder_given_alone_reports_its_datasets_broken_names(tmp_path):
    """Before: 'dir://ds/images' under a data.yaml with 'names: 5' streamed with no word of the
    yaml, and every labelled frame was refused for a class id no registry held; the dataset's
    root gave the yaml's one-line error. Now both do."""
    (tmp_path / "images").mkdir()
    (tmp_path / "data.yaml").write_text("names: 5\ntrain: images\nval: images\n")
    with pytest.raises(ConfigError, match=r"data.yaml: 'names' must be a list or a mapping"):
        find_dataset(tmp_path / "images")
    (tmp_path / "data.yaml").write_text("names: [car]\ntrain: images\nval: images\n")
    assert find_dataset(tmp_path / "images").names == {0: "car"}
    (tmp_path / "other").mkdir()  # a folder the yaml does not cover: its names are not this one's
    (tmp_path / "data.yaml").write_text("names: 5\ntrain: images\nval: images\n")
    assert find_dataset(tmp_path / "other").names != {0: "car"}


def test_a_split_of_the_ultralytics_layout_given_alone_takes_the_names_two_levels_up(tmp_path):
    """Before: 'labels import ds/images/train' (data.yaml beside images/, two levels up) named
    the classes class_0, class_1 and added them to the device as new classes."""
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                        "names: {0: car, 1: person}\n")
    assert find_dataset(tmp_path / "images" / "train").names == {0: "car", 1: "person"}
    (tmp_path / "images" / "test").mkdir()  # a folder the yaml does not list
    assert find_dataset(tmp_path / "images" / "test").names is None


def test_a_folder_whose_data_yaml_holds_only_names_is_read_with_them(tmp_path):
    """Before: images/, labels/ and a data.yaml of names alone (no train or val) were refused,
    as the folder and as its data.yaml: "not an ultralytics data.yaml (needs 'train', 'val'
    and 'names')", though the folder without its yaml imported."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for k in range(2):
        (tmp_path / "images" / f"f{k}.jpg").write_bytes(b"jpg")
        (tmp_path / "labels" / f"f{k}.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("names:\n  0: Car\n  1: Person\n")
    for given in (tmp_path, tmp_path / "data.yaml"):
        dataset = find_dataset(given)
        assert dataset.layout == "folder" and dataset.names == {0: "Car", 1: "Person"}
        assert sorted(p.name for p in dataset.images()) == ["f0.jpg", "f1.jpg"]
    # broken names are still named; a yaml that names no class is no dataset's
    (tmp_path / "data.yaml").write_text("names:\n  0: Car\n  1: car\n")
    with pytest.raises(ConfigError, match="data.yaml"):
        find_dataset(tmp_path)
    (tmp_path / "data.yaml").write_text("epochs: 3\n")
    with pytest.raises(ConfigError, match="not an ultralytics data.yaml"):
        find_dataset(tmp_path)


@pytest.mark.parametrize("kind, said", [
    ("folder", "a folder, not a regular file"), ("loop", "a symbolic link that loops"),
    ("dangling", "which does not exist"), ("fifo", "a named pipe (FIFO), not a regular file")])
def test_a_data_yaml_that_is_no_file_is_named_not_passed_over(tmp_path, kind, said):
    """Before: a data.yaml that was a folder, a link that loops or one to nothing was passed
    over: the import said the dataset "names no classes" and made class_0..., and a dir://
    stream stored the dataset's class 0 (Person) as the device's class 0 (Car)."""
    import os

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "f0.jpg").write_bytes(b"jpg")
    target = tmp_path / "data.yaml"
    if kind == "folder":
        target.mkdir()
    elif kind == "loop":
        os.symlink("data.yaml", target)
    elif kind == "dangling":
        os.symlink(tmp_path / "gone" / "data.yaml", target)
    else:
        os.mkfifo(target)
    with pytest.raises(ConfigError, match=re.escape(f"{target} is ") + ".*" + re.escape(said)):
        find_dataset(tmp_path)
