"""A service that cannot be reached is one clear line and exit code 3, never a traceback."""

from tests.utils.cli import run_cli
from tests.utils.servers import bound_socket


def test_a_refused_connection_is_one_line_and_exit_code_3(tmp_path):
    with bound_socket() as sock:  # bound, not listening: connections to it are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        run = run_cli("jobs", "list", config_home=tmp_path, url=url, key="ts_any")
    assert run.returncode == 3
    [line] = run.stderr.splitlines()
    assert line.startswith(f"cannot reach {url}: ") and "refused" in line
    assert run.stdout == ""


def test_a_bad_command_line_is_click_usage_error_2(tmp_path):
    run = run_cli("jobs", "submit", config_home=tmp_path)
    assert run.returncode == 2
    assert "Missing argument 'SPEC'" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_bad_set_is_a_usage_error_naming_it(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("task: image_classification\n")
    run = run_cli("jobs", "submit", str(spec), "--set", "epochs", config_home=tmp_path)
    assert run.returncode == 2
    assert "--set 'epochs': write it as field.path=value" in run.stderr
