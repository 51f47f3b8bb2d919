//! The manual stays true to the code: the configuration table (docs/configuration.md) lists
//! exactly the variables the binaries read (their `--help` tables) and every variable of the
//! contract's table, and the README's map points at pages that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The variable names in the first column of the configuration table.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).expect("docs/configuration.md");
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or_default();
        for part in first.split('`').skip(1).step_by(2) {
            if part.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                names.insert(part.to_string());
            }
        }
    }
    names
}

#[test]
fn the_configuration_table_lists_what_help_lists_and_the_contract_names() {
    let documented = documented();
    let read: BTreeSet<String> = ingress::config::all_vars()
        .iter()
        .chain(processor::config::all_vars().iter())
        .map(|v| v.name.to_string())
        .collect();
    let undocumented: Vec<&String> = read.difference(&documented).collect();
    let unread: Vec<&String> = documented.difference(&read).collect();
    assert!(undocumented.is_empty(), "read by a binary, missing from docs/configuration.md: {undocumented:?}");
    assert!(unread.is_empty(), "in docs/configuration.md, read by neither binary: {unread:?}");
    for (name, _, _) in hookstream_tests::SPEC_VARS {
        assert!(documented.contains(*name), "SPEC §5's {name} is not in docs/configuration.md");
    }
}

#[test]
fn the_readme_is_short_and_its_map_points_at_pages_that_exist() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    assert!(readme.lines().count() <= 300, "the README is the door, not the manual: {} lines", readme.lines().count());
    let mut linked = 0;
    for part in readme.split("](").skip(1) {
        let target = part.split(')').next().unwrap_or_default();
        if target.starts_with("docs/") {
            let path = target.split('#').next().unwrap_or(target);
            assert!(root().join(path).is_file(), "README links to {target}, which does not exist");
            linked += 1;
        }
    }
    assert!(linked >= 6, "the map of the manual links its pages ({linked})");
}
