"""Transcripts stay local unless the config opts in; keys come from the environment."""

from __future__ import annotations

import pytest
from care.errors import CareInputError
from care.llm.openai_chat import OpenAIChat
from care.llm.remote import (
    NO_KEY,
    RemoteNotAllowedError,
    is_loopback,
    read_api_key,
    require_remote_opt_in,
)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000/v1",
        "http://127.0.0.1:8000/v1",
        "http://127.0.0.5/v1",
        "http://[::1]:8000/v1",
        "http://LOCALHOST/v1",
    ],
)
def test_loopback_endpoints_need_no_opt_in(url):
    assert is_loopback(url)
    assert require_remote_opt_in(url, allow_remote_transcripts=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "https://api.deepseek.com",
        "http://10.0.0.2:8000/v1",
        "http://localhost.example.com/v1",
        "http://0.0.0.0:8000/v1",
    ],
)
def test_other_hosts_are_refused_without_opt_in(url):
    assert not is_loopback(url)
    with pytest.raises(RemoteNotAllowedError, match="allow_remote_transcripts: true"):
        require_remote_opt_in(url, allow_remote_transcripts=False)
    assert require_remote_opt_in(url, allow_remote_transcripts=True) == url


def test_default_endpoint_is_remote(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(RemoteNotAllowedError):
        require_remote_opt_in(None, allow_remote_transcripts=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # what the client would use
    assert require_remote_opt_in(None, allow_remote_transcripts=False) == "http://127.0.0.1:9/v1"


def test_refused_before_any_client_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("SOME_KEY", "sk-never-shown-123")
    with pytest.raises(RemoteNotAllowedError) as err:
        OpenAIChat(
            "gpt-4o",
            base_url="https://api.openai.com/v1",
            api_key_env="SOME_KEY",
            cache_dir=tmp_path,
        )
    assert "sk-never-shown-123" not in str(err.value)


def test_api_key_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-abc")
    assert read_api_key("MY_KEY", "https://api.openai.com/v1") == "sk-abc"
    monkeypatch.delenv("MY_KEY")
    assert read_api_key("MY_KEY", "http://127.0.0.1:8000/v1") == NO_KEY
    with pytest.raises(CareInputError, match="MY_KEY"):
        read_api_key("MY_KEY", "https://api.openai.com/v1")


def test_the_opt_in_is_off_unless_given():
    from care.llm.remote import opt_in

    assert opt_in({"allow_remote_transcripts": True}) is True
    assert opt_in({}) is False


def test_config_schema_takes_one_name_for_the_opt_in():
    """The workflow's config check refuses any other name for the opt-in."""
    import copy

    import yaml
    from care.config import check_config

    from tests.conftest import REPO

    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    entry = {"name": "gpt-4o", "backend": "openai", "model": "gpt-4o"}
    ok = copy.deepcopy(config)
    ok["baselines"]["zero_shot"].append({**entry, "allow_remote_transcripts": True})
    check_config(ok, ["my.yaml"])
    old = copy.deepcopy(config)
    old["baselines"]["zero_shot"].append({**entry, "allow_remote": True})
    with pytest.raises(CareInputError, match="'allow_remote' was unexpected") as err:
        check_config(old, ["my.yaml"])
    assert err.value.path == "my.yaml" and err.value.field.startswith("baselines.zero_shot")
