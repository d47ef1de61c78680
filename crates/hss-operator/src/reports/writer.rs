//! Which report kind the API server serves, and the writes: one server-side apply per report,
//! none for a report this process already wrote with the same content.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::{
    Api, Client, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    },
};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{Error, Kind, Mode, Owner, Rows, affected::SCAN_UID, build, namespaced};
use crate::controller_runtime::FIELD_MANAGER;

/// How long an answer of discovery is kept: report CRDs installed after start-up are found
/// within this long (or at once after a write got 404).
pub const RECHECK: Duration = Duration::from_secs(60);

/// Reports remembered as written, past which the memory starts again (a rewrite is harmless).
const REMEMBERED: usize = 10_000;

/// What a write of one read's reports did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// `--reports off`.
    Off,
    /// The API server serves none of the kinds the mode may write.
    NotServed(Mode),
    /// Written as `kind`: `applied` reports sent, `unchanged` not sent (same as written).
    Wrote {
        kind: Kind,
        applied: usize,
        unchanged: usize,
    },
}

/// The kind to write: the first of the mode's kinds that is served. Pure.
pub fn pick(mode: Mode, served: &[Kind]) -> Option<Kind> {
    mode.kinds().iter().copied().find(|k| served.contains(k))
}

/// Whether discovery is to be asked again at `now`. Pure.
pub fn due(checked_at: Option<Instant>, now: Instant) -> bool {
    checked_at.is_none_or(|at| now.saturating_duration_since(at) >= RECHECK)
}

/// The condition `ReportsWritten` after a write: (status, reason, message); none with
/// `--reports off`. Pure.
pub fn condition(w: &Result<Written, Error>) -> Option<(bool, &'static str, String)> {
    match w {
        Ok(Written::Off) => None,
        Ok(Written::NotServed(mode)) => Some((
            false,
            "ReportsNotServed",
            format!(
                "no report written: the API server serves none of {} (install the OpenReports or \
                 wgpolicyk8s.io CRDs, or run with --reports off)",
                mode.kinds()
                    .iter()
                    .map(|k| format!("{}.{}", k.plural(), k.group()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        Ok(Written::Wrote {
            kind,
            applied,
            unchanged,
        }) => Some((
            true,
            "Written",
            format!(
                "{} {} {} ({applied} written, {unchanged} unchanged)",
                applied + unchanged,
                kind.api_version(),
                kind.kind()
            ),
        )),
        Err(e @ Error::Discover(_)) => Some((false, "DiscoveryFailed", crate::report_error(e))),
        Err(e @ (Error::Write(_) | Error::Prune(_))) => {
            Some((false, "WriteFailed", crate::report_error(e)))
        }
    }
}

/// Writes reports; one per process.
pub struct Writer {
    mode: Mode,
    max_results: usize,
    /// The last discovery: its answer and when it was asked.
    found: Mutex<Option<(Option<Kind>, Instant)>>,
    /// Content hash of each report written, by kind, namespace and name.
    written: Mutex<HashMap<String, [u8; 32]>>,
    /// The "not written" log line was given (until a kind is served again).
    told: AtomicBool,
    /// The namespaces reports may be written in besides the scans' own; None: all.
    watched: Option<Vec<String>>,
}

impl Writer {
    /// `watched`: the operator's namespaces (None: all); namespaced reports go to those only.
    pub fn new(args: &super::ReportArgs, watched: Option<Vec<String>>) -> Self {
        Self {
            watched,
            mode: args.mode,
            max_results: usize::from(args.report_max_results),
            found: Mutex::new(None),
            written: Mutex::new(HashMap::new()),
            told: AtomicBool::new(false),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The kind to write now, asking discovery when its last answer is older than [`RECHECK`].
    async fn kind(&self, client: &Client) -> Result<Option<Kind>, Error> {
        let now = Instant::now();
        if let Some((kind, at)) = *Self::lock(&self.found)
            && !due(Some(at), now)
        {
            return Ok(kind);
        }
        let mut served = Vec::new();
        for kind in self.mode.kinds() {
            match client.list_api_group_resources(&kind.api_version()).await {
                Ok(list) if list.resources.iter().any(|r| r.name == kind.plural()) => {
                    served.push(*kind);
                }
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(Error::Discover(e)),
            }
        }
        let kind = pick(self.mode, &served);
        let before = Self::lock(&self.found).replace((kind, now));
        if before.map(|(k, _)| k) != Some(kind) {
            match kind {
                Some(k) => tracing::info!(kind = %k.api_version(), "reports are written"),
                None => tracing::debug!(mode = ?self.mode, "no report kind is served"),
            }
        }
        Ok(kind)
    }

    fn api(client: &Client, kind: Kind, ns: Option<&str>) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(kind.group(), kind.version(), kind.kind());
        let ar = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
        match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        }
    }

    /// The namespaced reports of scan `uid` as (namespace, name), in the namespaces written to.
    async fn list_namespaced(
        &self,
        client: &Client,
        kind: Kind,
        uid: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        let lp = ListParams::default().labels(&format!("{SCAN_UID}={uid}"));
        let scopes: Vec<Option<&str>> = match &self.watched {
            None => vec![None],
            Some(ns) => ns.iter().map(|n| Some(n.as_str())).collect(),
        };
        let mut out = Vec::new();
        for ns in scopes {
            match Self::api(client, kind, ns).list_metadata(&lp).await {
                Ok(list) => out.extend(
                    list.items
                        .iter()
                        .map(|o| (o.namespace().unwrap_or_default(), o.name_any())),
                ),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(Error::Prune(e)),
            }
        }
        Ok(out)
    }

    /// Deletes the namespaced reports of scan `uid` but those in `keep`; how many were deleted.
    async fn prune(
        &self,
        client: &Client,
        kind: Kind,
        uid: &str,
        keep: &[(String, String)],
    ) -> Result<usize, Error> {
        let mut deleted = 0;
        for (ns, name) in self.list_namespaced(client, kind, uid).await? {
            if keep.iter().any(|k| k.0 == ns && k.1 == name) {
                continue;
            }
            match Self::api(client, kind, Some(&ns))
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(Error::Prune(e)),
            }
            Self::lock(&self.written).remove(&format!("{}|{ns}|{name}", kind.plural()));
        }
        Ok(deleted)
    }

    /// Deletes every namespaced report of scan `uid` (its ClusterScanTask is being deleted);
    /// how many were deleted.
    pub async fn delete_namespaced(&self, client: &Client, uid: &str) -> Result<usize, Error> {
        if self.mode == Mode::Off {
            return Ok(0);
        }
        let Some(kind) = self.kind(client).await? else {
            return Ok(0);
        };
        self.prune(client, kind, uid, &[]).await
    }

    /// Applies `body` unless this process wrote the same; Ok(false) when unchanged, Err(None)
    /// when the kind is no longer served.
    async fn apply(
        &self,
        client: &Client,
        kind: Kind,
        body: &serde_json::Value,
    ) -> Result<bool, Option<Error>> {
        let name = body["metadata"]["name"].as_str().unwrap_or_default();
        let ns = body["metadata"]["namespace"].as_str().unwrap_or_default();
        let key = format!("{}|{ns}|{name}", kind.plural());
        let hash: [u8; 32] = Sha256::digest(body.to_string().as_bytes()).into();
        if Self::lock(&self.written).get(&key) == Some(&hash) {
            return Ok(false);
        }
        match Self::api(client, kind, Some(ns))
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {
                // The CRD went away: ask again next time.
                *Self::lock(&self.found) = None;
                return Err(None);
            }
            Err(e) => return Err(Some(Error::Write(e))),
        }
        let mut written = Self::lock(&self.written);
        if written.len() >= REMEMBERED {
            written.clear();
        }
        written.insert(key, hash);
        Ok(true)
    }

    /// Writes the reports of `rows` for `owner`.
    pub async fn write(
        &self,
        client: &Client,
        owner: &Owner,
        rows: &Rows,
    ) -> Result<Written, Error> {
        if self.mode == Mode::Off {
            return Ok(Written::Off);
        }
        let Some(kind) = self.kind(client).await? else {
            if !self.told.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    mode = ?self.mode,
                    "reports are not written: the API server serves no report kind of --reports \
                     (looked up again every minute)"
                );
            }
            return Ok(Written::NotServed(self.mode));
        };
        self.told.store(false, Ordering::Relaxed);
        let mut bodies: Vec<serde_json::Value> = rows
            .groups
            .iter()
            .map(|g| build(kind, owner, g, self.max_results))
            .collect();
        let own = bodies.len();
        if rows.affected {
            bodies.extend(namespaced(kind, owner, rows, self.max_results, |ns| {
                self.watched
                    .as_ref()
                    .is_none_or(|w| w.iter().any(|n| n == ns))
            }));
        }
        let (mut applied, mut unchanged) = (0, 0);
        for body in &bodies {
            match self.apply(client, kind, body).await {
                Ok(true) => applied += 1,
                Ok(false) => unchanged += 1,
                Err(None) => return Ok(Written::NotServed(self.mode)),
                Err(Some(e)) => return Err(e),
            }
        }
        if rows.affected {
            let keep: Vec<(String, String)> = bodies[own..]
                .iter()
                .map(|b| {
                    let m = &b["metadata"];
                    (
                        m["namespace"].as_str().unwrap_or_default().to_string(),
                        m["name"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            self.prune(client, kind, &owner.uid, &keep).await?;
        }
        Ok(Written::Wrote {
            kind,
            applied,
            unchanged,
        })
    }
}
