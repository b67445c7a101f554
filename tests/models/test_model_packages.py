"""Model packages through the CLI: a model folder exported to one zip, installed under
SPARSEKITS_HOME (a tmp_path in every test: never the real home) and predicted with by name as
by folder; and the packages install refuses in one line (a changed file, a newer format, a member
named outside the folder), leaving nothing installed."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from predict_data import affine_for, save_random_model, synthetic_ct, write_nifti

from cli_runner import run_cli
from sparsekits.errors import InputError
from sparsekits.models.package import (
    HOME_VARIABLE,
    MANIFEST,
    PACKAGE_FORMAT,
    export_model,
    install_model,
    models_root,
    resolve_model,
)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """SPARSEKITS_HOME for this test, which the CLI's subprocesses inherit."""
    monkeypatch.setenv(HOME_VARIABLE, str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("model") / "model", folds=(0,))


@pytest.fixture(scope="module")
def package(model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package") / "kits.zip"
    run = run_cli("model", "export", model, "-o", out)
    assert run.returncode == 0, run.stderr
    return out


def _repack(source: Path, target: Path, change) -> Path:
    """``source``'s members written to ``target`` through ``change(name, data) -> [(name,
    data)]``: a package altered after export."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            for new_name, data in change(name, old.read(name)):
                new.writestr(new_name, data)
    return target


def _refused(run, *problems: str) -> None:
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert all(problem in run.stderr for problem in problems), run.stderr


def test_the_package_holds_the_folder_and_a_checksum_per_file(model, package):
    with zipfile.ZipFile(package) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        members = set(archive.namelist())
    files = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()}
    assert members == files | {MANIFEST} and set(manifest["files"]) == files
    assert manifest["format"] == PACKAGE_FORMAT and manifest["method"] == "sscn-twostage"
    assert len(manifest["fingerprint"]) == 16 and manifest["sparsekits_version"]


def test_installed_by_name_predicts_what_the_folder_predicts(model, package, tmp_path, home):
    source = write_nifti(tmp_path / "scan.nii.gz", synthetic_ct(), affine_for("RAS"))

    install = run_cli("model", "install", package)
    by_name = run_cli("predict", "-i", source, "-o", tmp_path / "name", "--model", "kits")
    by_folder = run_cli("predict", "-i", source, "-o", tmp_path / "folder", "--model", model)

    assert install.returncode == 0, install.stderr
    assert (home / "models" / "kits" / "plan.json").is_file()
    assert by_name.returncode == 0 and by_folder.returncode == 0, by_name.stderr + by_folder.stderr
    labels = [nib.load(tmp_path / out / "scan.nii.gz").get_fdata() for out in ("name", "folder")]
    assert np.array_equal(*labels) and labels[0].any()
    report = json.loads((tmp_path / "name" / "scan.json").read_text())
    manifest = json.loads((home / "models" / "kits" / MANIFEST).read_text())
    # The same networks: the package's fingerprint is the one the report records.
    assert report["model"]["fingerprint"] == manifest["fingerprint"]
    assert report["model"]["path"] == str((home / "models" / "kits").resolve())


def test_model_list_shows_the_installed_model(package, home):
    empty = run_cli("model", "list")
    install_model(package, name="kidneys-v1")
    listed = run_cli("model", "list")

    assert empty.returncode == 0 and "no models installed" in empty.stdout, empty.stderr
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.strip().splitlines()
    assert header.split() == ["NAME", "METHOD", "SPARSEKITS", "SIZE"]
    name, method, version, size, unit = row.split()
    assert (name, method) == ("kidneys-v1", "sscn-twostage")
    assert version == json.loads(zipfile.ZipFile(package).read(MANIFEST))["sparsekits_version"]
    assert float(size) > 0 and unit in ("KB", "MB")


def test_a_changed_file_is_refused_and_nothing_is_installed(package, tmp_path, home):
    def flip_weights(name, data):
        if name.endswith(".safetensors"):
            data = data[:-1] + bytes([data[-1] ^ 1])
        return [(name, data)]

    tampered = _repack(package, tmp_path / "kits.zip", flip_weights)
    run = run_cli("model", "install", tampered)

    _refused(run, str(tampered), "SHA-256 differs")
    assert not (home / "models" / "kits").exists()
    assert not list((home / "models").iterdir())  # no temporary left behind either


def test_a_newer_package_format_is_refused(package, tmp_path, home):
    def newer(name, data):
        if name == MANIFEST:
            manifest = json.loads(data)
            data = json.dumps({**manifest, "format": PACKAGE_FORMAT + 1, "sparsekits_version": "9"})
        return [(name, data)]

    run = run_cli("model", "install", _repack(package, tmp_path / "new.zip", newer))

    _refused(run, "new.zip", f"package format {PACKAGE_FORMAT + 1} is newer", "sparsekits 9")
    assert not (home / "models").exists()


@pytest.mark.parametrize("member", ["../escaped.json", "/tmp/escaped.json", "a/../../x.json"])
def test_a_member_named_outside_the_folder_is_refused(package, tmp_path, home, member):
    def slip(name, data):
        if name != MANIFEST:
            return [(name, data)]
        manifest = json.loads(data)
        manifest["files"][member] = "0" * 64
        return [(name, json.dumps(manifest)), (member, b"{}")]

    with pytest.raises(InputError, match="would be written outside the model folder"):
        install_model(_repack(package, tmp_path / "slip.zip", slip))
    assert not (tmp_path / "escaped.json").exists() and not (home / "models").exists()


def test_the_cli_refuses_a_zip_slip_member_in_one_line(package, tmp_path):
    def slip(name, data):
        return [(name, data), ("../../evil.json", b"{}")] if name == MANIFEST else [(name, data)]

    run = run_cli("model", "install", _repack(package, tmp_path / "slip.zip", slip))

    _refused(run, "'../../evil.json' would be written outside the model folder")


def test_an_existing_name_is_replaced_only_with_force(package, home):
    first = install_model(package)
    (first / "stale.txt").write_text("from the first install")

    with pytest.raises(InputError, match="already installed; give --force"):
        install_model(package)
    assert install_model(package, force=True) == first
    assert not (first / "stale.txt").exists() and (first / "plan.json").is_file()
    with pytest.raises(InputError, match="not a model name"):
        install_model(package, name="../elsewhere")


def test_a_path_that_exists_wins_and_an_unknown_name_lists_the_installed(package, tmp_path):
    install_model(package, name="kits")
    (tmp_path / "kits").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert resolve_model("kits") == Path("kits")  # the folder here, not the installed one
    assert resolve_model("kits") == models_root() / "kits"
    with pytest.raises(InputError) as refused:
        resolve_model("kids")
    assert str(refused.value) == (
        f"kids: no such model folder, nor an installed model of that name "
        f"(installed in {models_root()}: kits)"
    )


def test_export_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(InputError, match="no such model folder"):
        export_model(tmp_path / "absent", tmp_path / "x.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no trained"):
        export_model(tmp_path / "empty", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_compare_takes_an_installed_model_by_name(package):
    from sparsekits.compare import parse_models

    install_model(package, name="kits")
    assert parse_models(["sscn-twostage=kits"]) == {"sscn-twostage": models_root() / "kits"}
    with pytest.raises(InputError, match="nor an installed model of that name"):
        parse_models(["sscn-twostage=kids"])
