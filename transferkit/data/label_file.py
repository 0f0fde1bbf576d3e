"""Labels from a CSV file beside the images, for data sets that do not come as class folders.

Many data sets ship as a flat folder of images and a table of labels (Kaggle's ``train/`` beside
``labels.csv`` or ``train.csv``; Hugging Face's ``imagefolder`` with ``metadata.csv``; fastai's
``ImageDataLoaders.from_csv``). A folder (the data root, or a ``train/``, ``val/`` or ``test/``
folder in it) that holds one of :data:`LABEL_FILES` is read from that file instead of from class
subfolders (``metadata.csv`` and ``train.csv`` only where they look like labels:
:func:`find_label_file`):

- The first row names the columns. The image column is the one named like ``file_name``,
  ``filename``, ``path``, ``image``, ``image_id`` or ``id`` (else the first), the class column the
  one named like ``label``, ``class``, ``category`` or ``target`` (else the only other column).
  Or one column per class, each row a 1 under its class and 0 under the others (one-hot, as
  Kaggle's ``image_id,healthy,multiple_diseases,rust,scab``): the class is the column's name.
  Commas, semicolons or tabs; UTF-8 (with Excel's byte-order mark or without), UTF-16 with its
  mark, or else Windows-1252 (Excel's "CSV" on Windows).
- An image is named by its path relative to the folder the file is in (``cats/1.jpg``), or, when
  no such file exists, by its file name or its name without the extension (Kaggle's ``id``
  columns: ``000bec18``), found anywhere under that folder, as long as one file alone has it; in
  another letter case too (``IMG_1.JPG`` for ``img_1.jpg``), where one file alone matches so.
- Nothing stops a run: a row naming no image, an image outside the folder, a row without a label,
  an image listed twice with two labels, a one-hot row marking no class or several (a multi-label
  row: a classifier here gives each image one class), and every image the file does not list, are
  left out and listed in the dataset card with the reason, like the files a folder scan cannot use.
- Class names are the labels as written (whitespace around them stripped), in Unicode's composed
  form, like class folder names.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from transferkit.errors import TransferkitError

LABEL_FILES = ("labels.csv", "metadata.csv", "train.csv")
IMAGE_COLUMNS = ("file_name", "filename", "file", "path", "filepath", "image", "image_path", "image_id",
                 "image_name", "img", "fname", "name", "id")  # fmt: skip
CLASS_COLUMNS = ("label", "labels", "class", "class_name", "classname", "category", "target", "y")
NOT_LISTED = "not listed in the label file"
ONE_HOT = {"0": False, "1": True, "0.0": False, "1.0": True}  # a one-hot table's cells
SEVERAL_CLASSES = "several classes marked in the label file"


def find_label_file(folder: Path) -> Path | None:
    """``folder``'s label file (:data:`LABEL_FILES`, any letter case), None when it has none.

    A ``metadata.csv`` counts only where its first row names a class column: Hugging Face's
    ``imagefolder`` also uses it beside class folders for other fields (a caption, a source). A
    ``train.csv`` (Kaggle's usual name) counts where it names one, has two columns alone, or is a
    one-hot table (:func:`_one_hot_columns`)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return None
    for wanted in LABEL_FILES:
        for entry in entries:
            if entry.name.lower() == wanted and entry.is_file():
                if wanted == "labels.csv" or _labels_classes(
                    Path(entry.path), two_columns=wanted == "train.csv"
                ):
                    return Path(entry.path)
    return None


def _labels_classes(path: Path, two_columns: bool) -> bool:
    """Whether the first row of ``path`` names a class column (or, ``two_columns``, has two alone)."""
    try:
        with open(path, "rb") as file:
            head = decoded(file.read(1 << 16)).splitlines()[:64]
    except (OSError, UnicodeDecodeError):
        return True  # read again, and reported, as the label file
    rows = [line.strip().replace(";", ",").replace("\t", ",").split(",") for line in head if line.strip()]
    names = [_column_name(cell) for cell in rows[0]] if rows else []
    if set(names) & set(CLASS_COLUMNS) or (two_columns and len(names) == 2):
        return True
    image_col = next((names.index(n) for n in IMAGE_COLUMNS if n in names), 0)
    return two_columns and _one_hot_columns(rows, image_col) is not None


def _column_name(cell: str) -> str:
    return cell.strip().strip('"').lower().replace(" ", "_").replace("-", "_")


def read_label_file(
    label_file: Path, images: list[str], skipped: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """``(class name, path)`` for each image ``label_file`` labels, in the order of ``images``.

    ``images``: the image files under the label file's folder (the scan's walk), the only files a
    row may name. What is left out goes to ``skipped`` as ``(path, reason)``.

    Raises:
        TransferkitError: the file cannot be read as a table with an image and a class column.
    """
    folder = label_file.parent
    rows = _rows(label_file)
    by_path = {os.path.normpath(path): path for path in images}
    by_name, by_stem = _unique_names(images)
    folded = _folded_index(images)

    def find(cell: str) -> str | None:
        return (
            _exact(cell, folder, by_path)
            or _by_name(cell, by_name, by_stem)
            or _by_case(cell, folder, folded)
        )

    header, image_col, class_col = _columns([row for _, row in rows], label_file, find)
    body = rows[1:] if header else rows
    labelled: dict[str, str] = {}
    unlabelled: dict[str, str] = {}  # path -> the line that names it without a class
    clashing: set[str] = set()
    several: dict[str, str] = {}  # path -> the one-hot line that marks it with several classes
    names = [cell.strip() for cell in rows[0][1]]  # a one-hot table's class names
    for number, row in body:
        cell = row[image_col].strip() if image_col < len(row) else ""
        label = _label(row, class_col, names)
        where = f"{label_file.name} line {number}"
        path = find(cell)
        if path is None:
            skipped.append((str(folder / cell) if cell else str(label_file), _missing(cell, folder, where)))
        elif label is None:
            several.setdefault(path, where)
        elif not label:
            unlabelled.setdefault(path, where)
        elif labelled.get(path, label) != label:
            clashing.add(path)
        else:
            labelled[path] = label
    for path in sorted(clashing):
        skipped.append((path, f"two classes in the label file ({label_file.name}); left out"))
    listed = [(labelled[path], path) for path in images if path in labelled and path not in clashing]
    for path in images:
        if path in several and path not in labelled:
            skipped.append((path, f"{SEVERAL_CLASSES} ({several[path]}): one class an image here; left out"))
        elif path in unlabelled and path not in labelled:
            skipped.append((path, f"no class in the label file ({unlabelled[path]}); left out"))
        elif path not in labelled:
            skipped.append((path, NOT_LISTED))
    return listed


def _rows(label_file: Path) -> list[tuple[int, list[str]]]:
    """The label file's rows that are not blank, each with its line number."""
    try:
        text = decoded(label_file.read_bytes())
    except (OSError, UnicodeDecodeError) as err:
        raise TransferkitError(f"Cannot read the label file {label_file}: {err}") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel  # one column, or nothing to tell: commas
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if not rows or max(len(row) for _, row in rows) < 2:
        raise TransferkitError(
            f"The label file {label_file} needs two columns, the image and its class "
            "(a first row naming them, e.g. file_name,label); it has "
            f"{'no rows' if not rows else 'one column'}."
        )
    return rows


def decoded(data: bytes) -> str:
    """A label file's text: UTF-8 (a byte-order mark, Excel's, dropped); UTF-16 where it starts with
    its byte-order mark (Excel's "Unicode text"); else Windows-1252, what Excel on Windows writes
    as "CSV (comma delimited)" (``café`` stays ``café``, not an error about byte 0xe9).

    Example:
        >>> decoded("file,label\\n1.png,café\\n".encode("cp1252")).split()[1]
        '1.png,café'
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252")


def _columns(rows: list[list[str]], label_file: Path, names_a_file) -> tuple[bool, int, int | list[int]]:
    """``(has a header row, image column, class column)``; the class column is a list of columns
    where the table is one-hot (one column per class)."""
    first = [cell.strip() for cell in rows[0]]
    names = [_column_name(cell) for cell in first]
    if not any(names_a_file(cell) for cell in first):  # a header row
        image_col = next((names.index(n) for n in IMAGE_COLUMNS if n in names), 0)
        others = [i for i in range(len(names)) if i != image_col]
        named = [names.index(n) for n in CLASS_COLUMNS if n in names and names.index(n) != image_col]
        class_col = (
            named[0] if named else others[0] if len(others) == 1 else _one_hot_columns(rows, image_col)
        )
        if class_col is None:
            raise TransferkitError(
                f"The label file {label_file} has columns {', '.join(map(repr, first))}: which one is the "
                f"class? Name it 'label' (or {', '.join(CLASS_COLUMNS[1:4])}, ...)."
            )
        return True, image_col, class_col
    image_col = next(i for i, cell in enumerate(first) if names_a_file(cell))
    if len(first) != 2:
        raise TransferkitError(
            f"The label file {label_file} has no first row naming its columns and {len(first)} columns: "
            "add one (e.g. file_name,label) so that the class column can be found."
        )
    return False, image_col, 1 - image_col


def _one_hot_columns(rows: list[list[str]], image_col: int) -> list[int] | None:
    """The columns besides the image's where a header row is followed by rows of 0s and 1s alone in
    each of them: a one-hot table, one column per class. None where it is not one."""
    width = len(rows[0])
    others = [i for i in range(width) if i != image_col]
    body = rows[1:]
    if len(others) < 2 or not body:
        return None
    if all(len(row) == width and all(row[i].strip() in ONE_HOT for i in others) for row in body):
        return others
    return None


def _label(row: list[str], class_col: int | list[int], header: list[str]) -> str | None:
    """The class a row gives: its class column's cell ("" where empty), or in a one-hot table the
    name of the one column marked 1 ("" where none is, None where several are)."""
    if isinstance(class_col, int):
        return row[class_col].strip() if class_col < len(row) else ""
    marked = [header[i] for i in class_col if ONE_HOT.get(row[i].strip())]
    return marked[0] if len(marked) == 1 else None if marked else ""


def _exact(cell: str, folder: Path, by_path: dict[str, str]) -> str | None:
    """The image ``cell`` names as a path relative to ``folder`` (the scan's spelling of it)."""
    if not cell:
        return None
    return by_path.get(os.path.normpath(os.path.join(folder, cell.replace("\\", "/"))))


def _unique_names(images: list[str]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Each image by its file name and by its name less the extension; None where two files share it."""
    by_name: dict[str, str | None] = {}
    by_stem: dict[str, str | None] = {}
    for path in images:
        name = os.path.basename(path)
        for index, key in ((by_name, name), (by_stem, os.path.splitext(name)[0])):
            index[key] = None if key in index else path
    return by_name, by_stem


def _by_name(cell: str, by_name: dict, by_stem: dict) -> str | None:
    if not cell or "/" in cell.replace("\\", "/"):
        return None  # a path that names no file is not looked for elsewhere
    return by_name.get(cell) or by_stem.get(cell)


def _folded_index(images: list[str]) -> dict[str, str | None]:
    """Each image by its path, its file name and its name less the extension, in any letter case
    (casefolded keys); None where two files share a key."""
    index: dict[str, str | None] = {}
    for path in images:
        name = os.path.basename(path)
        for key in {os.path.normpath(path).casefold(), name.casefold(), os.path.splitext(name)[0].casefold()}:
            index[key] = None if key in index else path
    return index


def _by_case(cell: str, folder: Path, index: dict[str, str | None]) -> str | None:
    """The one image ``cell`` names in another letter case: a label file written where the file
    system ignores case (Windows, macOS) may spell ``IMG_0001.JPG`` a file saved as ``img_0001.jpg``."""
    if not cell:
        return None
    cell = cell.replace("\\", "/")
    keys = [os.path.normpath(os.path.join(folder, cell)).casefold()]
    keys += [] if "/" in cell else [cell.casefold()]
    return next((index[key] for key in keys if index.get(key)), None)


def _missing(cell: str, folder: Path, where: str) -> str:
    if not cell:
        return f"a row names no image ({where}); left out"
    target = os.path.normpath(os.path.join(folder, cell.replace("\\", "/")))
    if os.path.isabs(cell) or not target.startswith(os.path.normpath(folder) + os.sep):
        return f"outside the label file's folder ({where}); left out"
    return f"no such image ({where}: no usable file by that path, or two files by that name); left out"
