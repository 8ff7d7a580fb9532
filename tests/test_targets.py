"""Target profiles load, carry their constraints and hardware figures, and reject bad files."""
import pytest

from edgesparse.errors import UserError
from edgesparse.targets import builtin_targets, load_target


def test_builtin_targets():
    assert {"rpi4", "android-nnapi", "coral"} <= set(builtin_targets())
    rpi4, nnapi, coral = (load_target(n) for n in ("rpi4", "android-nnapi", "coral"))
    assert rpi4.threads == 4 and rpi4.formats == ["tflite", "onnx"]
    assert rpi4.constraints.int8_io == ["float32"]
    assert nnapi.constraints.static_shapes and "deprecated" in nnapi.deprecation
    assert coral.constraints.int8_io == ["int8", "uint8"] and coral.constraints.max_effective_dims == 3
    assert coral.constraints.parameter_cache_bytes == 8 * 1024 * 1024
    for t in (rpi4, nnapi, coral):
        hw = t.hardware
        assert hw.peak_int8_gops > 0 and hw.active_power_w > hw.idle_power_w > 0
        assert t.recipe["passes"], "every target carries a default recipe"


def test_unknown_target_lists_the_choices():
    with pytest.raises(UserError, match="unknown target 'jetson'.*rpi4"):
        load_target("jetson")


def test_target_file_errors_name_the_key(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text((load_target("rpi4").model_dump_json()).replace('"threads":4', '"threads":"four"'))
    with pytest.raises(UserError, match="threads"):
        load_target(bad)


def _custom(tmp_path, old: str, new: str):
    from edgesparse.targets import targets_dir

    source = (targets_dir() / "rpi4.yaml").read_text()
    assert old in source
    f = tmp_path / "custom.yaml"
    f.write_text(source.replace(old, new))
    return f


@pytest.mark.parametrize("old,new,key", [
    ("threads: 4 ", "threads: -2 ", "threads"),
    ("threads: 4 ", "threads: 0 ", "threads"),
    ("  batch: 1 ", "  batch: -1 ", "constraints.batch"),
    ("  batch: 1 ", "  batch: 0 ", "constraints.batch"),
    ("simd_width: 4 ", "simd_width: 0 ", "simd_width"),
    ("idle_power_w: 2.7", "idle_power_w: .nan", "hardware.idle_power_w"),
    ("mem_bandwidth_gbs: 4.4", "mem_bandwidth_gbs: -4.4", "hardware.mem_bandwidth_gbs"),
    ("peak_fp32_gflops: 96.0", "peak_fp32_gflops: .inf", "hardware.peak_fp32_gflops"),
    # The name goes into out/<model>-<name>/: "../../x" put the build outside out/.
    ("name: rpi4", "name: ../../../escaped", "name"),
    ("name: rpi4", "name: a/b", "name"),
])
def test_out_of_bounds_figures_are_refused_when_the_target_loads(tmp_path, old, new, key):
    with pytest.raises(UserError, match=rf"custom.yaml: {key}: .*rpi4.yaml"):
        load_target(_custom(tmp_path, old, new))


def test_invalid_utf8_is_one_clear_line(tmp_path):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.yaml is not UTF-8 text \(byte 9 is invalid\)"):
        load_target(f)


def test_bad_custom_target_stops_build_before_any_work(tmp_path, capsys):
    from pathlib import Path

    from edgesparse.cli import run

    model = Path(__file__).resolve().parent.parent / "sample_models" / "digits_mlp.keras"
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: \xff\xfe\n")
    neg = _custom(tmp_path, "threads: 4 ", "threads: -1 ")
    for target in (bad, neg):
        out = tmp_path / f"out-{target.stem}"
        assert run(["build", str(model), "--target", str(target), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: target file") and len(err.splitlines()) == 1, err
        assert not out.exists()
