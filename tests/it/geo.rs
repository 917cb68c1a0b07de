//! GeoIP tables (`format: mmdb`) on databases the tests build themselves
//! with `scripts/build_mmdb.py` (the `mmdb-writer` package): no downloaded
//! database. `scripts/test.sh` installs the package in its venv and exports
//! `RAVENWATCH_TEST_PYTHON`; without it these tests fail when `CI` is set and
//! are skipped (with a message) otherwise.

use crate::{repo, Project};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// The interpreter that can build MMDB files, or `None` (skip).
fn builder_python() -> Option<String> {
    if let Ok(python) = std::env::var("RAVENWATCH_TEST_PYTHON") {
        return Some(python);
    }
    let works = Command::new("python3")
        .args(["-c", "import mmdb_writer"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some("python3".into());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "RAVENWATCH_TEST_PYTHON is not set: the GeoIP tests need the mmdb-writer venv that scripts/test.sh installs"
    );
    eprintln!(
        "skipped: no Python with mmdb-writer (run scripts/test.sh, or set RAVENWATCH_TEST_PYTHON)"
    );
    None
}

/// Builds `tests/data/geo_build/networks.json` into `out`.
pub fn build_test_mmdb(out: &Path) -> Option<()> {
    let python = builder_python()?;
    let status = Command::new(python)
        .arg(repo().join("scripts/build_mmdb.py"))
        .arg(repo().join("tests/data/geo_build/networks.json"))
        .arg(out)
        .status()
        .expect("run build_mmdb.py");
    assert!(status.success(), "build_mmdb.py failed");
    Some(())
}

fn get(p: &Project, key: &str) -> Value {
    let out = p.run(&["enrichment", "get", "geoip", key]);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn mmdb_lookups_from_the_cli_longest_prefix_ipv6_and_misses() {
    let p = Project::example();
    if build_test_mmdb(&p.path().join("enrichment/geoip/data.mmdb")).is_none() {
        return;
    }
    // The /27 inside the /24 wins; a /32 host route wins over both.
    assert_eq!(get(&p, "81.2.69.170")["city"], "Milton Keynes");
    assert_eq!(get(&p, "81.2.69.170")["location"]["latitude"], 52.0);
    assert_eq!(get(&p, "81.2.69.1")["city"], "London");
    assert_eq!(get(&p, "81.2.69.180")["city"], "Host route");
    assert_eq!(get(&p, "81.2.69.181")["city"], "Milton Keynes");
    assert_eq!(get(&p, "81.2.69.200")["city"], "London");
    assert_eq!(get(&p, "2a02:cf40::1")["city"], "Oslo");
    assert_eq!(get(&p, "::ffff:81.2.69.1")["city"], "London");
    let selected = p.run(&["enrichment", "get", "geoip", "81.2.69.1", "--select", "asn"]);
    assert_eq!(
        serde_json::from_str::<Value>(&selected.stdout).unwrap(),
        json!({"asn": 20712})
    );
    for miss in ["8.8.8.8", "2001:db8::1", "not-an-ip"] {
        let out = p.run(&["enrichment", "get", "geoip", miss]);
        assert_eq!(out.code, 1, "{miss}: {out:?}");
        assert!(out.stderr.contains("no row in `geoip`"), "{out:?}");
    }
    let show = p.run(&["enrichment", "show", "geoip"]);
    assert!(
        show.stdout.contains("MaxMind DB `Ravenwatch-Test-City`"),
        "{show:?}"
    );
}

#[test]
fn mmdb_table_api_from_python() {
    let p = Project::with("geo_probe");
    p.only_detections(&["geo_probe"]);
    if build_test_mmdb(&p.path().join("enrichment/geoip/data.mmdb")).is_none() {
        return;
    }
    let run = p.detect(&["geo.jsonl"], "geo");
    assert_eq!(run.output.code, 0, "{:?}", run.output);
    let alerts = crate::read_jsonl(&run.dir.join("alerts.jsonl"));
    let context = &alerts[0]["context"];
    assert_eq!(context["city"], "Milton Keynes");
    assert_eq!(
        context["country_only"],
        json!({"country": {"iso_code": "GB"}})
    );
    assert_eq!(context["all"], json!(["Milton Keynes"]));
    assert_eq!(
        context["many"],
        json!([
            "London",
            "Host route",
            null,
            null,
            "Oslo",
            "Milton Keynes",
            null
        ])
    );
    assert_eq!(context["missing"], "none");
    assert_eq!(context["contains"], json!([true, false]));
    assert_eq!(context["by_key"], 20712);
    assert_eq!(context["ipv6_tags"], json!(["ipv6", "nordics"]));
}

#[test]
fn a_corrupt_mmdb_is_a_load_error_and_the_previous_snapshot_stays() {
    let p = Project::example();
    let db = p.path().join("enrichment/geoip/data.mmdb");
    if build_test_mmdb(&db).is_none() {
        return;
    }
    assert_eq!(p.run(&["enrichment", "sync", "geoip"]).code, 0);
    // Truncate the database: its metadata marker is at the end.
    let bytes = std::fs::read(&db).unwrap();
    std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
    let sync = p.run(&["enrichment", "sync", "geoip"]);
    assert_eq!(sync.code, 1, "{sync:?}");
    assert!(
        sync.stderr.contains("enrichment/geoip/data.mmdb")
            && sync.stderr.contains("not a MaxMind DB file"),
        "{sync:?}"
    );
    // Lookups still answer from the last good snapshot.
    let out = p.run(&["enrichment", "get", "geoip", "81.2.69.1"]);
    assert!(out.stdout.contains("London"), "{out:?}");
    assert!(
        out.stderr.contains("using the previous snapshot"),
        "{out:?}"
    );
}

#[test]
fn dynamic_mmdb_tables_take_uploaded_databases_only() {
    let p = Project::example();
    let built = p.path().join("test.mmdb");
    if build_test_mmdb(&built).is_none() {
        return;
    }
    let yml = p.path().join("enrichment/geoip/enrichment.yml");
    let text = std::fs::read_to_string(&yml)
        .unwrap()
        .replace("enrichment_type: static", "enrichment_type: dynamic");
    std::fs::write(&yml, text).unwrap();
    std::fs::remove_file(p.path().join("enrichment/geoip/data.mmdb")).unwrap();

    let csv = repo().join("enrichment/known_ip_info/data.jsonl");
    let refused = p.run(&["enrichment", "upload", "geoip", &csv.display().to_string()]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("unsupported data format `.jsonl` for an MMDB table"),
        "{refused:?}"
    );
    let upload = p.run(&["enrichment", "upload", "geoip", "test.mmdb"]);
    assert_eq!(upload.code, 0, "{upload:?}");
    let sync = p.run(&["enrichment", "sync", "geoip"]);
    assert!(sync.stdout.contains("geoip: ingested 1 upload"), "{sync:?}");
    assert_eq!(get(&p, "2a02:cf40::7")["city"], "Oslo");
}

#[test]
fn mmdb_config_mistakes_are_located() {
    let p = Project::example();
    let yml = p.path().join("enrichment/geoip/enrichment.yml");
    let text = std::fs::read_to_string(&yml).unwrap();
    std::fs::write(
        &yml,
        format!("{text}write_mode: append\nschema:\n  fields: [{{name: ip, type: string}}]\n"),
    )
    .unwrap();
    let out = p.run(&["validate"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("enrichment/geoip/enrichment.yml:14:1: `format: mmdb` tables are replaced by each upload: use `write_mode: overwrite`"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("enrichment/geoip/enrichment.yml:15:1: `format: mmdb` tables take their records from the database: remove `schema`"),
        "{out:?}"
    );
    // A .mmdb next to a row table is pointed out.
    std::fs::write(&yml, text).unwrap();
    std::fs::copy(
        p.path().join("enrichment/geoip/data.mmdb"),
        p.path().join("enrichment/known_ip_info/data.mmdb"),
    )
    .unwrap();
    let out = p.run(&["validate"]);
    assert!(
        out.stdout
            .contains("enrichment/known_ip_info/data.mmdb is a MaxMind DB: set `format: mmdb`"),
        "{out:?}"
    );
}
