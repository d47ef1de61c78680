use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    hss: HssArgs,
}

/// The flags alone: every `env` fallback is switched off, so no `HSS_*` or
/// `HUAWEICLOUD_*` variable in the shell running the tests changes what they see (the
/// fallbacks themselves are tested end to end, on processes with a set environment).
fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let cmd = Cli::command().mut_args(|arg| arg.env(None));
    Cli::from_arg_matches(&cmd.try_get_matches_from(argv)?)
}

#[test]
fn debug_output_never_shows_a_secret() {
    let args = parse(&[
        "x",
        "--access-key",
        "AKVISIBLE",
        "--secret-key",
        "SK-SECRET-VALUE",
        "--security-token",
        "TOKEN-SECRET-VALUE",
        "--auth-token",
        "IAM-SECRET-VALUE",
    ])
    .expect("valid flags")
    .hss;
    let text = format!("{args:?} {:#?}", args.clone());
    for secret in ["SK-SECRET-VALUE", "TOKEN-SECRET-VALUE", "IAM-SECRET-VALUE"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(
        text.contains("AKVISIBLE"),
        "the access key id is not secret"
    );
    assert!(text.contains("<redacted>"));
}

fn args(argv: &[&str]) -> HssArgs {
    let mut all = vec!["x"];
    all.extend_from_slice(argv);
    parse(&all).expect("valid flags").hss
}

#[test]
fn plain_http_needs_the_explicit_flag_wherever_it_comes_from() {
    let sim = ["--endpoint", "http://127.0.0.1:8443", "--project-id", "p"];
    let err = args(&sim)
        .client_config(&Overrides::default())
        .expect_err("http without the flag");
    assert_eq!(err.category(), "insecure_endpoint");
    assert!(args(&sim).validate().is_err(), "refused at start-up too");
    let mut with_flag = sim.to_vec();
    with_flag.push("--allow-insecure-endpoints");
    assert!(args(&with_flag).validate().is_ok());
    assert!(
        args(&with_flag)
            .client_config(&Overrides::default())
            .is_ok()
    );
    let https = args(&["--region", "cn-north-4", "--project-id", "p"]);
    assert!(https.validate().is_ok());
    let err = https
        .client_config(&Overrides {
            endpoint: Some("http://10.0.0.1"),
            ..Default::default()
        })
        .expect_err("an http override");
    assert_eq!(err.category(), "insecure_endpoint");
    assert!(
        args(&[]).validate().is_ok(),
        "nothing configured: nothing to check"
    );
}

#[test]
fn a_ca_bundle_that_cannot_be_used_is_an_error_not_left_out() {
    let dir = std::env::temp_dir().join(format!("hss-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let missing = dir.join("missing.pem");
    for (path, why) in [(&garbage, "no certificate in it"), (&missing, "no file")] {
        let a = args(&["--ca-bundle", path.to_str().expect("utf-8 path")]);
        let err = a.http_client().expect_err(why);
        assert_eq!(err.category(), "invalid_config", "{why}");
        assert!(
            futures::executor::block_on(a.client(&Overrides::default(), a.budget(), &|_| None))
                .is_err(),
            "{why}: no client without it"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(args(&[]).http_client().is_ok(), "no bundle: system roots");
}

#[test]
fn submit_takes_the_flags_unless_the_manifest_names_an_allowed_endpoint() {
    let flags = [
        "--endpoint",
        "https://hss.internal.example",
        "--project-id",
        "p-flag",
    ];
    let manifest = |endpoint, region, project| Overrides {
        endpoint,
        region,
        project_id: project,
        enterprise_project_id: None,
    };
    // (flags, manifest, kept endpoint, kept region, kept project, notes, reason)
    type Case<'a> = (
        &'a [&'a str],
        Overrides<'a>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        usize,
        &'a str,
    );
    let cases: [Case; 6] = [
        (
            &flags,
            manifest(Some("https://attacker.example"), None, None),
            None,
            None,
            None,
            1,
            "a chosen host: the flag's endpoint, with a note",
        ),
        (
            &flags,
            manifest(None, Some("ap-southeast-1"), None),
            None,
            Some("ap-southeast-1"),
            None,
            0,
            "an official region's endpoint is allowed",
        ),
        (
            &flags,
            manifest(Some("https://hss.internal.example"), None, None),
            Some("https://hss.internal.example"),
            None,
            None,
            0,
            "the flag's own endpoint",
        ),
        (
            &flags,
            manifest(None, None, Some("p-victim")),
            None,
            None,
            None,
            1,
            "the flag's project wins",
        ),
        (
            &["--region", "cn-north-4"],
            manifest(None, None, Some("p-manifest")),
            None,
            None,
            Some("p-manifest"),
            0,
            "no project flag: the manifest's",
        ),
        (
            &[
                "--region",
                "cn-north-4",
                "--allowed-endpoint",
                "https://hss.partner.example:8443",
            ],
            manifest(Some("https://hss.partner.example:8443"), None, None),
            Some("https://hss.partner.example:8443"),
            None,
            None,
            0,
            "allowed by flag",
        ),
    ];
    for (flags, m, endpoint, region, project, notes, why) in cases {
        let (kept, said) = args(flags).manifest_overrides(&m).expect(why);
        assert_eq!(
            (kept.endpoint, kept.region, kept.project_id, said.len()),
            (endpoint, region, project, notes),
            "{why}: {said:?}"
        );
    }
    let err = args(&[])
        .manifest_overrides(&manifest(Some("https://attacker.example"), None, None))
        .expect_err("nothing to fall back on");
    assert_eq!(err.category(), "endpoint_not_allowed");
    assert!(
        err.to_string().contains("https://attacker.example"),
        "{err}"
    );
}

#[test]
fn allowed_endpoints_are_parsed_at_start_and_never_echo_userinfo() {
    let err = parse(&["x", "--allowed-endpoint", "https://AK:SK-SECRET@h.example"])
        .err()
        .expect("userinfo is refused");
    assert!(!err.to_string().contains("SK-SECRET"), "{err}");
    let a = args(&[
        "--allowed-endpoint",
        "https://a.example,https://b.example:8443",
    ]);
    assert_eq!(a.allowed_endpoints.len(), 2);
    assert!(
        a.allow_list()
            .allows(&Endpoint::parse("https://b.example:8443").expect("valid"))
    );
}
