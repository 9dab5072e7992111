//! Layered configuration: defaults, then a file, then the environment.
// figment::Jail closures return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use chassis::config::{Config, ConfigError, ExposeSecret, HttpSettings};
use chassis::db::DatabaseSettings;
use chassis::telemetry::{LogFormat, TelemetrySettings};
use figment::Jail;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default)]
    http: HttpSettings,
    #[serde(default)]
    telemetry: TelemetrySettings,
    database: DatabaseSettings,
}

const URL: &str = "postgres://demo:s3cr3t-pw@127.0.0.1:54320/demo";

#[test]
fn the_environment_overrides_the_file_which_overrides_the_defaults() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "demo.toml",
            r#"
            [http]
            port = 7000
            request_timeout_ms = 1234
            [telemetry]
            format = "json"
            "#,
        )?;
        jail.set_env("DEMO_CONFIG", "demo.toml");
        jail.set_env("DEMO_HTTP__PORT", "7001");
        jail.set_env("DEMO_DATABASE__URL", URL);

        let settings: Settings = Config::new("DEMO")
            .default("http.port", 6000)
            .default("http.body_limit_bytes", 10)
            .load()
            .expect("valid settings");
        assert_eq!(settings.http.port, 7001, "environment wins");
        assert_eq!(
            settings.http.request_timeout_ms, 1234,
            "file beats the built-in default"
        );
        assert_eq!(
            settings.http.body_limit_bytes, 10,
            "component default beats the built-in one"
        );
        assert_eq!(settings.telemetry.format, LogFormat::Json);
        assert_eq!(
            settings.telemetry.filter, "info",
            "untouched keys keep their defaults"
        );
        assert_eq!(settings.database.url.expose_secret(), URL);
        Ok(())
    });
}

#[test]
fn without_a_file_the_component_defaults_apply() {
    Jail::expect_with(|jail| {
        jail.set_env("DEMO_DATABASE__URL", URL);
        let settings: Settings = Config::new("DEMO")
            .default("http.port", 6000)
            .load()
            .expect("valid");
        assert_eq!(settings.http.port, 6000);
        assert_eq!(settings.database.max_connections, 10);
        Ok(())
    });
}

#[test]
fn a_named_file_that_does_not_exist_is_an_error() {
    Jail::expect_with(|jail| {
        jail.set_env("DEMO_CONFIG", "missing.toml");
        let error = Config::new("DEMO").load::<Settings>().unwrap_err();
        assert!(matches!(error, ConfigError::MissingFile(_)), "{error}");
        Ok(())
    });
}

#[test]
fn a_missing_required_key_is_named() {
    Jail::expect_with(|_| {
        let error = Config::new("DEMO").load::<Settings>().unwrap_err();
        let message = error.to_string();
        assert!(message.contains("database"), "{message}");
        Ok(())
    });
}

#[test]
fn a_wrong_value_names_the_key_and_hides_secrets() {
    Jail::expect_with(|jail| {
        jail.set_env("DEMO_DATABASE__URL", URL);
        jail.set_env("DEMO_HTTP__PORT", "not-a-port");
        let error = Config::new("DEMO")
            .load::<Settings>()
            .unwrap_err()
            .to_string();
        assert!(error.contains("port"), "{error}");
        assert!(!error.contains("s3cr3t-pw"), "{error}");
        Ok(())
    });
}

#[test]
fn secrets_never_print() {
    Jail::expect_with(|jail| {
        jail.set_env("DEMO_DATABASE__URL", URL);
        let settings: Settings = Config::new("DEMO").load().expect("valid");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("s3cr3t-pw"), "{printed}");
        assert!(printed.contains("REDACTED"), "{printed}");
        Ok(())
    });
}

#[test]
fn an_invalid_database_url_is_refused_without_echoing_it() {
    let settings = DatabaseSettings {
        url: "postgres://demo:s3cr3t-pw@127.0.0.1:notaport/demo".into(),
        max_connections: 1,
        acquire_timeout_ms: 100,
    };
    let error = settings.pool().unwrap_err().to_string();
    assert!(error.contains("database.url"), "{error}");
    assert!(!error.contains("s3cr3t-pw"), "{error}");
}
