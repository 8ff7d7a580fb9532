"""The CLI must start without importing TensorFlow (the agent runs where there is none), and its
file helpers (the writability probe, atomic model saves) need no TensorFlow either."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesparse.cli._files import save_model_atomically
from edgesparse.errors import UserError
from edgesparse.files import check_writable


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


def test_save_model_atomically_writes_an_ordinary_file_or_nothing(tmp_path):
    out = tmp_path / "sub" / "m.keras"
    save_model_atomically(_Saves(b"model"), out)
    umask = os.umask(0)
    os.umask(umask)
    assert out.read_bytes() == b"model"
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask       # not mkstemp's 0600
    with pytest.raises(RuntimeError, match="disk full"):
        save_model_atomically(_Saves(None), out)
    assert out.read_bytes() == b"model"                        # the old file is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.keras"]   # no temporary left


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
