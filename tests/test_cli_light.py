"""The CLI must start without importing TensorFlow (the agent runs where there is none), and its
file helpers (the writability probe, new files written whole and never over another) need no
TensorFlow either."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesparse.errors import UserError
from edgesparse.files import check_new_file, check_writable, write_new_file


def test_cli_import_does_not_load_tensorflow():
    code = ("import sys, edgesparse.cli; "
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: the probe cannot refuse")
def test_check_writable_names_the_nearest_existing_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(UserError, match=f"{locked} is not writable; choose another --out"):
            check_writable(locked / "new" / "model.keras")
    finally:
        locked.chmod(0o700)


def test_check_writable_accepts_new_paths_under_a_writable_folder(tmp_path):
    (tmp_path / "file.keras").write_bytes(b"")
    for path in (tmp_path / "a" / "b", tmp_path / "file.keras", tmp_path):
        check_writable(path)


class _Saves:
    """Anything with Keras's `save(path)`: the helper only needs that."""

    def __init__(self, data: bytes | None):
        self.data = data

    def save(self, path):
        if self.data is None:
            Path(path).write_bytes(b"half")
            raise RuntimeError("disk full")
        Path(path).write_bytes(self.data)


def test_write_new_file_writes_an_ordinary_file_or_nothing(tmp_path):
    out = tmp_path / "sub" / "m.keras"
    write_new_file(out, _Saves(b"model").save)
    umask = os.umask(0)
    os.umask(umask)
    assert out.read_bytes() == b"model"
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask       # not mkstemp's 0600
    failed = tmp_path / "sub" / "failed.keras"
    with pytest.raises(RuntimeError, match="disk full"):
        write_new_file(failed, _Saves(None).save)
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.keras"]   # no half file, no temporary


def test_write_new_file_never_replaces_a_file(tmp_path):
    mine = tmp_path / "m.keras"
    mine.write_text("not edgesparse's")
    with pytest.raises(UserError, match=r"--out .*m.keras already exists \(a file\); edgesparse does not "
                                        "overwrite it: move it away or choose another --out"):
        write_new_file(mine, _Saves(b"model").save)

    def someone_writes_meanwhile(tmp):
        Path(tmp).write_bytes(b"model")
        mine.write_text("theirs, written during the work")

    mine.unlink()
    with pytest.raises(UserError, match="appeared while edgesparse was working"):
        write_new_file(mine, someone_writes_meanwhile)
    assert mine.read_text() == "theirs, written during the work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]
    link = tmp_path / "link.keras"
    link.symlink_to(tmp_path / "nowhere.keras")                # dangling: exists() says False
    with pytest.raises(UserError, match=r"already exists \(a symlink\)"):
        check_new_file(link)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_write_new_file_under_proc_is_a_user_error():
    # As root os.access calls /proc writable, but nothing can be created there.
    with pytest.raises(UserError, match="cannot write to /proc/edgesparse-test.keras"):
        write_new_file(Path("/proc/edgesparse-test.keras"), _Saves(b"model").save)


MODEL = Path(__file__).parent / "data" / "digits_cnn_keras3.keras"


@pytest.mark.parametrize("argv", [
    ["prune", str(MODEL), "--macs", "0.5"],
    ["prune", str(MODEL), "--macs", "0.5", "--sensitivity"],      # its plot: <out>-sensitivity.png
    ["sparsify", str(MODEL), "--sparsity", "0.5"],
    ["lowrank", str(MODEL), "--macs", "0.5"],
    ["grow", str(MODEL)],
    ["profile", str(MODEL), "--local"],
], ids=["prune", "prune-plot", "sparsify", "lowrank", "grow", "profile"])
def test_commands_writing_one_file_refuse_an_existing_one_before_any_work(tmp_path, capsys, argv):
    from edgesparse.cli import run

    out = tmp_path / "existing.keras"
    flag = "--json" if argv[0] == "profile" else "--out"
    if "--sensitivity" in argv:
        out.with_name("existing-sensitivity.png").write_text("not mine")
    else:
        out.write_text("not mine")
    assert run([*argv, flag, str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and f"another {flag}" in err, err
    assert all(p.read_text() == "not mine" for p in tmp_path.iterdir())
    assert len(list(tmp_path.iterdir())) == 1


def _command_params(name):
    import typer.main

    from edgesparse.cli import app

    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[name].params}


def test_pass_commands_take_their_options_from_the_pass_config():
    from typing import get_args

    from edgesparse.passes.prune.pass_ import PruneConfig
    from edgesparse.passes.sparsify.pass_ import SparsifyConfig

    def without_none(annotation):   # typer takes `float | None` as float, None meaning "not given"
        return [a for a in get_args(annotation) if a is not type(None)]

    # Where the command reads differently from the recipe key, on purpose (cli/prune.py).
    own_help = {"finetune_epochs", "no_reconstruct"}
    for command, config, wanted in (
            ("prune", PruneConfig, {"macs", "params", "ratio", "criterion", "allocation", "round_to",
                                    "min_channels", "steps", "finetune_epochs", "no_reconstruct",
                                    "sensitivity"}),
            ("sparsify", SparsifyConfig, {"sparsity", "pattern", "method", "criterion", "allocation",
                                          "epochs", "update_every", "drop_fraction", "end_fraction", "init",
                                          "learning_rate", "calibration_samples", "sizes", "seed"})):
        params = _command_params(command)
        offered = {n for n in params if n in config.model_fields or n.removeprefix("no_") in config.model_fields}
        assert offered == wanted, command
        for name in offered - own_help:
            field, option = config.model_fields[name], params[name]
            assert option.help == field.description, (command, name)
            assert option.default == field.get_default(), (command, name)
            assert option.opts[0] == "--" + name.replace("_", "-")
            # the field's own type: a Literal stays a Literal, which the CLI offers as choices
            assert option.type_descriptor.annotation in (field.annotation, *without_none(field.annotation))
    assert _command_params("prune")["no_reconstruct"].opts == ["--no-reconstruct"]


def test_a_choice_outside_the_config_literal_is_refused_before_any_work(tmp_path, capsys):
    from edgesparse.cli import run

    assert run(["prune", str(tmp_path / "absent.keras"), "--allocation", "best"]) == 2
    assert "--allocation" in capsys.readouterr().err


def test_validation_errors_are_one_line_naming_the_key_or_option():
    from pydantic import ValidationError

    from edgesparse.errors import describe_validation_error
    from edgesparse.passes.sparsify.pass_ import SparsifyConfig

    def describe(as_option=False, **kwargs):
        with pytest.raises(ValidationError) as info:
            SparsifyConfig(**kwargs)
        return describe_validation_error(info.value, known=list(SparsifyConfig.model_fields),
                                         as_option=as_option)

    assert describe(sparsty=0.5).startswith("unknown key 'sparsty' (known: sparsity, pattern,")
    assert describe(sparsity=1.5) == "sparsity: Input should be less than 1"
    assert describe(True, calibration_samples=0) == "--calibration-samples: Input should be greater than or equal to 1"
    assert describe(pattern="2:4", sparsity=0.9).startswith("pattern 2:4 fixes sparsity at 0.5")
