"""Where the CLI finds the service and its key, and the login file it writes."""

import stat
import tomllib

import pytest

from tests.conftest import PROJECT
from trainserve_cli import main
from trainserve_cli.config import (
    DEFAULT_URL,
    ConfigError,
    Connection,
    config_path,
    connection,
    save_login,
)

SAVED_URL = "http://trainserve.example:8000"


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path


def test_the_login_file_is_under_the_xdg_config_folder_and_only_its_owner_reads_it(config_home):
    path = save_login(SAVED_URL + "/", "ts_secret")
    assert path == config_home / "trainserve" / "config.json" == config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert connection(None, None) == Connection(SAVED_URL, "ts_secret")


def test_a_login_over_a_file_of_wider_mode_narrows_it():
    path = save_login(SAVED_URL, "ts_first")
    path.chmod(0o644)
    save_login(SAVED_URL, "ts_second")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert connection(None, None).api_key == "ts_second"
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no partial file left


def test_without_a_login_the_local_service_and_no_key():
    assert connection(None, None) == Connection(DEFAULT_URL, None)


def test_options_and_environment_come_before_the_file():
    save_login(SAVED_URL, "ts_saved")
    assert connection(None, "ts_given") == Connection(SAVED_URL, "ts_given")
    assert connection(SAVED_URL, None) == Connection(SAVED_URL, "ts_saved")


def test_the_saved_key_is_never_sent_to_another_url():
    save_login(SAVED_URL, "ts_saved")
    assert connection("http://elsewhere:9000", None) == Connection("http://elsewhere:9000", None)


@pytest.mark.parametrize("content", ["{not json", '["a", "list"]'])
def test_a_login_file_that_cannot_be_read_says_what_to_do(content):
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ConfigError, match="run `trainserve login` again"):
        connection(None, None)


def test_the_console_script_is_the_cli_main():
    scripts = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["trainserve"].partition(":")
    assert (module, getattr(main, function)) == ("trainserve_cli.main", main.main)
