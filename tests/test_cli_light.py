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
