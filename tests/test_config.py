"""The config file (bundled default and BREAKER_CONFIG) and the settings read from the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from breaker_client.protocol.models import BreakerConfig
from breaker_service.app import create_app
from breaker_service.config import ConfigError, ConfigResolver, load_config, parse_config
from breaker_service.settings import Settings, SettingsError
from breaker_service.store.breaker_memory import MemoryStore
from tests.fixtures.app import CLIENT, CLIENT_TOKEN, SEED_BREAKERS, running_app

if TYPE_CHECKING:
    from pathlib import Path

CUSTOM = """
[defaults]
failure_threshold = 10

[breakers.payments]
open_timeout_s = 15
probe_url = "https://payments.internal/health"

[breakers.search]

[queues.sms_outbox]
max_attempts = 7

[queues.emails]
"""


def test_the_bundled_config_declares_the_seed_services_with_seed_defaults() -> None:
    config = load_config()
    assert sorted(config.breakers) == sorted(SEED_BREAKERS)
    assert config.defaults == BreakerConfig()
    assert all(b.config == BreakerConfig() and b.probe_url is None for b in config.breakers.values())
    assert config.queues == {}


def test_overrides_merge_over_the_defaults() -> None:
    config = parse_config(CUSTOM, source="custom.toml")
    payments = config.breakers["payments"]
    assert (payments.config.failure_threshold, payments.config.open_timeout_s) == (10, 15.0)
    assert payments.probe_url == "https://payments.internal/health"
    assert config.breakers["search"].config == config.defaults
    assert (config.queues["sms_outbox"].max_attempts, config.queues["emails"].max_attempts) == (7, 5)


def test_the_resolver_answers_the_override_else_the_defaults() -> None:
    resolve = ConfigResolver(parse_config(CUSTOM, source="custom.toml"))
    assert resolve("payments").open_timeout_s == 15.0
    assert resolve("anything-else") == BreakerConfig(failure_threshold=10)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[defaults]\nfailure_threshold = 0", "[defaults]: Expected `int` >= 1 - at `$.failure_threshold`"),
        ("[defaults]\nfailur_threshold = 3", "[defaults]: Object contains unknown field `failur_threshold`"),
        ("[breakers.a]\nfoo = 1", "[breakers.a]: Object contains unknown field `foo`"),
        ("[breakers.a]\nopen_timeout_s = 'soon'", "[breakers.a]: Expected `float`"),
        ("[breakers.a]\nwindow_s = 10", "[breakers.a]: window_s needs failure_rate"),
        (
            "[breakers.a]\nsuccess_threshold = 4",
            "[breakers.a]: success_threshold (4) must not exceed half_open_max_calls (3)",
        ),
        ("[breakers.a]\nprobe_url = 'file:///etc/passwd'", "[breakers.a]: Expected `str` matching regex"),
        ("[breakers.'bad name']", "[breakers.bad name]: the name must match"),
        ("[breakers.redis]", "the name 'redis' is reserved"),
        ("[queues.q]\nmax_attempts = 0", "[queues.q]: Expected `int` >= 1"),
        ("[queues.q]\nretries = 2", "[queues.q]: Object contains unknown field `retries`"),
        ("[probes]", "Object contains unknown field `probes`"),
        ("[defaults", "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_the_table(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, source="breakers.toml")
    assert str(raised.value).startswith("breakers.toml: ")
    assert fragment in str(raised.value)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load_config(tmp_path / "missing.toml")


async def test_breaker_config_file_breakers_exist_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "breakers.toml"
    # Without its probe URL: a running app probes it (tests/test_probes.py probes loopback servers only).
    path.write_text(CUSTOM.replace('probe_url = "https://payments.internal/health"\n', ""))
    settings = Settings.from_env({"BREAKER_CONFIG": str(path), "BREAKER_CLIENT_TOKENS": f"svc:{CLIENT_TOKEN}"})
    store = MemoryStore(resolve_config=ConfigResolver(load_config(path)))
    async with running_app(settings, store) as (_, client):
        names = [b["name"] for b in (await client.get("/breakers", headers=CLIENT)).json()["breakers"]]
        assert names == ["payments", "search"]
        created = (await client.post("/breakers/other/acquire", headers=CLIENT)).status_code
        assert created == 200
        assert (await client.get("/breakers/other", headers=CLIENT)).json()["config"]["failure_threshold"] == 10
        dependencies = (await client.get("/health/dependencies", headers=CLIENT)).json()
        assert dependencies == {"payments": True, "search": True, "redis": True}


def test_create_app_refuses_a_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[defaults]\nnope = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        create_app(Settings(config_path=str(path)))


# -- settings -------------------------------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.redis_url) == ("127.0.0.1", 8080, None)
    assert settings.redis_cluster is False
    assert (settings.max_body_bytes, settings.max_breakers, settings.sse_keepalive_s) == (1024 * 1024, 10_000, 15.0)
    assert (settings.admin_tokens, settings.client_tokens, settings.log_level) == ({}, None, "INFO")


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "BREAKER_HOST": "0.0.0.0",
            "BREAKER_PORT": "9000",
            "REDIS_URL": "rediss://cache:6380/1",
            "REDIS_CLUSTER": "true",
            "BREAKER_ADMIN_TOKENS": "ops:a1, oncall:a2",
            "BREAKER_CLIENT_TOKENS": "orchestrator:c1",
            "BREAKER_MAX_BODY_BYTES": "2048",
            "BREAKER_MAX_BREAKERS": "50",
            "BREAKER_LOG_LEVEL": "debug",
            "BREAKER_SSE_KEEPALIVE_S": "2.5",
            "UNRELATED": "ignored",
        }
    )
    assert (settings.host, settings.port, settings.redis_url, settings.redis_cluster) == (
        "0.0.0.0",
        9000,
        "rediss://cache:6380/1",
        True,
    )
    assert settings.admin_tokens == {"ops": "a1", "oncall": "a2"}
    assert settings.client_tokens == {"orchestrator": "c1"}
    assert (settings.max_body_bytes, settings.max_breakers, settings.log_level, settings.sse_keepalive_s) == (
        2048,
        50,
        "DEBUG",
        2.5,
    )


def test_empty_variables_count_as_unset() -> None:
    assert Settings.from_env({"REDIS_URL": "", "BREAKER_CLIENT_TOKENS": " "}) == Settings()


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"BREAKER_PORT": "eighty"}, "BREAKER_PORT"),
        ({"BREAKER_PORT": "70000"}, "BREAKER_PORT"),
        ({"BREAKER_MAX_BODY_BYTES": "0"}, "BREAKER_MAX_BODY_BYTES"),
        ({"BREAKER_MAX_BREAKERS": "-1"}, "BREAKER_MAX_BREAKERS"),
        ({"BREAKER_SSE_KEEPALIVE_S": "0"}, "BREAKER_SSE_KEEPALIVE_S"),
        ({"BREAKER_LOG_LEVEL": "loud"}, "BREAKER_LOG_LEVEL"),
        ({"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER"),
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL must start with"),
        ({"REDIS_CLUSTER": "true"}, "REDIS_CLUSTER needs REDIS_URL"),
        ({"BREAKER_ADMIN_TOKENS": "no-colon"}, "BREAKER_ADMIN_TOKENS must be"),
        ({"BREAKER_ADMIN_TOKENS": "ops:"}, "BREAKER_ADMIN_TOKENS must be"),
        ({"BREAKER_CLIENT_TOKENS": ":secret"}, "BREAKER_CLIENT_TOKENS must be"),
        ({"BREAKER_CLIENT_TOKENS": "a:x,a:y"}, "names 'a' twice"),
        ({"BREAKER_ADMIN_TOKENS": "a:same", "BREAKER_CLIENT_TOKENS": "b:same"}, "appears twice"),
    ],
)
def test_a_bad_setting_is_a_clear_error_naming_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert fragment in str(raised.value)
    assert "same" not in str(raised.value)
    assert "secret" not in str(raised.value)
