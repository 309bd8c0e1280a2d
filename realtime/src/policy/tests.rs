//! Policy files: the examples in `policies/examples/`, channel decisions, default deny, and errors that
//! name file and line.

use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};

use super::*;

fn claims(value: Json) -> Claims {
    let all = match value {
        Json::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    Claims {
        role: all.get("role").and_then(Json::as_str).unwrap_or("").to_owned(),
        exp: all.get("exp").and_then(Json::as_i64).unwrap_or(0),
        sub: all.get("sub").and_then(Json::as_str).map(str::to_owned),
        all,
    }
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples")
}

fn examples() -> PolicySet {
    PolicySet::load(&examples_dir()).unwrap_or_else(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("example policies do not load:\n{}", list.join("\n"))
    })
}

const NONE: ChannelAccess = ChannelAccess {
    broadcast_read: false,
    broadcast_write: false,
    presence_read: false,
    presence_write: false,
};
const READ_ONLY: ChannelAccess = ChannelAccess {
    broadcast_read: true,
    presence_read: true,
    ..NONE
};

#[test]
fn every_example_file_parses() {
    let dir = examples_dir();
    let toml_files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(
        toml_files.len() >= 2,
        "expected at least two example files in {}",
        dir.display()
    );
    let set = examples();
    assert_eq!(set.files().len(), toml_files.len());
    for file in &toml_files {
        let text = std::fs::read_to_string(file).unwrap();
        let one = PolicySet::from_toml(file, &text).unwrap();
        assert!(!one.is_empty(), "{} has no rules", file.display());
    }
}

#[test]
fn example_chat_rules() {
    let set = examples();
    let ann = claims(json!({"role": "authenticated", "sub": "ann", "exp": 1}));
    let bob = claims(json!({"role": "authenticated", "sub": "bob", "exp": 1}));
    let anon = claims(json!({"role": "anon", "exp": 1}));
    assert_eq!(set.channel_access("lobby", &ann), ChannelAccess::ALL);
    assert_eq!(set.channel_access("lobby", &anon), NONE);
    assert_eq!(set.channel_access("dm:ann:bob", &bob), ChannelAccess::ALL);
    assert_eq!(set.channel_access("dm:ann:carl", &bob), NONE);
    assert_eq!(
        set.channel_access("user:ann:notifications", &ann),
        ChannelAccess {
            broadcast_read: true,
            ..NONE
        }
    );
    assert_eq!(set.channel_access("user:ann:notifications", &bob), NONE);
    assert!(!set.channel_access("user:ann:notifications", &bob).can_join());
}

#[test]
fn example_organization_rules() {
    let set = examples();
    let member = claims(json!({"role": "authenticated", "exp": 1, "app_metadata": {"org": "acme"}}));
    let admin = claims(json!({"role": "authenticated", "exp": 1,
        "app_metadata": {"org": "acme", "org_role": "admin"}}));
    assert_eq!(
        set.channel_access("org:acme:room:general", &member),
        ChannelAccess::ALL
    );
    assert_eq!(set.channel_access("org:globex:room:general", &member), NONE);
    assert_eq!(set.channel_access("org:acme:announcements", &member), READ_ONLY);
    assert!(set.channel_access("org:acme:announcements", &member).can_join());
    assert_eq!(
        set.channel_access("org:acme:announcements", &admin),
        ChannelAccess::ALL
    );
    // A claim of the wrong shape never grants.
    let odd = claims(json!({"role": "authenticated", "exp": 1, "app_metadata": "acme"}));
    assert_eq!(set.channel_access("org:acme:room:general", &odd), NONE);
}

#[test]
fn default_deny_and_service_role_bypass() {
    let user = claims(json!({"role": "authenticated", "sub": "ann", "exp": 1}));
    assert_eq!(PolicySet::empty().channel_access("lobby", &user), NONE);
    assert_eq!(examples().channel_access("unknown-topic", &user), NONE);
    let backend = claims(json!({"role": "service_role", "exp": 1}));
    assert_eq!(
        PolicySet::empty().channel_access("anything", &backend),
        ChannelAccess::ALL
    );
}

#[test]
fn rules_add_up() {
    let text = r#"
[[channel]]
topic = "game:{id}"
actions = ["broadcast.read"]
when = "true"

[[channel]]
topic = "game:*"
actions = ["presence.write"]
when = "auth.jwt() ->> 'team' = 'red'"
"#;
    let set = PolicySet::from_toml(Path::new("games.toml"), text).unwrap();
    let red = claims(json!({"role": "authenticated", "exp": 1, "team": "red"}));
    let blue = claims(json!({"role": "authenticated", "exp": 1, "team": "blue"}));
    assert_eq!(
        set.channel_access("game:7", &red),
        ChannelAccess {
            broadcast_read: true,
            presence_write: true,
            ..NONE
        }
    );
    assert_eq!(
        set.channel_access("game:7", &blue),
        ChannelAccess {
            broadcast_read: true,
            ..NONE
        }
    );
    assert_eq!(
        set.channel_access("game:7:x", &blue),
        NONE,
        "{{id}} does not span ':'"
    );
}

fn errors(text: &str) -> Vec<String> {
    match PolicySet::from_toml(Path::new("p.toml"), text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn errors_name_file_and_line() {
    let text = r#"# line 1
[[channel]]
topic = "room:{Room}"
actions = ["broadcast.read"]
when = "true"

[[channel]]
topic = "room:{id}"
actions = ["broadcast.read", "broadcast.delete"]
when = """
  auth.role() = 'authenticated'
  AND id = = 'x'
"""

[[channel]]
topic = "room:{id}"
actions = []
when = "room = 'x'"
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].starts_with("p.toml:3: topic \"room:{Room}\""),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("p.toml:9: unknown action \"broadcast.delete\""),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("p.toml:12: when: expected a value, found ="),
        "{}",
        errs[2]
    );
    assert!(errs[3].starts_with("p.toml:17: actions is empty"), "{}", errs[3]);
    assert!(
        errs[4].starts_with("p.toml:18: when: unknown name `room` (topic parameters: id)"),
        "{}",
        errs[4]
    );
}

#[test]
fn toml_and_shape_errors_have_lines() {
    let errs = errors("[[channel]]\ntopic = \"a\"\nactions = [\"broadcast\"]\nwhen = \"true\"\nextra = 1\n");
    assert!(
        errs[0].starts_with("p.toml:5:") && errs[0].contains("extra"),
        "{errs:?}"
    );
    let errs = errors("[[channel]]\ntopic = \"a\"\nwhen = \"true\"\n");
    assert!(
        errs[0].starts_with("p.toml:") && errs[0].contains("actions"),
        "{errs:?}"
    );
    let errs = errors("[[channel]]\ntopic = \"a\nactions = []\n");
    assert!(errs[0].starts_with("p.toml:2:"), "{errs:?}");
    let errs = errors(
        "[[channel]]\ntopic = \"a\"\nactions = [\"broadcast\"]\nwhen = \"auth.jwt() ->> 'level' > 2\"\n",
    );
    assert!(errs[0].starts_with("p.toml:4: when: cannot compare"), "{errs:?}");
    assert!(
        errors("[[channel]]\ntopic = \"a\"\nactions = [\"broadcast\"]\nwhen = \"room_id\"\n")[0]
            .contains("no parameters")
    );
}

/// A throwaway folder under the system temp folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("realtime-policy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn loading_a_folder_reports_every_file() {
    let dir = TempDir::new("folder");
    std::fs::write(
        dir.0.join("a.toml"),
        "[[channel]]\ntopic = \"x\"\nactions = [\"nope\"]\nwhen = \"true\"\n",
    )
    .unwrap();
    std::fs::write(dir.0.join("b.toml"), "not toml at all = = =\n").unwrap();
    std::fs::write(
        dir.0.join("c.toml"),
        "[[channel]]\ntopic = \"ok\"\nactions = [\"broadcast\"]\nwhen = \"true\"\n",
    )
    .unwrap();
    std::fs::write(dir.0.join("README.md"), "not a policy").unwrap();
    let errs = check_policies(&dir.0).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].file.ends_with("a.toml") && errs[0].line == Some(3),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].file.ends_with("b.toml") && errs[1].line == Some(1),
        "{}",
        errs[1]
    );

    std::fs::remove_file(dir.0.join("a.toml")).unwrap();
    std::fs::remove_file(dir.0.join("b.toml")).unwrap();
    let set = check_policies(&dir.0).unwrap();
    assert_eq!(set.channel_rules().len(), 1);
    let missing = check_policies(&dir.0.join("missing")).unwrap_err();
    assert_eq!(missing[0].message, "the policy folder does not exist");
    let not_a_folder = check_policies(&dir.0.join("c.toml")).unwrap_err();
    assert_eq!(not_a_folder[0].message, "the policy folder is not a folder");
}
