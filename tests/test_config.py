"""Configuration: TOML file, environment overrides, and errors that name the key."""

import sys

import pytest

from openbid.config import Config, ConfigError, config_to_toml, load_config


def write(tmp_path, text):
    path = tmp_path / "openbid.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment():
    config = load_config(environ={})
    assert config == Config()
    assert config.events.flush_interval_s == 1.0
    assert config.stores.catalog_url.startswith("sqlite:///")


def test_file_then_environment_overrides(tmp_path):
    path = write(
        tmp_path, '[server]\nport = 9000\nhost = "0.0.0.0"\n[stores]\ncounters = "redis"\n'
    )
    config = load_config(path, environ={"OPENBID_SERVER__PORT": "9100"})
    assert (config.server.host, config.server.port, config.stores.counters) == (
        "0.0.0.0",
        9100,
        "redis",
    )


def test_config_file_named_by_environment(tmp_path):
    path = write(tmp_path, "[events]\nflush_interval_s = 0.25\n")
    assert load_config(environ={"OPENBID_CONFIG": str(path)}).events.flush_interval_s == 0.25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "server.prot: unknown key"),
        ("[sever]\nport = 1\n", "sever: unknown key"),
        ('[server]\nport = "eighty"\n', "server.port: Expected int, got str"),
        ("[server]\nport = 70000\n", "server.port: Expected int <= 65535"),
        ("[events]\nflush_interval_s = 0\n", "events.flush_interval_s: Expected float > 0.0"),
        ('[stores]\ncounters = "memcached"\n', "stores.counters: Invalid enum value 'memcached'"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_naming_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OPENBID_SERVER__PORT": "x"}, "OPENBID_SERVER__PORT: server.port: Expected int, got str"),
        ({"OPENBID_SERVER__PROT": "1"}, "OPENBID_SERVER__PROT: server.prot: unknown key"),
        (
            {"OPENBID_PORT": "1"},
            "environment variable OPENBID_PORT: expected OPENBID_<SECTION>__<KEY>",
        ),
        ({"OPENBID_LOGGING__LEVEL": "loud"}, "logging.level: Invalid enum value 'loud'"),
    ],
)
def test_bad_environment_is_refused_naming_the_variable(environ, message):
    with pytest.raises(ConfigError, match=None) as error:
        load_config(environ=environ)
    assert message in str(error.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_shown_config_loads_back_to_the_same_object(tmp_path):
    config = load_config(environ={"OPENBID_EVENTS__SEGMENTS_URL": "s3://bucket/events"})
    path = write(tmp_path, config_to_toml(config))
    assert load_config(path, environ={}) == config


def test_secrets_are_not_shown():
    config = load_config(environ={"OPENBID_EXCHANGE__TRACKER_SECRET": "hunter2-hunter2-hunter2"})
    assert config.exchange.tracker_secret == "hunter2-hunter2-hunter2"
    shown = config_to_toml(config)
    assert "hunter2" not in shown and 'tracker_secret = "(set, not shown)"' in shown


@pytest.mark.parametrize(
    ("rates", "reason"),
    [
        ("{EUR = 1.08}", "must hold USD = 1.0"),
        ("{USD = 1.0, EUR = inf}", "currency_rates.EUR must be a finite number"),
        ("{USD = 1.0, eur = 1.08}", "'eur' is not an ISO-4217 code"),
        ("{USD = 2.0}", "must hold USD = 1.0"),
    ],
)
def test_currency_rates_are_checked_at_load(rates, reason):
    # Without USD every USD floor would read as "no rate": floors lost, bids dropped.
    with pytest.raises(ConfigError, match=reason):
        load_config(environ={"OPENBID_EXCHANGE__CURRENCY_RATES": rates})


def test_trusted_proxies_must_be_networks():
    config = load_config(environ={"OPENBID_EXCHANGE__TRUSTED_PROXIES": '["10.0.0.0/8"]'})
    assert config.exchange.trusted_proxies == ["10.0.0.0/8"]
    with pytest.raises(ConfigError, match="'ten' is not a network"):
        load_config(environ={"OPENBID_EXCHANGE__TRUSTED_PROXIES": '["ten"]'})


def test_string_keys_take_environment_text_verbatim():
    # A generated secret may be all digits, or look like a TOML date.
    for secret in ("12345678901234567890", "1979-05-27T07:32:00Z"):
        config = load_config(environ={"OPENBID_EXCHANGE__TRACKER_SECRET": secret})
        assert config.exchange.tracker_secret == secret
    assert load_config(environ={"OPENBID_EVENTS__DIR": "true"}).events.dir == "true"
    assert load_config(environ={"OPENBID_SERVER__PORT": "9090"}).server.port == 9090


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        ({"OPENBID_EXCHANGE__DEFAULT_TMAX_MS": "3000"}, "must not exceed max_tmax_ms"),
        ({"OPENBID_EXCHANGE__OWN_BUDGET_MS": "200"}, "no partner would ever have time"),
    ],
)
def test_deadline_settings_must_leave_partners_time(environ, reason):
    with pytest.raises(ConfigError, match=reason):
        load_config(environ=environ)


@pytest.mark.parametrize("secret", ["short", "15-bytes-secret", "\u00e9" * 7])
def test_a_tracker_secret_under_16_bytes_is_refused_at_load(secret):
    # It used to pass the loader and then fail at start with a traceback.
    with pytest.raises(ConfigError) as error:
        load_config(environ={"OPENBID_EXCHANGE__TRACKER_SECRET": secret})
    message = str(error.value)
    assert message.startswith("OPENBID_EXCHANGE__TRACKER_SECRET: exchange: tracker_secret is")
    assert "needs at least 16" in message and secret not in message


def test_a_16_byte_tracker_secret_loads():
    config = load_config(environ={"OPENBID_EXCHANGE__TRACKER_SECRET": "0123456789abcdef"})
    assert config.exchange.tracker_secret == "0123456789abcdef"


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://app:s3cr3t-pw@db.example:5432/openbid", "s3cr3t-pw"),
        ("postgresql+psycopg://app:p@ss/w0rd@db.example/openbid", "p@ss/w0rd"),
        ("postgresql://app@db.example/openbid?password=s3cr3t-pw", "s3cr3t-pw"),
    ],
)
def test_config_show_masks_passwords_in_catalog_urls(url, secret):
    config = load_config(environ={"OPENBID_STORES__CATALOG_URL": url})
    shown = config_to_toml(config)
    assert secret not in shown
    assert "db.example" in shown and "***" in shown


def test_config_show_masks_the_redis_password_and_keeps_the_rest():
    config = load_config(
        environ={"OPENBID_STORES__REDIS_URL": "redis://:hunter2hunter2@cache:6380/2"}
    )
    assert 'redis_url = "redis://:***@cache:6380/2"' in config_to_toml(config)


def test_config_show_keeps_urls_without_credentials_as_they_are():
    config = load_config(environ={"OPENBID_STORES__CATALOG_URL": "postgresql://app@db/openbid"})
    assert 'catalog_url = "postgresql://app@db/openbid"' in config_to_toml(config)


def test_secret_file_paths_are_shown_they_are_not_secrets():
    config = load_config(environ={"OPENBID_EXCHANGE__TRACKER_SECRET_FILE": "/run/secrets/tracker"})
    assert 'tracker_secret_file = "/run/secrets/tracker"' in config_to_toml(config)


def test_workers_take_a_number_or_auto():
    assert load_config(environ={}).server.worker_count() == 1
    redis = {"OPENBID_STORES__COUNTERS": "redis"}
    config = load_config(environ={**redis, "OPENBID_SERVER__WORKERS": "3"})
    assert config.server.workers == 3 and config.server.worker_count() == 3
    config = load_config(environ={**redis, "OPENBID_SERVER__WORKERS": "auto"})
    assert config.server.workers == "auto" and config.server.worker_count() >= 1
    with pytest.raises(ConfigError, match="server.workers"):
        load_config(environ={**redis, "OPENBID_SERVER__WORKERS": "0"})
    with pytest.raises(ConfigError, match="server.workers"):
        load_config(environ={**redis, "OPENBID_SERVER__WORKERS": "many"})


def test_several_workers_with_memory_counters_are_refused_naming_the_key(tmp_path):
    path = write(tmp_path, "[server]\nworkers = 2\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert str(error.value).startswith(f"{path}: server.workers: 2 workers need")
    assert 'stores.counters = "redis"' in str(error.value)
    with pytest.raises(ConfigError, match="^OPENBID_SERVER__WORKERS: server.workers"):
        load_config(environ={"OPENBID_SERVER__WORKERS": "2"})


def test_server_engine_is_one_of_the_two_named_by_its_key():
    assert load_config(environ={}).server.engine == "builtin"
    assert load_config(environ={"OPENBID_SERVER__ENGINE": "granian"}).server.engine == "granian"
    with pytest.raises(ConfigError, match=r"server\.engine: Invalid enum value 'nginx'"):
        load_config(environ={"OPENBID_SERVER__ENGINE": "nginx"})


def test_granian_engine_without_granian_installed_is_one_message_naming_the_key(monkeypatch):
    from openbid.platform import Platform

    monkeypatch.setitem(sys.modules, "granian._granian", None)  # its import now fails
    config = load_config(environ={"OPENBID_SERVER__ENGINE": "granian"})
    with pytest.raises(ConfigError, match=r"server\.engine: .*pip install 'openbid\[granian\]'"):
        Platform(config)
