"""Labels from a CSV file beside the images (Kaggle's labels.csv, Hugging Face's metadata.csv)
instead of class folders: transferkit.data.label_file, through load_data and the CLI."""

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from transferkit.cli import main
from transferkit.data.loading import load_data
from transferkit.errors import TransferkitError
from transferkit.testing import make_image_folder


def _flatten(folders: Path, into: Path, stem=lambda cls, path: f"{cls}_{path.stem}") -> list[tuple[str, str]]:
    """Move the class folders' images of ``folders`` flat into ``into``; ``(file stem, class)`` each."""
    into.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in sorted(folders.glob("*/*.png")):
        name = stem(path.parent.name, path)
        shutil.copy(path, into / f"{name}.png")
        rows.append((name, path.parent.name))
    return rows


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def _reasons(splits, root: Path) -> dict[str, str]:
    """Each left-out path, from ``root``, and its reason."""
    return {os.path.relpath(path, root): reason for path, reason in splits.card.skipped}


def test_kaggle_layout_ids_without_extension_label_a_flat_train_folder(tmp_path):
    rows = _flatten(
        make_image_folder(tmp_path / "classes", classes=3, per_class=10), tmp_path / "dogs" / "train"
    )
    root = tmp_path / "dogs"
    make_image_folder(tmp_path / "unlabelled", classes=1, per_class=4)
    shutil.copytree(tmp_path / "unlabelled" / "class_0", root / "test")  # a flat test/ with no labels
    lines = ["id,breed", *(f"{name},{cls.replace('class_', 'breed ')}" for name, cls in rows), "gone,breed 1"]
    _write(root / "labels.csv", "\n".join(lines) + "\n")
    _write(root / "sample_submission.csv", "id,breed\n")

    splits = load_data(root, validation_split=0.2, test_split=0.2, seed=0)
    assert splits.class_names == ("breed 0", "breed 1", "breed 2")
    assert len(splits.train) + len(splits.val) + len(splits.test) == 30
    assert splits.card.holdout.origin == "held_out"  # test/ holds no listed image: held out from the 30
    for images in (splits.train, splits.val, splits.test):  # every image under the class its row gives
        named = zip(images.paths, images.labels, strict=True)
        assert all(Path(p).stem.startswith(f"class_{label}_") for p, label in named)
    reasons = _reasons(splits, root)
    assert "labels.csv" not in reasons
    assert reasons["sample_submission.csv"].startswith("not an image file")
    assert reasons["gone"].startswith("no such image (labels.csv line 32")
    unlisted = [name for name, reason in reasons.items() if reason == "not listed in the label file"]
    assert len(unlisted) == 4  # the test/ images
    assert "4 not listed in the label file, 1 no such image" in splits.card.summary()


def test_metadata_csv_with_paths_a_bom_semicolons_and_more_columns(tmp_path):
    root = make_image_folder(tmp_path / "hf", classes=2, per_class=6)
    paths = sorted(root.glob("*/*.png"))
    animal = {"class_0": "cat", "class_1": "dog"}
    lines = ["width;file_name;label;split"] + [
        f"32;{p.parent.name}/{p.name};{animal[p.parent.name]};x" for p in paths
    ]
    _write(root / "metadata.csv", "\n".join(lines) + "\n", encoding="utf-8-sig")  # Excel's BOM

    splits = load_data(root, validation_split=0.25, test_split=0.0, seed=0)
    assert splits.class_names == ("cat", "dog")  # the label column, not the folder names
    assert len(splits.train) + len(splits.val) == 12 and not splits.card.skipped


def test_split_folders_each_read_their_own_label_file(tmp_path):
    root = tmp_path / "splits"
    for split, per_class in (("train", 8), ("test", 3)):
        rows = _flatten(make_image_folder(tmp_path / split, classes=2, per_class=per_class), root / split,
                        stem=lambda cls, path, s=split: f"{s}_{cls}_{path.stem}")  # fmt: skip
        _write(root / split / "labels.csv", "file,label\n" + "".join(f"{n}.png,{c}\n" for n, c in rows))

    splits = load_data(root, validation_split=0.25, test_split=0.2, seed=0)
    assert splits.card.holdout.origin == "folder"  # test/ used as given
    assert len(splits.test) == 6 and all("/test/" in p for p in splits.test.paths)
    assert len(splits.train) + len(splits.val) == 16


def test_rows_that_cannot_label_one_image_leave_it_out_with_the_reason(tmp_path):
    root = tmp_path / "rows"
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
    for i in range(6):
        for cls in ("x", "y"):
            Image.new("RGB", (16, 16), (40 * i, 200 if cls == "x" else 0, 0)).save(
                root / "a" / f"{cls}{i}.png"
            )
    Image.new("RGB", (16, 16)).save(root / "a" / "twin.png")  # the same name in two folders
    Image.new("RGB", (16, 16)).save(root / "b" / "twin.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "outside.png")
    lines = ["image,label"] + [f"a/{c}{i}.png,{c}" for i in range(6) for c in ("x", "y")]
    lines += ["x0,y", "y1,", "twin.png,x", "../outside.png,x", ",x", "", "y2,y"]
    _write(root / "labels.csv", "\n".join(lines) + "\n")

    splits = load_data(root, validation_split=0.3, test_split=0.0, seed=0)
    assert splits.class_names == ("x", "y")
    reasons = _reasons(splits, root)
    assert reasons["a/x0.png"].startswith("two classes in the label file")  # a/x0.png, then x0 as y
    assert "a/y1.png" not in reasons  # a row without a class beside one with a class: the class stands
    assert "a/y2.png" not in reasons  # listed twice with one class: kept once
    assert reasons["twin.png"].startswith("no such image (labels.csv line 16: ")  # a name two files share
    assert reasons["a/twin.png"] == reasons["b/twin.png"] == "not listed in the label file"
    assert reasons["../outside.png"].startswith("outside the label file's folder")
    assert reasons["labels.csv"].startswith("a row names no image (labels.csv line 18)")
    assert len(splits.train) + len(splits.val) == 11


def test_a_header_row_is_optional_where_the_first_row_names_an_image(tmp_path):
    rows = _flatten(make_image_folder(tmp_path / "c", classes=2, per_class=6), tmp_path / "flat")
    _write(tmp_path / "flat" / "labels.csv", "".join(f"{cls};{name}\n" for name, cls in rows))

    splits = load_data(tmp_path / "flat", validation_split=0.25, test_split=0.0, seed=0)
    assert splits.class_names == ("class_0", "class_1") and len(splits.train) + len(splits.val) == 12


@pytest.mark.parametrize(
    "text, message",
    [
        ("file_name,width,height\na.png,1,2\n", "which one is the class"),
        ("file_name\na.png\n", "needs two columns"),
        ("", "no rows"),
    ],
)
def test_a_label_file_without_a_class_column_is_one_clear_error(tmp_path, text, message):
    make_image_folder(tmp_path / "d", classes=2, per_class=2)
    _write(tmp_path / "d" / "labels.csv", text)
    with pytest.raises(TransferkitError, match=message):
        load_data(tmp_path / "d", validation_split=0.25, test_split=0.0, seed=0)


def test_fit_and_evaluate_read_a_csv_labelled_folder(tmp_path):
    data = tmp_path / "flat"
    rows = _flatten(make_image_folder(tmp_path / "c", classes=3, per_class=10), data / "images")
    _write(data / "labels.csv", "file_name,label\n" + "".join(f"images/{n}.png,{c}\n" for n, c in rows))
    runner = CliRunner()
    fit = [
        "fit", "--data", str(data), "--size", "small", "--similar", "--backbone", "tiny",
        "--weights", "random", "--epochs", "1", "--out", str(tmp_path / "runs"), "--name", "r",
        "--no-report", "-q",
    ]  # fmt: skip
    result = runner.invoke(main, fit)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "r"
    assert (run / "labels.txt").read_text().split() == ["class_0", "class_1", "class_2"]
    card = json.loads((run / "dataset_card.json").read_text())
    assert card["test_split"]["num_test"] >= 3 and not card["skipped"]

    other = tmp_path / "other"  # new labelled images, listed the same way, some classes only
    rows = _flatten(make_image_folder(tmp_path / "o", classes=2, per_class=4, seed=7), other)
    _write(other / "labels.csv", "id,label\n" + "".join(f"{n},{c}\n" for n, c in rows))
    result = runner.invoke(main, ["evaluate", str(run), "--data", str(other)])
    assert result.exit_code == 0, result.output
    assert ": 8 images." in result.output.splitlines()[0], result.output
    assert [line.split()[-1] for line in result.output.splitlines()[-3:]] == ["4", "4", "0"]  # support


def test_a_metadata_csv_without_a_class_column_leaves_the_class_folders_in_charge(tmp_path):
    root = make_image_folder(tmp_path / "captioned", classes=2, per_class=6)
    lines = ["file_name,text"] + [f"{p.parent.name}/{p.name},a picture" for p in sorted(root.glob("*/*.png"))]
    _write(root / "metadata.csv", "\n".join(lines) + "\n")  # Hugging Face: captions beside class folders

    splits = load_data(root, validation_split=0.25, test_split=0.0, seed=0)
    assert splits.class_names == ("class_0", "class_1")  # the folders', not the captions
    assert [reason for _, reason in splits.card.skipped] == ["not inside a class folder; move it into one"]


def test_kaggles_train_csv_labels_the_training_images_and_its_test_csv_is_no_label_file(tmp_path):
    root = tmp_path / "cactus"
    rows = _flatten(make_image_folder(tmp_path / "c", classes=2, per_class=8), root / "train")
    _write(root / "train.csv", "id,has_cactus\n" + "".join(f"{n}.png,{c[-1]}\n" for n, c in rows))
    tests = _flatten(make_image_folder(tmp_path / "t", classes=2, per_class=3, seed=1), root / "test",
                     stem=lambda cls, path: f"t_{cls}_{path.stem}")  # fmt: skip
    _write(root / "test.csv", "id\n" + "".join(f"{n}.png\n" for n, _ in tests))

    splits = load_data(root, validation_split=0.25, test_split=0.25, seed=0)
    assert splits.class_names == ("0", "1")
    assert all(
        "/train/" in path for images in (splits.train, splits.val, splits.test) for path in images.paths
    )
    reasons = _reasons(splits, root)
    assert reasons["test.csv"].startswith("not an image file") and "train.csv" not in reasons
    assert sum(reason == "not listed in the label file" for reason in reasons.values()) == 6  # test/
    assert len(splits.train) + len(splits.val) + len(splits.test) == 16


def test_augment_preview_samples_and_captions_the_images_the_label_file_lists(tmp_path, monkeypatch):
    from transferkit.reporting import preview

    root = tmp_path / "dogs"
    rows = _flatten(make_image_folder(tmp_path / "c", classes=2, per_class=3), root / "train")
    unlisted = make_image_folder(tmp_path / "u", classes=1, per_class=2)
    _flatten(unlisted, root / "test", stem=lambda cls, path: f"test_{path.stem}")  # not listed
    _write(root / "labels.csv", "id,breed\n" + "".join(f"{n},{c}\n" for n, c in rows[1:]))

    labelled, _ = preview._training_images(str(root), seed=0)
    assert sorted((Path(p).stem, c) for c, p in labelled) == sorted(rows[1:])
    # Each original is captioned by the class the file gives it, not by its folder (train/).
    drawn = []
    monkeypatch.setattr(preview, "plot_image_grid", lambda grid, out, **kw: drawn.append(kw))
    preview.augment_preview(str(root), count=4, copies=1, image_size=24, out=tmp_path / "grid.png")
    listed = {f"{c}/{Path(p).name}" for c, p in labelled}
    originals = drawn[0]["titles"][::2]
    assert len(originals) == 4 and set(originals) <= listed


def test_a_one_hot_train_csv_labels_each_image_by_its_marked_column_and_leaves_out_multi_label_rows(tmp_path):
    root = tmp_path / "leaves"  # Kaggle's plant-pathology layout: one column per class, 0 or 1
    rows = _flatten(make_image_folder(tmp_path / "c", classes=3, per_class=8), root / "images")
    names = {"class_0": "healthy", "class_1": "rust", "class_2": "scab"}

    def one_hot(*marked: str) -> str:
        return ",".join("1" if name in marked else "0" for name in names.values())

    lines = ["image_id,healthy,rust,scab"] + [f"{n},{one_hot(names[c])}" for n, c in rows[2:]]
    lines += [f"{rows[0][0]},{one_hot('rust', 'scab')}", f"{rows[1][0]},{one_hot()}"]
    _write(root / "train.csv", "\n".join(lines) + "\n")

    splits = load_data(root, validation_split=0.25, test_split=0.0, seed=0)
    assert splits.class_names == ("healthy", "rust", "scab")
    assert len(splits.train) + len(splits.val) == 22
    for images in (splits.train, splits.val):  # every image under the class its row marks
        named = zip(images.paths, images.labels, strict=True)
        assert all(Path(p).stem.startswith(f"class_{label}_") for p, label in named)
    reasons = _reasons(splits, root)
    several = reasons[f"images/{rows[0][0]}.png"]
    assert several.startswith("several classes marked in the label file (train.csv line ")
    assert reasons[f"images/{rows[1][0]}.png"].startswith("no class in the label file (train.csv line ")
    assert "1 several classes marked in the label file" in splits.card.summary()


def test_a_table_of_other_numbers_is_not_taken_for_one_hot_classes(tmp_path):
    make_image_folder(tmp_path / "d", classes=2, per_class=2)
    paths = sorted((tmp_path / "d").glob("*/*.png"))
    rows = "".join(f"{p.parent.name}/{p.name},{i % 2},{i}\n" for i, p in enumerate(paths))
    _write(tmp_path / "d" / "labels.csv", "file_name,flipped,fold\n" + rows)
    with pytest.raises(TransferkitError, match="which one is the class"):
        load_data(tmp_path / "d", validation_split=0.25, test_split=0.0, seed=0)


def test_labels_that_list_other_labels_are_named_on_the_card(tmp_path):
    root = tmp_path / "tags"
    rows = _flatten(make_image_folder(tmp_path / "c", classes=3, per_class=6), root)
    tags = {"class_0": "rust", "class_1": "scab", "class_2": "rust|scab"}  # a multi-label column
    _write(root / "labels.csv", "file,label\n" + "".join(f"{n}.png,{tags[c]}\n" for n, c in rows))

    card = load_data(root, validation_split=0.25, test_split=0.0, seed=0).card
    assert card.combined_classes == ["rust|scab"] and card.to_dict()["combined_classes"] == ["rust|scab"]
    assert "1 class name reads as a list of labels (e.g. 'rust|scab')" in card.summary()
    assert make_image_folder(tmp_path / "plain", classes=3, per_class=2)  # class_0 ...: no such line
    assert (
        "lists of labels"
        not in load_data(tmp_path / "plain", validation_split=0.5, test_split=0.0).card.summary()
    )


@pytest.mark.parametrize(
    "encoding, separator",
    [("cp1252", ","), ("utf-16", "\t")],
    ids=["excel-csv-on-windows", "excel-unicode-text"],
)
def test_label_files_excel_writes_on_windows_read_with_their_accents(tmp_path, encoding, separator):
    root = tmp_path / "menu"
    rows = _flatten(make_image_folder(tmp_path / "c", classes=2, per_class=6), root,
                    stem=lambda cls, path: f"crème_{cls}_{path.stem}")  # fmt: skip
    dish = {"class_0": "café", "class_1": "thé"}
    lines = [f"file_name{separator}label"] + [f"{n}.png{separator}{dish[c]}" for n, c in rows]
    _write(root / "labels.csv", "\r\n".join(lines) + "\r\n", encoding=encoding)

    splits = load_data(root, validation_split=0.25, test_split=0.0, seed=0)
    assert splits.class_names == ("café", "thé") and not splits.card.skipped
    assert len(splits.train) + len(splits.val) == 12


def test_a_label_file_may_spell_names_in_another_letter_case_where_one_file_alone_matches(tmp_path):
    root = tmp_path / "upper"  # written on Windows or macOS, whose file systems ignore the case
    rows = _flatten(make_image_folder(tmp_path / "c", classes=2, per_class=6), root / "images")
    lines = ["file_name,label"] + [f"IMAGES/{n.upper()}.PNG,{c}" for n, c in rows[:6]]
    lines += [f"{n.upper()},{c}" for n, c in rows[6:]]  # ids without the extension, upper case
    Image.new("RGB", (16, 16)).save(root / "images" / "twin.png")  # two files, one name but for its case
    Image.new("RGB", (16, 16)).save(root / "images" / "Twin.png")
    _write(root / "labels.csv", "\n".join([*lines, "TWIN.PNG,class_0"]) + "\n")

    splits = load_data(root, validation_split=0.25, test_split=0.0, seed=0)
    assert len(splits.train) + len(splits.val) == 12
    reasons = _reasons(splits, root)
    assert reasons["TWIN.PNG"].startswith("no such image (labels.csv line 14: ")  # which one? neither
    assert reasons["images/twin.png"] == reasons["images/Twin.png"] == "not listed in the label file"
