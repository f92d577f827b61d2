//! The routing decision ([`Router::expand`]) over a real store: aliases, catch-all, subaddress folders,
//! postmaster@/abuse@, loops, depth, SRS addresses.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use mailroom_store::routing::one_per_maildir;
use mailroom_store::srs::DEFAULT_MAX_AGE;
use mailroom_store::{AliasDirectory, RouteError, Router, RoutingSettings, Srs, SrsError, Store};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn setup(users: &[&str], aliases: &[(&str, &[&str])], settings: RoutingSettings) -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for u in users {
        store.directory().add(u, None).unwrap();
    }
    let d = AliasDirectory::new(dir.path());
    for (a, targets) in aliases {
        d.add(a, &targets.iter().map(|t| t.to_string()).collect::<Vec<_>>()).unwrap();
    }
    drop(store);
    // Reopened: the snapshots are loaded at open (no waiting for the reload thread).
    let store = Store::open(dir.path()).unwrap();
    let served = vec!["example.test".to_string(), "other.test".to_string()];
    let router = Router::new(store, settings, Srs::new(SECRET, DEFAULT_MAX_AGE), &served);
    (dir, router)
}

fn addrs(e: &mailroom_store::Expansion) -> Vec<String> {
    e.locals
        .iter()
        .map(|m| format!("{}{}", m.address(), m.folder().map(|f| format!("/.{f}")).unwrap_or_default()))
        .collect()
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn an_alias_expands_to_users_and_external_addresses_once_each() {
    let (_d, r) = setup(
        &["alice@example.test", "bob@example.test"],
        &[
            ("sales@example.test", &["alice@example.test", "team@example.test", "carol@remote.test"]),
            ("team@example.test", &["bob@example.test", "alice@example.test", "CAROL@remote.test"]),
        ],
        RoutingSettings::default(),
    );
    let e = r.expand("Sales", "EXAMPLE.test", now()).unwrap();
    assert_eq!(addrs(&e), ["alice@example.test", "bob@example.test"]);
    assert_eq!(e.remotes, ["carol@remote.test"]);
    assert!(e.is_forwarded);
    let plain = r.expand("bob", "example.test", now()).unwrap();
    assert_eq!(addrs(&plain), ["bob@example.test"]);
    assert!(plain.remotes.is_empty() && !plain.is_forwarded);
    assert_eq!(r.expand("nobody", "example.test", now()), Err(RouteError::NoSuchUser));
}

#[test]
fn a_diamond_is_not_a_loop_but_a_cycle_is() {
    let (_d, r) = setup(
        &["alice@example.test"],
        &[
            ("a@example.test", &["b@example.test", "c@example.test"]),
            ("b@example.test", &["d@example.test"]),
            ("c@example.test", &["d@example.test"]),
            ("d@example.test", &["alice@example.test"]),
            ("x@example.test", &["y@other.test"]),
            ("y@other.test", &["alice@example.test", "x@example.test"]),
        ],
        RoutingSettings::default(),
    );
    assert_eq!(addrs(&r.expand("a", "example.test", now()).unwrap()), ["alice@example.test"]);
    match r.expand("x", "example.test", now()) {
        Err(RouteError::Loop(chain)) => assert_eq!(chain, ["x@example.test", "y@other.test", "x@example.test"]),
        other => panic!("expected a loop, got {other:?}"),
    }
}

#[test]
fn the_depth_limit_refuses_long_chains() {
    let chain: Vec<(String, Vec<String>)> =
        (0..5).map(|i| (format!("l{i}@example.test"), vec![format!("l{}@example.test", i + 1)])).collect();
    let aliases: Vec<(&str, Vec<&str>)> =
        chain.iter().map(|(a, t)| (a.as_str(), t.iter().map(String::as_str).collect())).collect();
    let aliases: Vec<(&str, &[&str])> = aliases.iter().map(|(a, t)| (*a, t.as_slice())).collect();
    let settings = RoutingSettings { max_depth: 3, ..RoutingSettings::default() };
    let (_d, r) = setup(&["l5@example.test"], &aliases, settings);
    assert!(matches!(r.expand("l0", "example.test", now()), Err(RouteError::TooDeep { depth: 3, .. })));
    assert_eq!(addrs(&r.expand("l2", "example.test", now()).unwrap()), ["l5@example.test"]);
}

#[test]
fn catch_all_takes_unknown_local_parts_only() {
    let (_d, r) = setup(
        &["alice@example.test", "bob@example.test"],
        &[("@example.test", &["alice@example.test"]), ("sales@example.test", &["bob@example.test"])],
        RoutingSettings::default(),
    );
    assert_eq!(addrs(&r.expand("anything", "example.test", now()).unwrap()), ["alice@example.test"]);
    assert_eq!(addrs(&r.expand("bob", "example.test", now()).unwrap()), ["bob@example.test"]);
    assert_eq!(addrs(&r.expand("sales", "example.test", now()).unwrap()), ["bob@example.test"]);
    assert_eq!(r.expand("anything", "other.test", now()), Err(RouteError::NoSuchUser), "only its own domain");
}

#[test]
fn a_catch_all_that_points_into_itself_is_a_loop() {
    let (_d, r) = setup(&[], &[("@example.test", &["nobody@example.test"])], RoutingSettings::default());
    assert!(matches!(r.expand("x", "example.test", now()), Err(RouteError::Loop(_))));
}

#[test]
fn postmaster_and_abuse_go_to_the_postmaster_mailbox_or_the_configured_addresses() {
    let (_d, r) = setup(&["admin@example.test"], &[], RoutingSettings::default());
    assert_eq!(addrs(&r.expand("PostMaster", "example.test", now()).unwrap()), ["postmaster@example.test"]);
    assert_eq!(addrs(&r.expand("abuse", "other.test", now()).unwrap()), ["postmaster@other.test"]);
    let settings = RoutingSettings {
        postmaster: vec!["admin@example.test".into(), "postmaster@other.test".into(), "ops@remote.test".into()],
        ..RoutingSettings::default()
    };
    let (_d, r) = setup(&["admin@example.test"], &[("abuse@example.test", &["admin@example.test"])], settings);
    let e = r.expand("postmaster", "example.test", now()).unwrap();
    assert_eq!(addrs(&e), ["admin@example.test", "postmaster@other.test"], "no loop through postmaster@");
    assert_eq!(e.remotes, ["ops@remote.test"]);
    let abuse = r.expand("abuse", "example.test", now()).unwrap();
    assert_eq!(addrs(&abuse), ["admin@example.test"], "an alias says otherwise");
    assert!(abuse.remotes.is_empty());
}

fn maildir_folder(data: &Path, mailbox: &str, folder: &str) {
    let (local, domain) = mailbox.split_once('@').unwrap();
    let dir = data.join("mailboxes").join(domain).join(local).join(format!(".{folder}"));
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
}

#[test]
fn a_subaddress_selects_an_existing_folder_only_by_its_exact_name() {
    let (d, r) = setup(
        &["alice@example.test", "bob@example.test"],
        &[("team@example.test", &["bob@example.test"])],
        RoutingSettings::default(),
    );
    maildir_folder(d.path(), "alice@example.test", "shop");
    assert_eq!(addrs(&r.expand("alice+shop", "example.test", now()).unwrap()), ["alice@example.test/.shop"]);
    assert_eq!(
        addrs(&r.expand("alice+news", "example.test", now()).unwrap()),
        ["alice@example.test"],
        "no folder: inbox"
    );
    for sneaky in ["alice+./bob", "alice+../bob", "alice+.shop", "alice+shop/", "alice+SHOP/../../bob"] {
        let e = r.expand(sneaky, "example.test", now()).unwrap();
        assert_eq!(addrs(&e), ["alice@example.test"], "{sneaky} must reach only alice's inbox");
    }
    assert_eq!(addrs(&r.expand("team+x", "example.test", now()).unwrap()), ["bob@example.test"], "alias base");
    let off = RoutingSettings { delimiter: String::new(), ..RoutingSettings::default() };
    let (_d2, r2) = setup(&["alice@example.test"], &[], off);
    assert_eq!(r2.expand("alice+shop", "example.test", now()), Err(RouteError::NoSuchUser), "delimiter off");
}

#[test]
fn one_copy_per_maildir_and_the_inbox_wins() {
    let (d, r) = setup(&["alice@example.test"], &[], RoutingSettings::default());
    maildir_folder(d.path(), "alice@example.test", "shop");
    let shop = r.expand("alice+shop", "example.test", now()).unwrap().locals;
    let inbox = r.expand("alice", "example.test", now()).unwrap().locals;
    let merged = one_per_maildir(shop.iter().chain(&inbox));
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].folder(), None);
    let only_folder = one_per_maildir(shop.iter().chain(&shop));
    assert_eq!(only_folder, shop);
}

#[test]
fn an_srs_address_of_ours_routes_back_to_the_original_sender() {
    let (_d, r) = setup(&["alice@example.test"], &[], RoutingSettings::default());
    let t = now();
    let srs = r.forward_sender("carol", "remote.test", "example.test", t);
    let (local, domain) = srs.rsplit_once('@').unwrap();
    assert_eq!(domain, "example.test");
    let e = r.expand(local, domain, t).unwrap();
    assert_eq!(e.remotes, ["carol@remote.test"]);
    assert!(e.locals.is_empty() && !e.is_forwarded, "a bounce returned is not forwarding");
    let mut bad = local.to_string();
    bad.replace_range(5..9, if &local[5..9] == "AAAA" { "BBBB" } else { "AAAA" });
    assert_eq!(r.expand(&bad, domain, t), Err(RouteError::Srs(SrsError::BadHash)));
    assert_eq!(r.expand("SRS0=zz", domain, t), Err(RouteError::Srs(SrsError::Malformed)));
    let later = t + Duration::from_secs(30 * 86_400);
    assert_eq!(r.expand(local, domain, later), Err(RouteError::Srs(SrsError::Expired)));
    // A sender of a served domain is never rewritten.
    assert_eq!(r.forward_sender("alice", "Example.Test", "other.test", t), "alice@Example.Test");
}

#[test]
fn users_unavailable_is_not_no_such_user() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    fs::remove_file(dir.path().join("users.toml")).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = Router::new(store, RoutingSettings::default(), Srs::new(SECRET, DEFAULT_MAX_AGE), &["example.test".into()]);
    assert_eq!(r.expand("alice", "example.test", now()), Err(RouteError::Unavailable));
}

#[test]
fn a_missing_member_of_a_served_domain_refuses_the_alias() {
    let (_d, r) = setup(
        &["alice@example.test"],
        &[("sales@example.test", &["alice@example.test", "typo@example.test"])],
        RoutingSettings::default(),
    );
    assert_eq!(r.expand("sales", "example.test", now()), Err(RouteError::NoSuchUser));
}
