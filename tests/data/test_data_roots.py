"""Where a dataset lives: --root > STUDY_DATA_<NAME> > ./study.toml > the user config."""

from __future__ import annotations

import pytest

from study.data.roots import resolve_root
from study.errors import DataError


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No environment variable, no config file, an empty working directory."""
    for name in ("STUDY_DATA_ISIC2017", "STUDY_DATA_ISIC2018", "STUDY_DATA_PH2"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def _folders(base, *names):
    for name in names:
        (base / name).mkdir(parents=True, exist_ok=True)
    return [base / name for name in names]


def test_precedence_flag_env_project_config_user_config(isolated, monkeypatch):
    flag, env, project, user = _folders(isolated, "flag", "env", "project", "user")
    user_config = isolated / "xdg" / "ultralbm-study" / "config.toml"
    user_config.parent.mkdir(parents=True)
    user_config.write_text(f'[data]\nph2 = "{user}"\n')
    assert resolve_root("ph2").path == user
    assert resolve_root("ph2").origin == f"config {user_config}"
    (isolated / "work" / "study.toml").write_text(f'[data]\nph2 = "{project}"\nisic2017 = "{project}"\n')
    assert resolve_root("ph2").path == project
    monkeypatch.setenv("STUDY_DATA_PH2", str(env))
    assert (resolve_root("ph2").path, resolve_root("ph2").origin) == (env, "STUDY_DATA_PH2")
    assert resolve_root("ph2", flag) == resolve_root("ph2", str(flag))
    assert (resolve_root("ph2", flag).path, resolve_root("ph2", flag).origin) == (flag, "--root")


def test_relative_config_path_is_relative_to_the_config_file(isolated):
    (data,) = _folders(isolated / "work", "datasets/isic")
    (isolated / "work" / "study.toml").write_text('[data]\nisic2018 = "datasets/isic"\n')
    assert resolve_root("isic2018").path == data


def test_unset_root_says_where_to_download_and_how_to_set_it(isolated):
    with pytest.raises(DataError) as error:
        resolve_root("isic2017")
    message = str(error.value)
    for expected in ("https://challenge.isic-archive.com/data/#2017", "--root", "STUDY_DATA_ISIC2017", "study.toml"):
        assert expected in message
    assert "[data]" in message


def test_missing_folder_names_the_path_and_where_it_came_from(isolated, monkeypatch):
    monkeypatch.setenv("STUDY_DATA_PH2", str(isolated / "nowhere"))
    with pytest.raises(DataError, match=r"nowhere \(from STUDY_DATA_PH2\): no such folder"):
        resolve_root("ph2")


def test_unreadable_config_is_an_error_naming_it(isolated):
    (isolated / "work" / "study.toml").write_text("[data\n")
    with pytest.raises(DataError, match=r"study\.toml: cannot read config file"):
        resolve_root("ph2")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match="isic2017, isic2018, ph2, synthetic"):
        resolve_root("isic2019")
