//! Fault plans: what the simulator does wrong, how often, and for how long.
//!
//! A [`FaultPlan`] is armed for one [`Api`]. On every authenticated, unthrottled call of that API
//! the plans are tried in the order they were armed; each draws against its probability from
//! the simulator's seeded RNG and the first that hits applies (at most one fault per call). A
//! plan with `remaining: Some(n)` applies to the next `n` calls it hits and then disappears.
//!
//! Text form (CLI `--fault`, control plane `{"spec": ...}`): `API=KIND[:ARG][@PROB][xCOUNT]`,
//! e.g. `CreateTask=commit-then-drop@0.2`, `ListTasks=latency:3s@1x2`, `RetryTask=server-error`.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use hss_client::Api;

/// What goes wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer normally, but only after this delay. The call's effect (a created task, a retry)
    /// is committed before the delay.
    Latency(Duration),
    /// HTTP 500 with an HSS-style body; nothing is executed.
    ServerError,
    /// The call is executed (CreateTask commits its task), then HTTP 500.
    CommitThenServerError,
    /// HTTP 429 APIGW.0308 as if throttled; nothing is executed.
    Throttle,
    /// The call is executed, then HTTP 200 with a body that is not valid JSON.
    Malformed,
    /// CreateTask: the task is committed, then the connection is closed without any response.
    /// Other APIs: the connection is closed without executing anything.
    CommitThenDrop,
}

impl FaultKind {
    /// The kebab-case name used in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Latency(_) => "latency",
            Self::ServerError => "server-error",
            Self::CommitThenServerError => "commit-then-server-error",
            Self::Throttle => "throttle",
            Self::Malformed => "malformed",
            Self::CommitThenDrop => "commit-then-drop",
        }
    }

    fn parse(kind: &str, arg: Option<&str>) -> Result<Self, String> {
        let kind = kind.trim().to_ascii_lowercase().replace('_', "-");
        let no_arg = |k: FaultKind| match arg {
            Some(a) => Err(format!("fault kind {kind} takes no argument, got {a:?}")),
            None => Ok(k),
        };
        match kind.as_str() {
            "latency" | "delay" => {
                let arg = arg.ok_or("fault kind latency needs a duration, e.g. latency:3s")?;
                humantime::parse_duration(arg.trim())
                    .map(Self::Latency)
                    .map_err(|e| format!("latency duration {arg:?}: {e}"))
            }
            "server-error" | "500" => no_arg(Self::ServerError),
            "commit-then-server-error" => no_arg(Self::CommitThenServerError),
            "throttle" | "429" => no_arg(Self::Throttle),
            "malformed" => no_arg(Self::Malformed),
            "commit-then-drop" | "drop" => no_arg(Self::CommitThenDrop),
            other => Err(format!(
                "unknown fault kind {other:?} (expected latency:DURATION, server-error, \
                 commit-then-server-error, throttle, malformed or commit-then-drop)"
            )),
        }
    }
}

/// One armed fault for one API.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    pub kind: FaultKind,
    /// Chance, from 0 to 1, that a call is hit.
    pub probability: f64,
    /// Apply to the next N calls that are hit, then stop; `None` = forever.
    pub remaining: Option<u64>,
}

impl FaultPlan {
    /// A plan that hits every call, forever.
    pub fn always(kind: FaultKind) -> Self {
        Self {
            kind,
            probability: 1.0,
            remaining: None,
        }
    }

    /// A plan that hits the next `n` calls.
    pub fn times(kind: FaultKind, n: u64) -> Self {
        Self {
            kind,
            probability: 1.0,
            remaining: Some(n),
        }
    }

    fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(format!(
                "probability must be from 0 to 1, got {}",
                self.probability
            ));
        }
        Ok(())
    }
}

/// A plan together with the API it is armed for: one `--fault` flag.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub api: Api,
    pub plan: FaultPlan,
}

/// Parses an API name: the variant name (`ListClusters`) or the name HSS documents
/// (`ListKubernetesClusterDetails`), case-insensitively.
pub fn parse_api(name: &str) -> Result<Api, String> {
    let name = name.trim();
    Api::ALL
        .into_iter()
        .find(|api| {
            api.as_str().eq_ignore_ascii_case(name) || format!("{api:?}").eq_ignore_ascii_case(name)
        })
        .ok_or_else(|| {
            let known: Vec<String> = Api::ALL.iter().map(|a| format!("{a:?}")).collect();
            format!(
                "unknown API {name:?} (expected one of {})",
                known.join(", ")
            )
        })
}

/// Parses `API=KIND[:ARG][@PROB][xCOUNT]`.
impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let (api, rest) = spec
            .split_once('=')
            .ok_or_else(|| format!("fault {spec:?} is not API=KIND[:ARG][@PROB][xCOUNT]"))?;
        let api = parse_api(api)?;
        let (kind_part, odds) = match rest.rsplit_once('@') {
            Some((k, o)) => (k, Some(o)),
            None => (rest, None),
        };
        // A count only ever follows `@PROB` (`server-error@1x3`), so an `x` inside the kind's
        // argument is never mistaken for one.
        let (probability, remaining) = match odds {
            None => (1.0, None),
            Some(odds) => {
                let (p, n) = match odds.split_once(['x', 'X']) {
                    Some((p, n)) => (p, Some(n)),
                    None => (odds, None),
                };
                let p: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("probability {p:?} is not a number"))?;
                let n = n
                    .map(|n| {
                        n.trim()
                            .parse::<u64>()
                            .map_err(|_| format!("count {n:?} is not a whole number"))
                    })
                    .transpose()?;
                (p, n)
            }
        };
        let (kind, arg) = match kind_part.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (kind_part, None),
        };
        let plan = FaultPlan {
            kind: FaultKind::parse(kind, arg)?,
            probability,
            remaining,
        };
        plan.check()?;
        Ok(FaultSpec { api, plan })
    }
}

/// JSON form of a plan on the control plane. Either `spec` (the text form) or the fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Delay for `latency`, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
}

impl FaultWire {
    pub fn from_spec(spec: &FaultSpec) -> Self {
        let latency_ms = match spec.plan.kind {
            FaultKind::Latency(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            _ => None,
        };
        Self {
            spec: None,
            api: Some(format!("{:?}", spec.api)),
            kind: Some(spec.plan.kind.name().to_string()),
            latency_ms,
            probability: Some(spec.plan.probability),
            remaining: spec.plan.remaining,
        }
    }

    pub fn into_spec(self) -> Result<FaultSpec, String> {
        if let Some(spec) = self.spec {
            return spec.parse();
        }
        let api = parse_api(self.api.as_deref().ok_or("api is required")?)?;
        let kind = self.kind.ok_or("kind is required")?;
        let arg = self.latency_ms.map(|ms| format!("{ms}ms"));
        let plan = FaultPlan {
            kind: FaultKind::parse(&kind, arg.as_deref())?,
            probability: self.probability.unwrap_or(1.0),
            remaining: self.remaining,
        };
        plan.check()?;
        Ok(FaultSpec { api, plan })
    }
}

/// The armed plans and the RNG they draw from.
pub(crate) struct FaultBook {
    plans: HashMap<Api, Vec<FaultPlan>>,
    rng: StdRng,
}

impl FaultBook {
    pub(crate) fn new(seed: u64, specs: &[FaultSpec]) -> Self {
        let mut book = Self {
            plans: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        };
        for spec in specs {
            book.add(spec.api, spec.plan.clone());
        }
        book
    }

    pub(crate) fn add(&mut self, api: Api, plan: FaultPlan) {
        self.plans.entry(api).or_default().push(plan);
    }

    pub(crate) fn set(&mut self, api: Api, plan: FaultPlan) {
        self.plans.insert(api, vec![plan]);
    }

    pub(crate) fn clear(&mut self, api: Option<Api>) {
        match api {
            Some(api) => {
                self.plans.remove(&api);
            }
            None => self.plans.clear(),
        }
    }

    pub(crate) fn list(&self) -> Vec<FaultSpec> {
        let mut out: Vec<FaultSpec> = Api::ALL
            .iter()
            .flat_map(|api| {
                self.plans
                    .get(api)
                    .into_iter()
                    .flatten()
                    .map(|plan| FaultSpec {
                        api: *api,
                        plan: plan.clone(),
                    })
            })
            .collect();
        out.sort_by_key(|s| s.api);
        out
    }

    /// The fault for this call, if any; used-up plans are removed.
    pub(crate) fn draw(&mut self, api: Api) -> Option<FaultKind> {
        let plans = self.plans.get_mut(&api)?;
        let mut hit = None;
        for plan in plans.iter_mut() {
            if plan.remaining == Some(0) || plan.probability <= 0.0 {
                continue;
            }
            // Certain plans draw nothing, so adding one does not shift the random sequence of
            // the probabilistic ones.
            let fires = plan.probability >= 1.0 || self.rng.random::<f64>() < plan.probability;
            if fires {
                if let Some(n) = plan.remaining.as_mut() {
                    *n -= 1;
                }
                hit = Some(plan.kind.clone());
                break;
            }
        }
        plans.retain(|p| p.remaining != Some(0));
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_table() {
        // (text, expected, reason)
        let ms = Duration::from_millis;
        let cases: Vec<(&str, Option<FaultSpec>, &str)> = vec![
            (
                "CreateTask=commit-then-drop@0.2",
                Some(FaultSpec {
                    api: Api::CreateTask,
                    plan: FaultPlan {
                        kind: FaultKind::CommitThenDrop,
                        probability: 0.2,
                        remaining: None,
                    },
                }),
                "probability without count",
            ),
            (
                "ListTasks=latency:3s@1x2",
                Some(FaultSpec {
                    api: Api::ListTasks,
                    plan: FaultPlan::times(FaultKind::Latency(ms(3000)), 2),
                }),
                "latency with a humantime argument and a count",
            ),
            (
                "RetryTask=server-error",
                Some(FaultSpec {
                    api: Api::RetryTask,
                    plan: FaultPlan::always(FaultKind::ServerError),
                }),
                "no @ means always",
            ),
            (
                "listkubernetesclusterdetails=throttle@0.5x1",
                Some(FaultSpec {
                    api: Api::ListClusters,
                    plan: FaultPlan {
                        kind: FaultKind::Throttle,
                        probability: 0.5,
                        remaining: Some(1),
                    },
                }),
                "HSS API names are accepted, case-insensitively",
            ),
            (
                "ShowTaskStatistics=latency:1500ms",
                Some(FaultSpec {
                    api: Api::ShowTaskStatistics,
                    plan: FaultPlan::always(FaultKind::Latency(ms(1500))),
                }),
                "milliseconds",
            ),
            (
                "CreateTask=malformed@1",
                Some(FaultSpec {
                    api: Api::CreateTask,
                    plan: FaultPlan::always(FaultKind::Malformed),
                }),
                "malformed",
            ),
            (
                "CreateTask=commit_then_server_error",
                Some(FaultSpec {
                    api: Api::CreateTask,
                    plan: FaultPlan::always(FaultKind::CommitThenServerError),
                }),
                "underscores are accepted",
            ),
            ("CreateTask", None, "no kind"),
            ("NoSuchApi=throttle", None, "unknown API"),
            ("CreateTask=explode", None, "unknown kind"),
            ("CreateTask=latency", None, "latency needs a duration"),
            ("CreateTask=latency:soon", None, "bad duration"),
            ("CreateTask=throttle:3", None, "throttle takes no argument"),
            ("CreateTask=throttle@1.5", None, "probability above 1"),
            (
                "CreateTask=throttle@often",
                None,
                "probability not a number",
            ),
            ("CreateTask=throttle@1x-1", None, "negative count"),
        ];
        for (text, want, reason) in cases {
            let got = text.parse::<FaultSpec>();
            match want {
                Some(want) => assert_eq!(got, Ok(want), "{reason}: {text}"),
                None => assert!(got.is_err(), "{reason}: {text} parsed as {got:?}"),
            }
        }
    }

    #[test]
    fn wire_form_round_trips_through_the_spec() {
        let spec: FaultSpec = "ListTasks=latency:250ms@0.5x3".parse().expect("parses");
        let wire = FaultWire::from_spec(&spec);
        assert_eq!(wire.kind.as_deref(), Some("latency"));
        assert_eq!(wire.latency_ms, Some(250));
        assert_eq!(wire.into_spec(), Ok(spec));
        let text = FaultWire {
            spec: Some("CreateTask=throttle".into()),
            ..FaultWire::default()
        };
        assert_eq!(text.into_spec().map(|s| s.api), Ok(Api::CreateTask));
    }

    #[test]
    fn counted_plans_stop_after_their_count_and_the_next_plan_takes_over() {
        let mut book = FaultBook::new(
            0,
            &[
                "CreateTask=throttle@1x2".parse().expect("spec"),
                "CreateTask=server-error".parse().expect("spec"),
            ],
        );
        let drawn: Vec<_> = (0..4).map(|_| book.draw(Api::CreateTask)).collect();
        assert_eq!(
            drawn,
            vec![
                Some(FaultKind::Throttle),
                Some(FaultKind::Throttle),
                Some(FaultKind::ServerError),
                Some(FaultKind::ServerError),
            ]
        );
        assert_eq!(book.draw(Api::ListTasks), None, "other APIs are untouched");
    }

    #[test]
    fn probabilistic_plans_are_deterministic_under_a_seed() {
        let spec: FaultSpec = "ListTasks=server-error@0.3".parse().expect("spec");
        let run = |seed| {
            let mut book = FaultBook::new(seed, std::slice::from_ref(&spec));
            (0..200)
                .map(|_| book.draw(Api::ListTasks).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let hits = run(7).into_iter().filter(|h| *h).count();
        assert!((30..=90).contains(&hits), "about 30% of 200, got {hits}");
    }
}
