//! What `submit` takes of a manifest's own endpoint, region and projects: the flags win, except
//! an endpoint on the allow-list.

use hss_client::endpoint::Endpoint;

use super::{Error, HssArgs, Overrides};

impl HssArgs {
    /// What `submit` takes of a manifest's `endpoint`, `region`, `projectId` and
    /// `enterpriseProjectId`, and a note for each one it drops. Flags (and their environment
    /// names) win, except that a manifest's endpoint (or region) on the allow-list is used: a
    /// manifest from a pull request cannot send the pipeline's credentials elsewhere. Pure.
    pub fn manifest_overrides<'a>(
        &self,
        manifest: &Overrides<'a>,
    ) -> Result<(Overrides<'a>, Vec<String>), Error> {
        let mut kept = Overrides::default();
        let mut notes = Vec::new();
        let asked = match (manifest.endpoint, manifest.region) {
            (Some(ep), _) => Some(Endpoint::parse(ep)?),
            (None, Some(region)) => Some(Endpoint::for_region(region)?),
            (None, None) => None,
        };
        let configured = self.endpoint.is_some() || self.region.is_some();
        if let Some(asked) = asked {
            let own = configured && self.endpoint(&Overrides::default())? == asked;
            if own || self.allow_list().allows(&asked) {
                kept.endpoint = manifest.endpoint;
                kept.region = manifest.region;
            } else if configured {
                notes.push(format!(
                    "the manifest's endpoint {asked} is not on the allow-list (--allowed-endpoint): using --endpoint/--region"
                ));
            } else {
                return Err(Error::EndpointNotAllowed(asked.to_string()));
            }
        }
        for (field, flag, asked) in [
            ("projectId", &self.project_id, manifest.project_id),
            (
                "enterpriseProjectId",
                &self.enterprise_project_id,
                manifest.enterprise_project_id,
            ),
        ] {
            if let (Some(flag), Some(asked)) = (flag, asked)
                && flag != asked
            {
                notes.push(format!(
                    "the manifest's {field} {:?} is ignored: the flag (or its environment variable) wins",
                    hss_client::text::bounded(asked, 64)
                ));
            }
        }
        if self.project_id.is_none() {
            kept.project_id = manifest.project_id;
        }
        if self.enterprise_project_id.is_none() {
            kept.enterprise_project_id = manifest.enterprise_project_id;
        }
        Ok((kept, notes))
    }
}
