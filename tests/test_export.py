"""Export (SavedModel, TFLite x4 quantizations, ONNX), the parity check and the CI gates' exit codes."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import transferkit
from transferkit.cli import main
from transferkit.errors import TransferkitError
from transferkit.exporting.formats import (
    AUTO_ORDER,
    QUANTIZATIONS,
    check_choices,
    labels_path,
    output_path,
    record_path,
)
from transferkit.exporting.runtimes import onnx_labels, open_runner, tflite_interpreter
from transferkit.reporting.runfolder import load_run
from transferkit.testing import make_image_folder
from transferkit.training.callbacks import all_layers
from transferkit.training.device import float32_model

# report=False: the fits' figures and report.html play no part in exporting (every number is written).
TINY = dict(
    backbone="tiny", weights="random", image_size=16, epochs=1, size="small", similar=True, report=False
)
RECORD_FIELDS = {
    "path",
    "format",
    "quantize",
    "labels_path",
    "file_bytes",
    "keras_file_bytes",
    "held_out",
    "parity",
    "max_drop",
    "passed",
    "versions",
    "chosen",
}
PARITY_FIELDS = {
    "num_images",
    "top1_agreement",
    "keras_accuracy",
    "export_accuracy",
    "accuracy_drop",
    "max_abs_difference",
    "only_keras_right",
    "only_export_right",
    "drop_p_value",
    "keras_ms_per_image",
    "export_ms_per_image",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", classes=3, per_class=12, size=16)


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return transferkit.fit(str(data), out=out, name="tiny", verbose=0, **TINY).run_dir


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).uniform(0, 255, (5, 16, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def tflite_exports(run_dir):
    """Every quantization exported once: {quantize: ExportResult}."""
    return {
        q: transferkit.export(run_dir, "tflite", quantize=q, max_drop=None, verbose=0) for q in QUANTIZATIONS
    }


def keras_probabilities(run_dir, images):
    return load_run(run_dir).model.predict(images, verbose=0)


def test_saved_model_round_trip_gives_the_same_probabilities_and_labels(run_dir, pixels):
    stale = run_dir / "export" / ".saved_model.k9dead.tmp"  # the staging folder of a killed export
    stale.mkdir(parents=True, exist_ok=True)
    result = transferkit.export(run_dir, "saved_model", verbose=0)
    assert not stale.exists()
    loaded = tf.saved_model.load(str(result.path))
    np.testing.assert_allclose(loaded.serve(pixels).numpy(), keras_probabilities(run_dir, pixels), atol=1e-6)
    names = [name.decode() for name in loaded.labels()["labels"].numpy()]
    assert names == list(load_run(run_dir).class_names)
    assert labels_path(result.path, "saved_model").read_text().split() == names
    assert result.parity.top1_agreement == 1.0 and result.passed
    # Each weight stored once (keras-team/keras#23553: ExportArchive.track stored it twice); only
    # what the endpoint reads (a Normalization layer's count is not).
    stored = tf.train.load_checkpoint(str(result.path / "variables" / "variables"))
    values = [
        np.prod(shape) for key, shape in stored.get_variable_to_shape_map().items() if "/.ATTRIBUTES/" in key
    ]
    assert (
        0.99 * load_run(run_dir).model.count_params() < sum(values) <= load_run(run_dir).model.count_params()
    )


@pytest.mark.parametrize("quantize", QUANTIZATIONS)
def test_each_tflite_quantization_loads_and_runs_with_a_float_interface(
    tflite_exports, run_dir, pixels, quantize
):
    result = tflite_exports[quantize]
    interpreter = tflite_interpreter(result.path)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32  # takes the pixels model.keras takes
    probs = open_runner(result.path, "tflite")(pixels)
    assert probs.shape == (len(pixels), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
    if quantize == "none":
        np.testing.assert_allclose(probs, keras_probabilities(run_dir, pixels), atol=1e-5)
    assert result.labels_path.read_text().split() == list(load_run(run_dir).class_names)


def test_int8_file_is_smaller_than_float_and_float16_in_between(tflite_exports):
    sizes = {q: result.file_bytes for q, result in tflite_exports.items()}
    assert sizes["int8"] < sizes["float16"] < sizes["none"]
    assert sizes["dynamic"] < sizes["none"]


def test_int8_keeps_the_pooling_and_the_head_in_float_and_the_base_in_integers(tflite_exports):
    from transferkit.exporting.converters import _FLOAT_TAIL

    tensors = tflite_interpreter(tflite_exports["int8"].path).get_tensor_details()
    tail = {t["dtype"] for t in tensors if _FLOAT_TAIL.search(t["name"]) and "BiasAdd" in t["name"]}
    base = {t["dtype"] for t in tensors if not _FLOAT_TAIL.search(t["name"])}
    assert tail == {np.float32}, tail  # the head's logits: float (integer statistics broke truncations)
    assert np.int8 in base, base  # the base's convolutions: full integer


def test_int8_without_the_quantization_debugger_converts_everything_to_integers(
    run_dir, tmp_path, monkeypatch
):
    from transferkit.exporting.converters import _FLOAT_TAIL

    monkeypatch.delattr(tf.lite.experimental, "QuantizationDebugger")
    result = transferkit.export(run_dir, "tflite", quantize="int8", out=str(tmp_path / "q.tflite"), verbose=0)
    tensors = tflite_interpreter(result.path).get_tensor_details()
    assert np.int8 in {
        t["dtype"] for t in tensors if _FLOAT_TAIL.search(t["name"]) and "BiasAdd" in t["name"]
    }


def test_int8_conversion_and_the_interpreter_print_no_cpp_log_lines(run_dir, tmp_path, capfd):
    transferkit.export(run_dir, "tflite", quantize="int8", out=str(tmp_path / "q.tflite"), verbose=0)
    tflite_interpreter(tmp_path / "q.tflite")
    err = capfd.readouterr().err
    assert "fully_quantize" not in err and "XNNPACK" not in err, err


def test_parity_record_has_every_field_and_names_the_held_out_split(tflite_exports):
    result = tflite_exports["int8"]
    record = json.loads(record_path(result.path).read_text())
    assert RECORD_FIELDS <= set(record)
    assert PARITY_FIELDS <= set(record["parity"])
    assert record["held_out"]["split"] == "test"  # the run held out a test split; parity uses it
    assert record["held_out"]["num_images"] == record["parity"]["num_images"] > 0
    assert record["quantize"] == "int8" and record["file_bytes"] == result.path.stat().st_size
    assert record["parity"]["export_ms_per_image"] > 0


def test_the_parity_check_says_whether_a_drop_could_be_chance():
    from transferkit.exporting.parity import compare_predictions

    labels = np.zeros(88, "int64")
    right, wrong = np.array([0.9, 0.1]), np.array([0.1, 0.9])
    keras = np.stack([right] * 70 + [wrong] * 18)
    # 3 images right only before, 1 only after: a drop of 2 of 88 (2.3 points), as a float16 file gave
    export = keras.copy()
    export[:3], export[70] = wrong, right
    parity = compare_predictions(keras, export, labels)
    assert (parity.only_keras_right, parity.only_export_right) == (3, 1)
    assert parity.accuracy_drop == pytest.approx(2 / 88, abs=1e-4)
    assert parity.drop_p_value == pytest.approx(0.625)  # exact two-sided binomial of 3 in 4
    export[:12] = wrong  # 12 right only before, 1 only after: not chance
    assert compare_predictions(keras, export, labels).drop_p_value < 0.01
    assert compare_predictions(keras, keras, labels).drop_p_value == 1.0


def test_onnx_runs_in_onnxruntime_with_labels_in_its_metadata(run_dir, data, pixels):
    result = transferkit.export(run_dir, "onnx", data=str(data), verbose=0)
    assert onnx_labels(result.path) == list(load_run(run_dir).class_names)
    probs = open_runner(result.path, "onnx")(pixels)
    np.testing.assert_allclose(probs, keras_probabilities(run_dir, pixels), atol=1e-5)
    assert result.held_out["split"] == "data" and result.held_out["num_images"] == 36  # all of --data
    assert result.parity.top1_agreement == 1.0
    import onnxruntime

    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    size = load_run(run_dir).image_size
    assert [(v.name, v.shape) for v in session.get_inputs()] == [("pixels", ["batch", size, size, 3])]
    assert [(v.name, v.shape[0]) for v in session.get_outputs()] == [("probabilities", "batch")]


def _losing_half(monkeypatch):
    """Every export scored 50 points below the Keras model: the over-the-bar path, on demand."""
    from transferkit.exporting import export, parity

    for name in ("check_parity", "compare_predictions"):
        real = getattr(parity, name)

        def lose(*args, real=real, **kwargs):
            found = real(*args, **kwargs)
            return dataclasses.replace(
                found, export_accuracy=found.export_accuracy - 0.5, accuracy_drop=found.accuracy_drop + 0.5
            )

        monkeypatch.setattr(export, name, lose)


def test_export_losing_more_than_max_drop_exits_3_and_keeps_the_file(run_dir, tmp_path, monkeypatch):
    _losing_half(monkeypatch)
    out = tmp_path / "strict.tflite"
    args = ["export", str(run_dir), "--format", "tflite", "--out", str(out), "--max-drop", "0.01", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    assert result.stdout == ""  # --quiet: the error alone
    assert "more than --max-drop 0.01" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert out.exists() and json.loads(record_path(out).read_text())["passed"] is False


def test_quantize_auto_keeps_the_first_within_max_drop_chosen_on_validation_not_test(run_dir, tmp_path):
    result = transferkit.export(run_dir, "tflite", quantize="auto", out=tmp_path, verbose=0)
    chosen = result.chosen
    assert chosen["on"]["split"] == "validation" and result.held_out["split"] == "test"
    tried = [t["quantize"] for t in chosen["tried"]]
    assert tried == list(AUTO_ORDER[: len(tried)]) and result.quantize == tried[-1]
    assert [t["passed"] for t in chosen["tried"]] == [False] * (len(tried) - 1) + [True]
    assert all(t["accuracy_drop"] > 0.01 for t in chosen["tried"][:-1])
    assert result.path == tmp_path / output_path(None, run_dir, "tflite", result.quantize).name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [result.path.name, labels_path(result.path, "tflite").name, record_path(result.path).name]
    )  # the candidates it did not keep are not left behind
    assert json.loads(record_path(result.path).read_text())["chosen"] == chosen
    assert result.file_bytes == chosen["tried"][-1]["file_bytes"] == result.path.stat().st_size


def test_quantize_auto_with_no_acceptable_quantization_keeps_float32_and_exits_3(
    run_dir, tmp_path, monkeypatch
):
    _losing_half(monkeypatch)
    args = ["export", str(run_dir), "--format", "tflite", "--quantize", "auto", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, [*args, "--max-drop", "0.01"])
    assert result.exit_code == 3, result.output
    assert "Choosing the quantization on" in result.stdout and "Chose none" in result.stdout
    assert [
        line.split()[0] for line in result.stdout.splitlines() if "over --max-drop (1.0 points)" in line
    ] == list(AUTO_ORDER)
    assert "(none)" not in result.stderr
    assert "chosen by --quantize auto on the validation images" in result.stderr
    record = json.loads(record_path(tmp_path / "model.tflite").read_text())
    assert record["quantize"] == "none" and len(record["chosen"]["tried"]) == 4 and not record["passed"]
    monkeypatch.undo()
    default_bar = CliRunner().invoke(main, [*args[:-2], "--max-drop", "0.01"], catch_exceptions=False)
    assert default_bar.exit_code == 0, default_bar.output
    with pytest.raises(TransferkitError, match="needs that bar"):
        check_choices("tflite", "auto", max_drop=None)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_drop": -1}, r"^max_drop=\.\.\. is a share of accuracy in \[0, 1\]"),
        ({"max_drop": "1%"}, r"^max_drop=\.\.\. is a share of accuracy"),
        ({"format": "TFLite", "quantize": "Int8", "max_drop": 2}, r"got 2\."),  # names in any case
    ],
)
def test_the_api_refuses_a_max_drop_outside_0_to_1_and_takes_format_names_in_any_case(arguments, message):
    with pytest.raises(TransferkitError, match=message):
        transferkit.export("runs/never", **{"format": "tflite", **arguments})


def test_out_is_checked_before_any_work_and_a_folder_of_other_files_is_never_emptied(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    (run_dir / "export").mkdir(parents=True)
    (run_dir / "model.keras").write_text("the user's model")
    serving = tmp_path / "serving"
    (serving / "other_model").mkdir(parents=True)
    (serving / "notes.txt").write_text("keep")
    for out in (serving, run_dir, run_dir / "model.keras"):
        with pytest.raises(TransferkitError, match="a SavedModel|SavedModel export replaces"):
            output_path(out, run_dir, "saved_model", "none")
    assert (serving / "notes.txt").read_text() == "keep" and (run_dir / "model.keras").exists()
    earlier = run_dir / "export" / "saved_model"  # an earlier SavedModel, or an empty or new folder
    earlier.mkdir()
    (earlier / "saved_model.pb").write_bytes(b"")
    for out in (earlier, serving / "other_model", serving / "pets"):
        assert output_path(out, run_dir, "saved_model", "none") == out
    # A TFLite or ONNX file given a folder goes in it under its default name.
    assert output_path(serving, run_dir, "tflite", "int8") == serving / "model_int8.tflite"
    assert output_path(serving / "app.onnx", run_dir, "onnx", "none") == serving / "app.onnx"
    # So does a new folder, written as one or named without a file extension.
    assert output_path(f"{tmp_path / 'new'}/", run_dir, "onnx", "none") == tmp_path / "new" / "model.onnx"
    assert output_path(tmp_path / "apps", run_dir, "tflite", "none") == tmp_path / "apps" / "model.tflite"
    assert output_path(None, run_dir, "onnx", "none") == run_dir / "export" / "model.onnx"
    # A file named for another format is refused: ONNX bytes in a .tflite file open nowhere.
    with pytest.raises(TransferkitError, match=r"ends in '.tflite', but an ONNX file is '.onnx'"):
        output_path(serving / "app.tflite", run_dir, "onnx", "none")
    args = ["export", str(run_dir), "--format", "saved_model", "--out", str(serving)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "folder of other files" in result.output  # refused before loading
    with pytest.raises(TransferkitError, match="notes.txt is a file, not a folder"):  # before converting
        output_path(serving / "notes.txt" / "app.onnx", run_dir, "onnx", "none")


def test_quantizing_anything_but_tflite_is_a_clear_error():
    with pytest.raises(
        TransferkitError, match="^quantize='int8' applies to format='tflite' only; received format="
    ):
        check_choices("onnx", "int8")
    with pytest.raises(TransferkitError, match="Unknown export format 'coreml'"):
        check_choices("coreml", "none")


def test_fit_min_accuracy_exits_3_after_writing_the_run_folder(data, tmp_path):
    args = [
        "fit",
        "--data",
        str(data),
        "--out",
        str(tmp_path),
        "--name",
        "gate",
        "--quiet",
        "--min-accuracy",
        "1",
    ]
    args += ["--backbone", "tiny", "--weights", "random", "--image-size", "16", "--epochs", "1"]
    args += ["--size", "small", "--similar"]
    result = CliRunner().invoke(main, args)
    metrics = json.loads((tmp_path / "gate" / "metrics.json").read_text())
    accuracy = metrics[metrics["headline"]]["accuracy"]
    assert (tmp_path / "gate" / "model.keras").exists()
    assert result.exit_code == (3 if accuracy < 1 else 0), result.output
    if accuracy < 1:
        assert f"accuracy {accuracy:.3f} is below --min-accuracy 1" in result.stderr


def test_evaluate_min_accuracy_exits_3_below_the_bar_and_0_at_it(run_dir, data, tmp_path):
    # The class folders renamed in a cycle: the model is wrong on most images, so a bar above its
    # accuracy stays within [0, 1].
    rotated, names = tmp_path / "rotated", sorted(p.name for p in data.iterdir() if p.is_dir())
    for name, other in zip(names, names[1:] + names[:1], strict=True):
        shutil.copytree(data / name, rotated / other)
    runner = CliRunner()
    accuracy = json.loads(
        runner.invoke(main, ["evaluate", str(run_dir), "--data", str(rotated), "--format", "json"]).stdout
    )["accuracy"]
    assert accuracy < 0.999
    base = ["evaluate", str(run_dir), "--data", str(rotated), "--min-accuracy"]
    assert runner.invoke(main, [*base, f"{accuracy}"]).exit_code == 0
    above = runner.invoke(main, [*base, f"{accuracy + 0.001}"])
    assert above.exit_code == 3
    assert "is below --min-accuracy" in above.stderr and "Traceback" not in above.output


def _readme_python_block(containing: str) -> str:
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    (block,) = [block for block in blocks if containing in block]
    return block


def test_the_readmes_load_pixels_for_apps_gives_the_pixels_transferkit_decodes(tmp_path):
    """The README's Pillow-only image preparation for exported models is the one predict uses."""
    from PIL import Image, ImageDraw

    from transferkit.data.decode import decode_image

    namespace: dict = {}
    exec(_readme_python_block("def load_pixels"), namespace)  # noqa: S102 - the README's own code
    rng = np.random.default_rng(0)
    shape = Image.new("RGBA", (90, 70), (0, 0, 0, 0))  # transparent, black underneath
    ImageDraw.Draw(shape).ellipse((10, 10, 60, 50), fill=(200, 40, 40, 255))
    photo = Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8))
    exif = photo.getexif()
    exif[0x0112] = 6  # shot in portrait: turned upright on decoding
    images = {
        "shape.png": shape,
        "grey_alpha.png": shape.convert("LA"),
        "palette.png": shape.convert("P"),
        "grey.png": photo.convert("L"),
        "photo.png": photo,
        "cmyk.jpg": photo.convert("CMYK"),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
    photo.save(tmp_path / "portrait.jpg", exif=exif)
    for path in sorted(tmp_path.iterdir()):
        expected = decode_image(path, 24).astype(np.float32)
        np.testing.assert_array_equal(namespace["load_pixels"](path, 24), expected, err_msg=path.name)
    deep = tmp_path / "deep" / "xray.png"  # 16-bit grey, 12 bits of it used: as a detector writes it
    deep.parent.mkdir()
    Image.fromarray(rng.integers(0, 4096, (70, 90), dtype=np.uint16)).save(deep)
    for white_level in (None, 4095):
        expected = decode_image(deep, 24, white_level).astype(np.float32)
        pixels = namespace["load_pixels"](deep, 24, *([white_level] if white_level else []))
        np.testing.assert_array_equal(pixels, expected, err_msg=f"white level {white_level}")
        assert 0 < pixels.mean() < pixels.max() < 255  # scaled, not clipped at 255


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_a_run_trained_in_mixed_precision_exports_a_float32_model_to_every_format(
    precision, data, pixels, tmp_path, monkeypatch
):
    """mixed_float16 is a GPU's default: its half-precision layers neither convert to TFLite nor
    (bfloat16) load in onnxruntime. Every format is written from a float32 copy of the model."""
    run_dir = transferkit.fit(
        str(data), out=tmp_path, name=precision, verbose=0, precision=precision, **TINY
    ).run_dir
    trained = load_run(run_dir, as_trained=True).model
    assert precision in {layer.dtype_policy.name for layer in all_layers(trained)}
    reference = float32_model(trained)
    assert {layer.dtype_policy.name for layer in all_layers(reference)} == {"float32"}
    expected = reference.predict(pixels, verbose=0)
    half = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}[precision]  # the trained model's own rounding
    np.testing.assert_allclose(trained.predict(pixels, verbose=0), expected, atol=half)
    for fmt in ("saved_model", "tflite", "onnx"):
        result = transferkit.export(run_dir, fmt, data=str(data), max_drop=None, verbose=0)
        np.testing.assert_allclose(open_runner(result.path, fmt)(pixels), expected, atol=1e-5)
    # Loaded to classify on a machine without a GPU, a float16 run computes in float32 (no fast
    # float16 kernels on a CPU); bfloat16, only ever asked for, stays; on a GPU both stay.
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    on_cpu = load_run(run_dir).model
    policies = {layer.dtype_policy.name for layer in all_layers(on_cpu)}
    if precision == "mixed_float16":
        assert policies == {"float32"}
        np.testing.assert_allclose(on_cpu.predict(pixels, verbose=0), expected, atol=1e-6)
    else:
        assert precision in policies
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["/physical_device:GPU:0"])
    assert precision in {layer.dtype_policy.name for layer in all_layers(load_run(run_dir).model)}


def test_a_float32_model_is_exported_as_it_is(run_dir):
    model = load_run(run_dir).model
    assert float32_model(model) is model
