//! The operator's (and `submit`'s) own credentials: flags, or the source
//! `--credentials-source` names, looked up in the environment it is given.

use hss_client::{
    chain::{self, Choice},
    credentials::Credentials,
    sources::SourceKind,
};

use super::{Env, Error, HssArgs};

impl HssArgs {
    /// The default credentials from flags or the SDK environment names.
    pub fn credentials(&self) -> Result<Credentials, Error> {
        if let Some(token) = &self.auth_token {
            return Ok(Credentials::token(token)?);
        }
        match (&self.access_key, &self.secret_key, &self.security_token) {
            (Some(ak), Some(sk), Some(token)) if !token.is_empty() => {
                Ok(Credentials::temporary(ak, sk, token)?)
            }
            (Some(ak), Some(sk), _) => Ok(Credentials::permanent(ak, sk)?),
            _ => Err(Error::NoCredentials),
        }
    }

    /// The operator's own credentials and where they come from (`--credentials-source`);
    /// `None` when `auto` leaves them to a Secret (`secret_configured`, `run` only). A
    /// provider's first fetch happens on first use, not here (except in the chain, which
    /// needs an answer from metadata and pod identity to pick them, as the SDK does).
    pub async fn own_credentials(
        &self,
        http: &reqwest::Client,
        secret_configured: bool,
        env: &Env,
    ) -> Result<Option<Choice>, Error> {
        let flags = self.access_key.is_some() || self.auth_token.is_some();
        let kind = match self.credentials_source {
            SourceKind::Static => return self.static_choice().map(Some),
            SourceKind::Auto if flags => return self.static_choice().map(Some),
            SourceKind::Auto if secret_configured => return Ok(None),
            SourceKind::Auto => SourceKind::Chain,
            other => other,
        };
        let setup = chain::Setup {
            env,
            http: http.clone(),
            direct: self.direct_http_client()?,
            metadata_endpoint: self.metadata_endpoint.clone(),
            allow_insecure: self.allow_insecure_endpoints,
        };
        Ok(Some(chain::choose(kind, &setup).await?))
    }

    fn static_choice(&self) -> Result<Choice, Error> {
        let credentials = self.credentials()?;
        Ok(Choice {
            detail: credentials.identity(),
            credentials,
            source: "static",
        })
    }
}
