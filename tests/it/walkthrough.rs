//! The README's walkthrough, run as a newcomer would: every ```sh block of
//! the "Five-minute walkthrough" section in order, in one shell, in an
//! empty folder, with the binary on PATH as `ravenwatch`. The ```text block
//! right after a command block is what those commands print: each of its
//! lines must appear in the output, in order, once times, rates and run
//! ids are set aside (a line of just `…` stands for lines left out).

use std::process::Command;

/// A fenced block of the walkthrough section.
struct Block {
    lang: String,
    lines: Vec<String>,
}

/// The text of the README section under `heading`, up to the next one.
pub(crate) fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme.find(heading).expect("README has the section");
    let rest = &readme[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

fn walkthrough_blocks(readme: &str) -> Vec<Block> {
    let section = section(readme, "## Five-minute walkthrough");
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for line in section.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                current = Some(Block {
                    lang: lang.trim().to_string(),
                    lines: Vec::new(),
                })
            }
            (Some(_), Some("")) => blocks.extend(current.take()),
            (Some(block), _) => block.lines.push(line.to_string()),
            (None, None) => {}
        }
    }
    blocks
}

/// A line with what changes from run to run replaced: durations (`0.05s`),
/// rates (`160 events/s`), run ids (`20261122T201147.117Z`), and runs of
/// spaces.
fn normalise(line: &str) -> String {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let bare = token.trim_matches(|c: char| "(),".contains(c));
        let digits = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
        };
        let replaced = if bare.ends_with('s') && digits(&bare[..bare.len() - 1]) {
            "<duration>".to_string()
        } else if digits(bare) && tokens.get(i + 1).is_some_and(|n| n.starts_with("events/s")) {
            "<rate>".to_string()
        } else if let Some(pos) = token.find(|c: char| c.is_ascii_digit()) {
            let rest = &token[pos..];
            if rest.len() >= 15 && rest.as_bytes()[8] == b'T' && digits(&rest[..8]) {
                format!("{}<run id>", &token[..pos])
            } else {
                token.to_string()
            }
        } else {
            token.to_string()
        };
        out.push(replaced);
    }
    out.join(" ")
}

#[test]
fn readme_walkthrough_prints_what_the_readme_shows() {
    let readme = std::fs::read_to_string(super::repo().join("README.md")).unwrap();
    let blocks = walkthrough_blocks(&readme);
    let dir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_ravenwatch"),
        bin.path().join("ravenwatch"),
    )
    .unwrap();

    // One shell for every block (so `cd` carries over), a marker between
    // blocks, each block's exit codes checked.
    let mut script = String::new();
    let mut expected: Vec<(usize, Vec<String>)> = Vec::new();
    let mut commands = 0;
    for (i, block) in blocks.iter().enumerate() {
        match block.lang.as_str() {
            "sh" => {
                commands += 1;
                script.push_str(&format!("echo '@@block {i}'\n"));
                for line in &block.lines {
                    script.push_str(line);
                    script.push_str(&format!(
                        "\nrc=$?; [ $rc -eq 0 ] || echo \"@@failed {i} exit $rc\"\n"
                    ));
                }
            }
            "text" => {
                let previous = i.checked_sub(1).map(|p| blocks[p].lang.as_str());
                assert_eq!(previous, Some("sh"), "a text block follows a sh block");
                expected.push((i - 1, block.lines.clone()));
            }
            _ => {}
        }
    }
    assert!(commands >= 5, "the walkthrough has its commands");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("RAVENWATCH_CRASH_AT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("@@failed"),
        "a walkthrough command failed:\n{stdout}\n{stderr}"
    );
    for (block, lines) in expected {
        let printed = block_output(&stdout, block);
        let printed: Vec<String> = printed.lines().map(normalise).collect();
        let mut at = 0;
        for want in lines.iter().filter(|l| l.trim() != "…") {
            let want = normalise(want);
            match printed[at..].iter().position(|l| *l == want) {
                Some(found) => at += found + 1,
                None => panic!(
                    "README walkthrough: `{want}` is not printed by\n{}\nwhich printed:\n{}",
                    blocks[block].lines.join("\n"),
                    printed.join("\n")
                ),
            }
        }
    }
    assert!(
        dir.path().join("myproject/.ravenwatch").is_dir(),
        "the walkthrough ran in the project it created"
    );
}

/// What block `block` printed, between its marker and the next.
fn block_output(stdout: &str, block: usize) -> &str {
    let marker = format!("@@block {block}\n");
    let start = stdout.find(&marker).map(|i| i + marker.len()).unwrap_or(0);
    let rest = &stdout[start..];
    &rest[..rest.find("@@block ").unwrap_or(rest.len())]
}

/// The `yaml` blocks of a README section.
fn yaml_blocks(readme: &str, heading: &str) -> Vec<String> {
    section(readme, heading)
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(yaml, _)| yaml.to_string()))
        .collect()
}

#[test]
fn readme_log_schemas_load_in_a_new_project() {
    let readme = std::fs::read_to_string(super::repo().join("README.md")).unwrap();
    let schemas = yaml_blocks(&readme, "## Log schemas");
    assert!(schemas.len() >= 2, "CloudTrail and Okta examples");
    let project = super::Project {
        dir: tempfile::tempdir().unwrap(),
    };
    let init = project.run(&["init", "."]);
    assert_eq!(init.code, 0, "{init:?}");
    for yaml in &schemas {
        let name = yaml
            .lines()
            .find_map(|l| l.strip_prefix("name: "))
            .expect("a schema names its table");
        std::fs::write(project.path().join(format!("schemas/{name}.yml")), yaml).unwrap();
    }
    let out = project.run(&["validate"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("ok: 3 log tables"), "{out:?}");
}
