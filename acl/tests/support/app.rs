//! The whole ACL, as `make up` runs it, on the test's databases, exchange,
//! slot and Baedal: for what is reached over its HTTP API.

use std::time::Duration;

use acl::facade::FacadeSettings;
use acl::syncback::SyncBackSettings;
use chassis::config::HttpSettings;
use chassis::db::DatabaseSettings;
use tokio::sync::oneshot;

use super::{Rig, delete_queues, eventually_ok_within};

pub const ADMIN_TOKEN: &str = "acl-admin";

/// A running ACL.
pub struct RunningAcl {
    pub url: String,
    http: reqwest::Client,
    amqp_url: String,
    /// Its consumers' queues (the stack's ACL consumes the default ones).
    queues: [String; 2],
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Rig {
    /// What `make up` would give the ACL, pointed at this rig.
    pub fn acl_settings(&self) -> acl::Settings {
        let unique = uuid::Uuid::now_v7().simple();
        acl::Settings {
            http: HttpSettings::default(),
            telemetry: chassis::telemetry::TelemetrySettings::default(),
            database: DatabaseSettings {
                url: self.acl_url(self.own_database()).into(),
                max_connections: 5,
                acquire_timeout_ms: 5_000,
            },
            legacy: self.acl_legacy_settings(),
            amqp_url: self.amqp_url.clone().into(),
            admin_token: Some(ADMIN_TOKEN.to_owned().into()),
            capture: self.capture_settings(),
            facade: FacadeSettings {
                cache_queue: format!("acl.t.{unique}.facade-cache"),
                ..FacadeSettings::default()
            },
            reconcile: acl::reconcile::ReconcileSettings::default(),
            exchange: self.exchange.clone(),
            sync_back: SyncBackSettings {
                queue: format!("acl.t.{unique}.sync-back"),
                ..SyncBackSettings::default()
            },
            monolith: acl::commands::MonolithSettings {
                base_url: self.baedal_url.clone(),
                ..acl::commands::MonolithSettings::default()
            },
        }
    }

    /// Builds and runs the ACL, and waits until it is ready.
    pub async fn start_acl(&self, settings: acl::Settings) -> RunningAcl {
        let queues = [
            settings.facade.cache_queue.clone(),
            settings.sync_back.queue.clone(),
        ];
        let app = acl::Application::build(settings)
            .await
            .expect("the ACL builds");
        let url = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let acl = RunningAcl {
            url,
            http: reqwest::Client::new(),
            amqp_url: self.amqp_url.clone(),
            queues,
            stop,
            task,
        };
        // Ready once its replication slot exists, and creating a slot waits
        // for every transaction in the cluster that has written or locked
        // rows to end, other tests' too (a relay holding its claim while
        // the broker restarts): a longer hang guard than the others.
        // The last answer goes into the failure: it names the check that
        // was down.
        eventually_ok_within("the ACL ready", Duration::from_secs(120), || async {
            let answer = acl
                .http
                .get(format!("{}/health/ready", acl.url))
                .send()
                .await
                .map_err(|error| error.to_string())?;
            if answer.status() == 200 {
                Ok(())
            } else {
                Err(answer.text().await.unwrap_or_default())
            }
        })
        .await;
        acl
    }
}

impl RunningAcl {
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("the ACL answers")
    }

    /// Stops it (everything it runs finishes first) and deletes its queues.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the ACL stops")
            .expect("the ACL ran without panicking")
            .expect("the ACL served");
        for queue in &self.queues {
            delete_queues(&self.amqp_url, queue).await;
        }
    }
}
