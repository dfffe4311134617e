//! The `Authorization` header every clone of a client shares, and its renewal after a 401.

use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::HeaderValue;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::secret::Secret;

/// How the client signs in: a user and password, or an API key.
#[derive(Debug, Clone, PartialEq)]
pub enum EsAuth {
    Basic {
        username: String,
        password: Secret,
    },
    /// The `encoded` form the create-API-key call returns.
    ApiKey(Secret),
}

/// What a refresher returns: the credentials as read now, or why they could not be read (a
/// message that never holds the secret itself).
pub type AuthFuture = Pin<Box<dyn Future<Output = Result<EsAuth, String>> + Send>>;

/// The header value for `auth`, marked sensitive so `Debug` prints no credentials.
pub(crate) fn header(auth: &EsAuth) -> HeaderValue {
    let value = match auth {
        EsAuth::Basic { username, password } => format!(
            "Basic {}",
            BASE64.encode(format!("{username}:{}", password.expose()))
        ),
        EsAuth::ApiKey(key) => format!("ApiKey {}", key.expose()),
    };
    let mut header =
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    header.set_sensitive(true);
    header
}

/// The header in use and, when set, how to read the credentials again. A rotated secret
/// (`ES_SECRET_ID`) gives a warm container 401s with the password it read at start-up; with a
/// refresher, a 401 re-reads the credentials (at most once per interval per container, so a
/// wrong password does not hammer Secrets Manager), swaps the header when they changed, and
/// the request is sent once more.
pub(crate) struct Credentials {
    header: RwLock<Option<HeaderValue>>,
    refresh: Option<Refresh>,
}

struct Refresh {
    fetch: Box<dyn Fn() -> AuthFuture + Send + Sync>,
    every: Duration,
    /// When the last read started; held across the read so concurrent 401s wait for its result
    /// instead of reading the secret again.
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("set", &self.current().is_some())
            .field("refresh_every", &self.refresh.as_ref().map(|r| r.every))
            .finish()
    }
}

impl Credentials {
    pub(crate) fn new(auth: Option<&EsAuth>) -> Self {
        Self {
            header: RwLock::new(auth.map(header)),
            refresh: None,
        }
    }

    /// The same header, re-read by `fetch` after a 401 at most once per `every`.
    pub(crate) fn with_refresh<F>(&self, every: Duration, fetch: F) -> Self
    where
        F: Fn() -> AuthFuture + Send + Sync + 'static,
    {
        Self {
            header: RwLock::new(self.current()),
            refresh: Some(Refresh {
                fetch: Box::new(fetch),
                every,
                last: tokio::sync::Mutex::new(None),
            }),
        }
    }

    pub(crate) fn current(&self) -> Option<HeaderValue> {
        self.header
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn can_refresh(&self) -> bool {
        self.refresh.is_some()
    }

    /// After a 401 to a request sent with `sent`: the header to resend it with, or `None` when
    /// resending cannot help (no refresher, the credentials did not change, or they were read
    /// less than the interval ago and are still the ones that were refused).
    pub(crate) async fn after_unauthorized(
        &self,
        sent: Option<&HeaderValue>,
    ) -> Option<HeaderValue> {
        let refresh = self.refresh.as_ref()?;
        let mut last = refresh.last.lock().await;
        // Another request may have swapped the header since this one went out.
        let current = self.current();
        if current.as_ref() != sent {
            return current;
        }
        if last.is_some_and(|at| at.elapsed() < refresh.every) {
            return None;
        }
        *last = Some(Instant::now());
        match (refresh.fetch)().await {
            Ok(auth) => {
                let fresh = header(&auth);
                if Some(&fresh) == sent {
                    warn!(
                        "Elasticsearch answered 401 and the credentials read again are the same: \
                         fix the secret's value (or the user's roles and realm in the cluster)"
                    );
                    None
                } else {
                    info!("Elasticsearch answered 401: new credentials read, request sent again");
                    *self
                        .header
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(fresh.clone());
                    Some(fresh)
                }
            }
            Err(error) => {
                warn!(%error, "Elasticsearch answered 401 and the credentials could not be read again");
                None
            }
        }
    }
}
