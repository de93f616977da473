"""The API client trusts the environment only when it configures proxies or a netrc file."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelservice_operator.kube import environment_configures_http

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "environ",
    [
        {"HTTPS_PROXY": "http://proxy:3128"},
        {"https_proxy": "http://proxy:3128"},
        {"HTTP_PROXY": "http://proxy:3128"},
        {"ALL_PROXY": "socks5://proxy:1080"},
    ],
)
def test_a_proxy_in_the_environment_is_trusted(environ: dict[str, str], tmp_path: Path) -> None:
    assert environment_configures_http(environ, tmp_path)


def test_a_netrc_file_is_trusted(tmp_path: Path) -> None:
    assert not environment_configures_http({}, tmp_path)
    (tmp_path / ".netrc").write_text("machine api login a password b\n")
    assert environment_configures_http({}, tmp_path)
    elsewhere = tmp_path / "netrc"
    elsewhere.write_text("machine api login a password b\n")
    assert environment_configures_http({"NETRC": str(elsewhere)}, tmp_path / "empty")
    assert not environment_configures_http({"NETRC": str(tmp_path / "none")}, tmp_path)


def test_nothing_configured_nothing_trusted(tmp_path: Path) -> None:
    assert not environment_configures_http({"NO_PROXY": "10.0.0.0/8", "HTTPS_PROXY": ""}, tmp_path)
