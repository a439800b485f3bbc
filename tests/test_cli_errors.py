"""The ``evssl`` command's error reporting and start-up (issues 13 §7 and 14): one-line data errors with exit 1, usage
errors with exit 2, ``--debug``/``EVSSL_DEBUG`` for the traceback, output protection, a full disk, lazy Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evssl.cli import main
from evssl.events.convert import ConvertError
from tests.helpers import REPO, cli_env


def _exit(args: list[str]) -> int:
    try:
        return int(main(args) or 0)
    except SystemExit as exc:
        return int(exc.code or 0)


def _npz(path: Path, n: int = 50, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        x=rng.integers(0, 16, n).astype(np.int16),
        y=rng.integers(0, 12, n).astype(np.int16),
        t=np.sort(rng.integers(0, 10**6, n)).astype(np.int64),
        p=(rng.integers(0, 2, n) * 2 - 1).astype(np.int8),
    )


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=120
    )


def test_data_errors_are_one_message_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.delenv("EVSSL_DEBUG", raising=False)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3, np.int16))  # no t/p columns
    assert _exit(["convert", str(bad), "--out", str(tmp_path / "s.h5"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("evssl convert: error: 1 of 1 input file(s) cannot be converted")
    assert "bad.npz" in err and "Traceback" not in err and "--debug" in err
    # usage errors keep exit 2
    assert _exit(["convert", str(bad)]) == 2
    assert "--out" in capsys.readouterr().err
    # --debug (anywhere) and EVSSL_DEBUG=1 show the exception itself
    with pytest.raises(ConvertError, match=r"bad\.npz"):
        main(["convert", str(bad), "--out", str(tmp_path / "s.h5"), "--no-progress", "--debug"])
    monkeypatch.setenv("EVSSL_DEBUG", "1")
    with pytest.raises(ConvertError):
        main(["convert", str(bad), "--out", str(tmp_path / "s.h5"), "--no-progress"])


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "evssl.cli", "convert", str(tmp_path / "missing.bin"), "--out", str(tmp_path / "s.h5")],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == f"evssl convert: error: {tmp_path / 'missing.bin'}: no such file or folder"
    assert "Traceback" not in proc.stderr


def test_convert_output_protection(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "a.npz"
    _npz(f)
    out = tmp_path / "s.h5"
    assert _exit(["convert", str(f), "--out", str(out), "--no-progress"]) == 0
    assert _exit(["convert", str(f), "--out", str(out), "--no-progress"]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert _exit(["convert", str(f), "--out", str(out), "--no-progress", "--force"]) == 0
    assert _exit(["convert", str(f), "--out", str(out), "--no-progress", "--append"]) == 1
    assert "'a.npz' (from" in capsys.readouterr().err
    before = out.read_bytes()
    assert _exit(["convert", str(out), "--out", str(out), "--no-progress", "--force"]) == 1
    assert "the output is also an input" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_export_refuses_to_overwrite_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"checkpoint bytes")
    assert _exit(["export", str(ckpt), "--out", str(ckpt)]) == 1
    assert "would overwrite the checkpoint" in capsys.readouterr().err
    assert ckpt.read_bytes() == b"checkpoint bytes"


def test_fit_data_error_is_one_message(tmp_path: Path) -> None:
    cfg = REPO / "experiments" / "smoke" / "supervised.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "evssl.cli", "fit", "--config", str(cfg), "--data.init_args.source",
         str(tmp_path / "missing.h5"), "--trainer.max_epochs", "1", "--trainer.logger", "false"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "evssl fit: error:" in proc.stderr and "missing.h5" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_full_disk_during_convert_is_a_clear_error(tmp_path: Path) -> None:
    """A file-size limit (``ulimit -f``) stands in for a full disk: exit 1, a message, no crash, nothing left."""
    big = tmp_path / "big.npz"
    _npz(big, n=400_000)
    out = tmp_path / "out" / "s.h5"
    out.parent.mkdir()
    script = f"ulimit -f 256; exec {sys.executable} -m evssl.cli convert {big} --out {out} --no-progress"
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "cannot write the store: the disk is full" in proc.stderr and "Traceback" not in proc.stderr
    assert list(out.parent.iterdir()) == []


def test_help_convert_and_synth_do_not_import_lightning(tmp_path: Path) -> None:
    """Issue 14: the data commands start without Lightning (and torch) imported."""
    _npz(tmp_path / "a.npz")
    code = """
import contextlib, io, json, sys
from evssl.cli import main
for args in (["--help"], ["synth", "--help"], ["convert", "--help"],
             ["convert", "a.npz", "--out", "s.h5", "--no-progress"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
        except SystemExit:
            pass
print(json.dumps({m: m in sys.modules for m in ("lightning", "lightning.pytorch", "torch")}))
"""
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == {"lightning": False, "lightning.pytorch": False, "torch": False}
    assert (tmp_path / "s.h5").exists()


def test_stale_temporary_of_a_killed_convert_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    f = tmp_path / "a.npz"
    _npz(f)
    stale = tmp_path / f"s.h5.tmp-{proc.pid}"
    stale.write_bytes(b"torn")
    assert _exit(["convert", str(f), "--out", str(tmp_path / "s.h5"), "--no-progress"]) == 0
    assert f"removed stale temporary file(s) of dead writers: {stale}" in capsys.readouterr().err
    assert not stale.exists()
