//! The shop keyspace cases (P2.4): activation slots keyed by fingerprint
//! up to the keyspace's `max_activations`, freeing a slot, revocation for
//! good, batches and their counts, and the same rules holding when many
//! requests race on one token or one keyspace.

use keyward::core::{
    Activation, BatchInfo, Fingerprint, Issued, IssuedMany, MaxActivations, Reason, Revocation,
    TokenState, TokenStatus,
};
use keyward::store::{Applied, Change, Digest, Effect, Idem, IdemKey, KeyspaceView, Recorded};

use super::*;

fn fp(s: &str) -> Fingerprint {
    Fingerprint::parse(s).expect("a valid fingerprint")
}

fn reason(s: &str) -> Reason {
    Reason::parse(s).expect("a valid reason")
}

fn max(n: u64) -> MaxActivations {
    MaxActivations::new(n).expect("1 to 1000")
}

/// Runs `change` without an idempotency key.
async fn run(store: &dyn Store, change: Change) -> Result<Effect, StoreError> {
    match store.apply(change, None).await? {
        Applied::Done(effect) => Ok(effect),
        other => panic!("a change without a key is not recorded: {other:?}"),
    }
}

/// `PUT` of keyspace `ks` over "abcdefgh"^6 with `max_activations`.
async fn put_ks(
    store: &dyn Store,
    ks: &Name,
    spec: &KeyspaceSpec,
    max_activations: Option<MaxActivations>,
) -> Result<(KeyspaceView, Upsert), StoreError> {
    let change = Change::PutKeyspace {
        keyspace: ks.clone(),
        spec: spec.clone(),
        max_activations,
    };
    match run(store, change).await? {
        Effect::Keyspace(view, upsert) => Ok((view, upsert)),
        other => panic!("PutKeyspace answered {other:?}"),
    }
}

fn spec() -> KeyspaceSpec {
    KeyspaceSpec::new("abcdefgh", 6).unwrap()
}

/// A new keyspace of [`spec`] with `max_activations`.
async fn new_ks(store: &dyn Store, tag: &str, max_activations: Option<u64>) -> Name {
    let ks = name(tag);
    let (view, upsert) = put_ks(store, &ks, &spec(), max_activations.map(max))
        .await
        .unwrap();
    assert_eq!(upsert, Upsert::Created);
    assert_eq!(
        view.info.max_activations.get(),
        u16::try_from(max_activations.unwrap_or(1)).unwrap(),
        "a new keyspace without max_activations gets 1"
    );
    ks
}

async fn activate(
    store: &dyn Store,
    ks: &Name,
    token: &str,
    fingerprint: Option<&str>,
) -> Result<TokenStatus, StoreError> {
    let change = Change::Activate {
        keyspace: ks.clone(),
        token: token.to_owned(),
        fingerprint: fingerprint.map(fp),
    };
    match run(store, change).await? {
        Effect::Token(status) => Ok(status),
        other => panic!("Activate answered {other:?}"),
    }
}

async fn deactivate(
    store: &dyn Store,
    ks: &Name,
    token: &str,
    fingerprint: &str,
) -> Result<(), StoreError> {
    let change = Change::Deactivate {
        keyspace: ks.clone(),
        token: token.to_owned(),
        fingerprint: fp(fingerprint),
    };
    match run(store, change).await? {
        Effect::Deleted => Ok(()),
        other => panic!("Deactivate answered {other:?}"),
    }
}

async fn issue_in(store: &dyn Store, ks: &Name, batch: Option<&Name>) -> Issued {
    let change = Change::Issue {
        keyspace: ks.clone(),
        batch: batch.cloned(),
    };
    match run(store, change).await.unwrap() {
        Effect::Issued(issued) => issued,
        other => panic!("Issue answered {other:?}"),
    }
}

async fn issue_many_in(
    store: &dyn Store,
    ks: &Name,
    count: u32,
    batch: Option<&Name>,
) -> Result<IssuedMany, StoreError> {
    let change = Change::IssueMany {
        keyspace: ks.clone(),
        count,
        batch: batch.cloned(),
    };
    match run(store, change).await? {
        Effect::IssuedMany(issued) => Ok(issued),
        other => panic!("IssueMany answered {other:?}"),
    }
}

/// The fingerprints of a token's slots, oldest first.
fn fingerprints(status: &TokenStatus) -> Vec<Option<&str>> {
    status
        .marks
        .activations
        .iter()
        .map(|a| a.fingerprint.as_ref().map(Fingerprint::as_str))
        .collect()
}

fn slot(fingerprint: Option<&str>, at: Timestamp) -> Activation {
    Activation {
        fingerprint: fingerprint.map(fp),
        at,
    }
}

fn batch(name: &Name, issued: u128, activated: u128, revoked: u128) -> BatchInfo {
    BatchInfo {
        name: name.clone(),
        issued,
        activated,
        revoked,
    }
}

/// Issued, activated and revoked counts of the keyspace.
async fn ks_counts(store: &dyn Store, ks: &Name) -> (u128, u128, u128) {
    let info = store.keyspace_info(ks).await.unwrap().info;
    (info.issued, info.activated, info.revoked)
}

/// A fingerprint takes one slot however often it activates; new
/// fingerprints and activations without one take slots up to
/// `max_activations`, then are `AlreadyActivated`, while a fingerprint
/// holding a slot is still answered.
pub async fn activation_slots_follow_fingerprints_up_to_max_activations(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let ks = new_ks(store, "slots", Some(3)).await;
    let token = store.issue_token(&ks).await.unwrap().token;
    let t0 = clock.now();
    let first = activate(store, &ks, &token, Some("host-a")).await.unwrap();
    assert_eq!(first.token, token);
    assert_eq!(first.marks.activations, vec![slot(Some("host-a"), t0)]);
    assert_eq!(first.marks.state(), TokenState::Activated);
    assert_eq!(first.activated_at(), Some(t0));
    assert_eq!(first.marks.revoked, None);

    advance(clock, 10);
    let again = activate(store, &ks, &token, Some("host-a")).await.unwrap();
    assert_eq!(again, first, "the same fingerprint is the same slot");

    let t1 = clock.now();
    let second = activate(store, &ks, &token, Some("host-b")).await.unwrap();
    advance(clock, 10);
    let t2 = clock.now();
    let third = activate(store, &ks, &token, None).await.unwrap();
    assert_eq!(fingerprints(&second), [Some("host-a"), Some("host-b")]);
    assert_eq!(
        third.marks.activations,
        vec![
            slot(Some("host-a"), t0),
            slot(Some("host-b"), t1),
            slot(None, t2)
        ],
        "oldest first"
    );
    assert_eq!(third.activated_at(), Some(t0), "the first slot held");

    advance(clock, 10);
    for refused in [Some("host-c"), None] {
        assert_err!(
            activate(store, &ks, &token, refused).await,
            StoreError::Keyspace(KeyspaceError::AlreadyActivated)
        );
    }
    let held = activate(store, &ks, &token, Some("host-b")).await.unwrap();
    assert_eq!(held, third, "a fingerprint holding a slot, even when full");
    assert_eq!(store.token_status(&ks, &token).await.unwrap(), third);
    assert_eq!(
        ks_counts(store, &ks).await,
        (1, 1, 0),
        "one token activated"
    );

    // By default one slot: the Part 1 rule, and a fingerprint keeps it.
    let one = new_ks(store, "slots-one", None).await;
    let plain = store.issue_token(&one).await.unwrap().token;
    store.activate_token(&one, &plain).await.unwrap();
    assert_err!(
        store.activate_token(&one, &plain).await,
        StoreError::Keyspace(KeyspaceError::AlreadyActivated)
    );
    assert_err!(
        activate(store, &one, &plain, Some("x")).await,
        StoreError::Keyspace(KeyspaceError::AlreadyActivated)
    );
    let keyed = store.issue_token(&one).await.unwrap().token;
    let held = activate(store, &one, &keyed, Some("x")).await.unwrap();
    assert_eq!(
        activate(store, &one, &keyed, Some("x")).await.unwrap(),
        held
    );
    for refused in [Some("y"), None] {
        assert_err!(
            activate(store, &one, &keyed, refused).await,
            StoreError::Keyspace(KeyspaceError::AlreadyActivated)
        );
    }
    assert_eq!(fingerprints(&held), [Some("x")]);
    assert_eq!(ks_counts(store, &one).await, (2, 2, 0));
}

/// Deactivating frees the fingerprint's slot for another; a token left
/// with no slot is issued again. An unknown fingerprint, token or
/// keyspace changes nothing.
pub async fn deactivate_frees_the_slot_and_a_token_with_none_left_is_issued_again(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let ks = new_ks(store, "deactivate", Some(2)).await;
    let token = store.issue_token(&ks).await.unwrap().token;
    let t0 = clock.now();
    activate(store, &ks, &token, Some("a")).await.unwrap();
    advance(clock, 10);
    let t1 = clock.now();
    let status = activate(store, &ks, &token, Some("b")).await.unwrap();
    assert_eq!(
        status.marks.activations,
        vec![slot(Some("a"), t0), slot(Some("b"), t1)]
    );
    assert_err!(
        activate(store, &ks, &token, Some("c")).await,
        StoreError::Keyspace(KeyspaceError::AlreadyActivated)
    );

    deactivate(store, &ks, &token, "a").await.unwrap();
    let status = store.token_status(&ks, &token).await.unwrap();
    assert_eq!(status.marks.activations, vec![slot(Some("b"), t1)]);
    assert_eq!(status.activated_at(), Some(t1), "the first slot still held");
    assert_eq!(status.marks.state(), TokenState::Activated);
    assert_eq!(ks_counts(store, &ks).await, (1, 1, 0));

    advance(clock, 10);
    let t2 = clock.now();
    let status = activate(store, &ks, &token, Some("c")).await.unwrap();
    assert_eq!(
        status.marks.activations,
        vec![slot(Some("b"), t1), slot(Some("c"), t2)],
        "the freed slot is taken by another fingerprint"
    );
    // "a" comes back only in a free slot, as a new activation.
    assert_err!(
        activate(store, &ks, &token, Some("a")).await,
        StoreError::Keyspace(KeyspaceError::AlreadyActivated)
    );

    // Refusals change nothing.
    for missing in ["a", "B", "b "] {
        assert_err!(
            deactivate(store, &ks, &token, missing).await,
            StoreError::Keyspace(KeyspaceError::ActivationNotFound)
        );
    }
    assert_err!(
        deactivate(store, &name("deactivate-none"), &token, "b").await,
        StoreError::KeyspaceNotFound
    );
    assert_err!(
        deactivate(store, &ks, "zzzzzz", "b").await,
        StoreError::Keyspace(KeyspaceError::InvalidToken)
    );
    assert_eq!(store.token_status(&ks, &token).await.unwrap(), status);

    deactivate(store, &ks, &token, "b").await.unwrap();
    deactivate(store, &ks, &token, "c").await.unwrap();
    let status = store.token_status(&ks, &token).await.unwrap();
    assert_eq!(status.marks.state(), TokenState::Issued);
    assert_eq!(status.activated_at(), None);
    assert!(status.marks.activations.is_empty(), "{status:?}");
    assert_eq!(ks_counts(store, &ks).await, (1, 0, 0), "issued again");
    assert_err!(
        deactivate(store, &ks, &token, "c").await,
        StoreError::Keyspace(KeyspaceError::ActivationNotFound)
    );

    // A slot without a fingerprint cannot be named, so it stays.
    let other = store.issue_token(&ks).await.unwrap().token;
    activate(store, &ks, &other, None).await.unwrap();
    assert_err!(
        deactivate(store, &ks, &other, "a").await,
        StoreError::Keyspace(KeyspaceError::ActivationNotFound)
    );
    assert_eq!(ks_counts(store, &ks).await, (2, 1, 0));
}

/// A PUT with the same spec and another `max_activations` changes it and
/// answers `Existed`; none keeps it. Lowered, slots taken stay, but no new
/// one is taken until the token is below the limit.
pub async fn put_keyspace_raises_and_lowers_max_activations_keeping_the_slots_taken(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = new_ks(store, "max-act", None).await;
    let token = store.issue_token(&ks).await.unwrap().token;
    activate(store, &ks, &token, Some("a")).await.unwrap();
    assert_err!(
        activate(store, &ks, &token, Some("b")).await,
        StoreError::Keyspace(KeyspaceError::AlreadyActivated)
    );

    let (view, upsert) = put_ks(store, &ks, &spec(), Some(max(3))).await.unwrap();
    assert_eq!(
        (upsert, view.info.max_activations),
        (Upsert::Existed, max(3))
    );
    assert_eq!((view.info.issued, view.info.activated), (1, 1));
    activate(store, &ks, &token, Some("b")).await.unwrap();
    activate(store, &ks, &token, Some("c")).await.unwrap();
    let (view, upsert) = put_ks(store, &ks, &spec(), None).await.unwrap();
    assert_eq!(
        (upsert, view.info.max_activations),
        (Upsert::Existed, max(3)),
        "no max_activations keeps it"
    );
    assert_eq!(
        store.put_keyspace(&ks, spec()).await.unwrap().1,
        Upsert::Existed
    );
    assert_eq!(
        store.keyspace_info(&ks).await.unwrap().info.max_activations,
        max(3)
    );

    let (view, upsert) = put_ks(store, &ks, &spec(), Some(max(1))).await.unwrap();
    assert_eq!(
        (upsert, view.info.max_activations),
        (Upsert::Existed, max(1))
    );
    let status = store.token_status(&ks, &token).await.unwrap();
    assert_eq!(
        fingerprints(&status),
        [Some("a"), Some("b"), Some("c")],
        "slots taken are kept"
    );
    assert_err!(
        activate(store, &ks, &token, Some("d")).await,
        StoreError::Keyspace(KeyspaceError::AlreadyActivated)
    );
    assert_eq!(
        activate(store, &ks, &token, Some("a")).await.unwrap(),
        status,
        "a fingerprint holding a slot is still answered"
    );
    deactivate(store, &ks, &token, "a").await.unwrap();
    deactivate(store, &ks, &token, "b").await.unwrap();
    assert_err!(
        activate(store, &ks, &token, Some("d")).await,
        StoreError::Keyspace(KeyspaceError::AlreadyActivated)
    );
    deactivate(store, &ks, &token, "c").await.unwrap();
    let status = activate(store, &ks, &token, Some("d")).await.unwrap();
    assert_eq!(fingerprints(&status), [Some("d")]);

    // Another spec is refused whole: the limit does not change either.
    assert_err!(
        put_ks(
            store,
            &ks,
            &KeyspaceSpec::new("abcdefgh", 7).unwrap(),
            Some(max(5))
        )
        .await,
        StoreError::KeyspaceImmutable
    );
    let info = store.keyspace_info(&ks).await.unwrap().info;
    assert_eq!((info.max_activations, info.activated), (max(1), 1));

    let wide = new_ks(store, "max-act-wide", Some(1000)).await;
    let token = store.issue_token(&wide).await.unwrap().token;
    for i in 0..20 {
        activate(store, &wide, &token, Some(&format!("m{i}")))
            .await
            .unwrap();
    }
    let status = store.token_status(&wide, &token).await.unwrap();
    assert_eq!(status.marks.activations.len(), 20);
    assert_eq!(ks_counts(store, &wide).await, (1, 1, 0));
}

/// Only an issued token can be revoked; revoked, it keeps its activations
/// and first reason, is refused activation whatever the fingerprint, and
/// is counted in `revoked` (and, if it holds slots, `activated`).
pub async fn revoke_needs_an_issued_token_and_then_refuses_activation_for_good(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let ks = name("revoke");
    let small = KeyspaceSpec::new("abc", 2).unwrap();
    put_ks(store, &ks, &small, Some(max(2))).await.unwrap();
    let kept = store.issue_token(&ks).await.unwrap().token;
    let plain = store.issue_token(&ks).await.unwrap().token;
    let unissued = ["aa", "ab", "ac", "ba", "bb", "bc", "ca", "cb", "cc"]
        .into_iter()
        .find(|t| *t != kept && *t != plain)
        .unwrap();
    assert_err!(
        store.revoke_token(&ks, unissued, None).await,
        StoreError::Keyspace(KeyspaceError::NotIssued)
    );
    assert_err!(
        store.revoke_token(&ks, "zz", None).await,
        StoreError::Keyspace(KeyspaceError::InvalidToken)
    );
    assert_err!(
        store.revoke_token(&name("revoke-none"), &kept, None).await,
        StoreError::KeyspaceNotFound
    );
    assert_eq!(ks_counts(store, &ks).await, (2, 0, 0), "nothing revoked");

    let t0 = clock.now();
    activate(store, &ks, &kept, Some("a")).await.unwrap();
    advance(clock, 10);
    let t1 = clock.now();
    let revoked = store
        .revoke_token(&ks, &kept, Some(reason("refund")))
        .await
        .unwrap();
    assert_eq!(revoked.token, kept);
    assert_eq!(revoked.marks.state(), TokenState::Revoked);
    assert_eq!(
        revoked.marks.revoked,
        Some(Revocation {
            at: t1,
            reason: Some(reason("refund"))
        })
    );
    assert_eq!(revoked.marks.activations, vec![slot(Some("a"), t0)]);
    assert_eq!(revoked.activated_at(), Some(t0));
    assert_eq!(store.token_status(&ks, &kept).await.unwrap(), revoked);

    advance(clock, 10);
    let again = store
        .revoke_token(&ks, &kept, Some(reason("other")))
        .await
        .unwrap();
    assert_eq!(again, revoked, "revoking again changes nothing");
    assert_eq!(store.revoke_token(&ks, &kept, None).await.unwrap(), revoked);
    // Revoked is checked first: even the fingerprint holding a slot.
    for fingerprint in [Some("a"), Some("b"), None] {
        assert_err!(
            activate(store, &ks, &kept, fingerprint).await,
            StoreError::Keyspace(KeyspaceError::Revoked)
        );
    }
    assert_err!(
        store.activate_token(&ks, &kept).await,
        StoreError::Keyspace(KeyspaceError::Revoked)
    );
    assert_eq!(store.token_status(&ks, &kept).await.unwrap(), revoked);
    assert_eq!(ks_counts(store, &ks).await, (2, 1, 1));

    let t2 = clock.now();
    let status = store.revoke_token(&ks, &plain, None).await.unwrap();
    assert_eq!(
        status.marks.revoked,
        Some(Revocation {
            at: t2,
            reason: None
        })
    );
    assert_eq!(status.marks.state(), TokenState::Revoked);
    assert_eq!(status.activated_at(), None);
    assert!(status.marks.activations.is_empty());
    assert_err!(
        store.activate_token(&ks, &plain).await,
        StoreError::Keyspace(KeyspaceError::Revoked)
    );
    assert_eq!(ks_counts(store, &ks).await, (2, 1, 2));
}

/// Tokens issued one by one or in bulk under a batch name are counted in
/// that batch, even when batches interleave; their status names it, and
/// activations and revocations move its counts.
pub async fn batches_count_their_tokens_issued_one_by_one_or_in_bulk(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = new_ks(store, "batches", Some(2)).await;
    let spring = name("spring");
    let summer = name("summer");
    let mut issued: Vec<(String, Option<&Name>)> = Vec::new();
    issued.push((issue_in(store, &ks, None).await.token, None));
    issued.push((
        issue_in(store, &ks, Some(&spring)).await.token,
        Some(&spring),
    ));
    for token in issue_many_in(store, &ks, 5, Some(&spring))
        .await
        .unwrap()
        .tokens
    {
        issued.push((token, Some(&spring)));
    }
    for token in issue_many_in(store, &ks, 3, Some(&summer))
        .await
        .unwrap()
        .tokens
    {
        issued.push((token, Some(&summer)));
    }
    issued.push((
        issue_in(store, &ks, Some(&spring)).await.token,
        Some(&spring),
    ));
    for token in issue_many_in(store, &ks, 2, None).await.unwrap().tokens {
        issued.push((token, None));
    }
    issued.push((
        issue_in(store, &ks, Some(&summer)).await.token,
        Some(&summer),
    ));
    issued.push((store.issue_token(&ks).await.unwrap().token, None));

    assert_eq!(issued.len(), 15);
    let distinct: HashSet<&String> = issued.iter().map(|(t, _)| t).collect();
    assert_eq!(distinct.len(), 15);
    for (token, batch) in &issued {
        let status = store.token_status(&ks, token).await.unwrap();
        assert_eq!(status.batch.as_ref(), *batch, "{token}");
        assert_eq!(status.marks.state(), TokenState::Issued);
    }
    assert_eq!(
        store.batch_info(&ks, &spring).await.unwrap(),
        batch(&spring, 7, 0, 0)
    );
    assert_eq!(
        store.batch_info(&ks, &summer).await.unwrap(),
        batch(&summer, 4, 0, 0)
    );

    let of = |b: &Name| -> Vec<String> {
        issued
            .iter()
            .filter(|(_, x)| *x == Some(b))
            .map(|(t, _)| t.clone())
            .collect()
    };
    let (springs, summers) = (of(&spring), of(&summer));
    // Two slots of one token count once.
    activate(store, &ks, &springs[0], Some("a")).await.unwrap();
    activate(store, &ks, &springs[0], Some("b")).await.unwrap();
    let status = activate(store, &ks, &springs[6], None).await.unwrap();
    assert_eq!(status.batch.as_ref(), Some(&spring));
    let status = store
        .revoke_token(&ks, &springs[6], Some(reason("chargeback")))
        .await
        .unwrap();
    assert_eq!(status.batch.as_ref(), Some(&spring));
    store.revoke_token(&ks, &summers[3], None).await.unwrap();
    // Activated then freed: no longer counted.
    activate(store, &ks, &summers[1], Some("x")).await.unwrap();
    assert_eq!(
        store.batch_info(&ks, &summer).await.unwrap(),
        batch(&summer, 4, 1, 1)
    );
    deactivate(store, &ks, &summers[1], "x").await.unwrap();
    // Tokens without a batch count in the keyspace only.
    activate(store, &ks, &issued[0].0, None).await.unwrap();

    assert_eq!(
        store.batch_info(&ks, &spring).await.unwrap(),
        batch(&spring, 7, 2, 1)
    );
    assert_eq!(
        store.batch_info(&ks, &summer).await.unwrap(),
        batch(&summer, 4, 0, 1)
    );
    assert_eq!(ks_counts(store, &ks).await, (15, 3, 2));

    assert_err!(
        store.batch_info(&ks, &name("autumn")).await,
        StoreError::Keyspace(KeyspaceError::BatchNotFound)
    );
    assert_err!(
        store.batch_info(&name("batches-none"), &spring).await,
        StoreError::KeyspaceNotFound
    );
    // Batches belong to their keyspace.
    let other = new_ks(store, "batches-other", None).await;
    issue_in(store, &other, Some(&summer)).await;
    assert_err!(
        store.batch_info(&other, &spring).await,
        StoreError::Keyspace(KeyspaceError::BatchNotFound)
    );
    assert_eq!(
        store.batch_info(&other, &summer).await.unwrap(),
        batch(&summer, 1, 0, 0)
    );
    assert_eq!(
        store.batch_info(&ks, &summer).await.unwrap(),
        batch(&summer, 4, 0, 1)
    );
}

/// A bulk issue under a batch that does not fit issues nothing and files
/// no batch; an issue into an unknown keyspace neither.
pub async fn a_refused_issue_under_a_batch_files_nothing(store: &dyn Store, _clock: &ManualClock) {
    let ks = name("batch-refused");
    put_ks(store, &ks, &KeyspaceSpec::new("ab", 3).unwrap(), None)
        .await
        .unwrap();
    let big = name("big");
    issue_many_in(store, &ks, 3, Some(&big)).await.unwrap();
    assert_err!(
        issue_many_in(store, &ks, 6, Some(&name("over"))).await,
        StoreError::Keyspace(KeyspaceError::Exhausted)
    );
    assert_err!(
        issue_many_in(store, &ks, 6, Some(&big)).await,
        StoreError::Keyspace(KeyspaceError::Exhausted)
    );
    assert_err!(
        store.batch_info(&ks, &name("over")).await,
        StoreError::Keyspace(KeyspaceError::BatchNotFound)
    );
    assert_eq!(
        store.batch_info(&ks, &big).await.unwrap(),
        batch(&big, 3, 0, 0)
    );
    assert_eq!(ks_counts(store, &ks).await, (3, 0, 0));
    let rest = issue_many_in(store, &ks, 5, Some(&big)).await.unwrap();
    assert_eq!((rest.first, rest.remaining), (3, 0));
    let change = Change::Issue {
        keyspace: ks.clone(),
        batch: Some(big.clone()),
    };
    assert_err!(
        run(store, change).await,
        StoreError::Keyspace(KeyspaceError::Exhausted)
    );
    assert_eq!(
        store.batch_info(&ks, &big).await.unwrap(),
        batch(&big, 8, 0, 0)
    );
    let missing = name("batch-refused-none");
    let change = Change::Issue {
        keyspace: missing.clone(),
        batch: Some(big.clone()),
    };
    assert_err!(run(store, change).await, StoreError::KeyspaceNotFound);
    assert_err!(
        store.batch_info(&missing, &big).await,
        StoreError::KeyspaceNotFound
    );
}

/// Sixteen fingerprints activating one token of five slots at once: five
/// win, the rest are `AlreadyActivated`, and the token holds exactly the
/// winners.
pub async fn concurrent_activations_with_distinct_fingerprints_take_exactly_max_activations(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = new_ks(store, "race-slots", Some(5)).await;
    for round in 0..3 {
        let token = store.issue_token(&ks).await.unwrap().token;
        let hosts: Vec<String> = (0..16).map(|i| format!("host-{i}")).collect();
        let results = join_all(
            hosts
                .iter()
                .map(|h| activate(store, &ks, &token, Some(h)))
                .collect(),
        )
        .await;
        let mut winners = HashSet::new();
        for (host, result) in hosts.iter().zip(results) {
            match result {
                Ok(status) => {
                    assert!(fingerprints(&status).contains(&Some(host.as_str())));
                    assert!(status.marks.activations.len() <= 5, "{status:?}");
                    winners.insert(host.as_str());
                }
                Err(StoreError::Keyspace(KeyspaceError::AlreadyActivated)) => {}
                Err(e) => panic!("round {round}: {host}: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 5, "round {round}: {winners:?}");
        let status = store.token_status(&ks, &token).await.unwrap();
        let held: HashSet<&str> = fingerprints(&status).into_iter().flatten().collect();
        assert_eq!(status.marks.activations.len(), 5, "{status:?}");
        assert_eq!(held, winners, "round {round}");
    }
    assert_eq!(ks_counts(store, &ks).await, (3, 3, 0));
}

/// One fingerprint activating one token from eight requests at once takes
/// one slot: every request is answered with it.
pub async fn concurrent_activations_with_one_fingerprint_take_one_slot(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = new_ks(store, "race-same", Some(3)).await;
    for round in 0..5 {
        let token = store.issue_token(&ks).await.unwrap().token;
        let results = join_all(
            (0..8)
                .map(|_| activate(store, &ks, &token, Some("the-host")))
                .collect(),
        )
        .await;
        let statuses: Vec<TokenStatus> = results.into_iter().map(Result::unwrap).collect();
        for status in &statuses {
            assert_eq!(fingerprints(status), [Some("the-host")], "round {round}");
            assert_eq!(*status, statuses[0], "round {round}: the one slot");
        }
        assert_eq!(store.token_status(&ks, &token).await.unwrap(), statuses[0]);
    }
    assert_eq!(ks_counts(store, &ks).await, (5, 5, 0));
}

/// Eight tasks issuing at once, one by one and in bulk, under two batches
/// (and one without): every token is distinct, its status names the batch
/// its task issued it under, and each batch counts what its tasks issued.
pub async fn concurrent_issues_under_two_batches_file_every_token_under_its_own(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = new_ks(store, "race-batches", None).await;
    let (even, odd) = (name("even"), name("odd"));
    let batch_of = |task: usize| match task % 3 {
        0 => Some(&even),
        1 => Some(&odd),
        _ => None,
    };
    let task = |task: usize| {
        let batch = batch_of(task);
        let ks = &ks;
        async move {
            let mut tokens = Vec::new();
            for step in 0..4 {
                if (task + step).is_multiple_of(2) {
                    tokens.push(issue_in(store, ks, batch).await.token);
                } else {
                    let many = issue_many_in(store, ks, 5, batch).await.unwrap();
                    tokens.extend(many.tokens);
                }
            }
            tokens
        }
    };
    let results = join_all((0..9).map(task).collect()).await;
    let mut all = HashSet::new();
    let mut counts = [0u128; 3];
    for (t, tokens) in results.iter().enumerate() {
        assert_eq!(tokens.len(), 12, "two single and two bulk issues");
        counts[t % 3] += 12;
        for token in tokens {
            assert!(all.insert(token.clone()), "{token} issued twice");
            let status = store.token_status(&ks, token).await.unwrap();
            assert_eq!(status.batch.as_ref(), batch_of(t), "task {t}: {token}");
        }
    }
    assert_eq!(all.len(), 9 * 12);
    assert_eq!(
        store.batch_info(&ks, &even).await.unwrap(),
        batch(&even, counts[0], 0, 0)
    );
    assert_eq!(
        store.batch_info(&ks, &odd).await.unwrap(),
        batch(&odd, counts[1], 0, 0)
    );
    assert_eq!(ks_counts(store, &ks).await, (9 * 12, 0, 0));
}

fn render(effect: &Effect) -> Recorded {
    Recorded {
        status: 200,
        body: format!("{effect:?}").into(),
    }
}

fn idem(key: &str, request: &str) -> Idem {
    Idem {
        key: IdemKey::parse(key.as_bytes()).expect("a valid key"),
        digest: Digest::of("POST", request, b""),
        ttl: ttl(60_000),
        render,
    }
}

/// Runs `change` with the key `key` twice: the second is the first
/// answer, replayed. Returns it.
async fn twice(store: &dyn Store, change: Change, key: &str) -> String {
    let idem = idem(key, &format!("{change:?}"));
    let mut answers = Vec::new();
    for _ in 0..2 {
        match store.apply(change.clone(), Some(&idem)).await.unwrap() {
            Applied::Recorded { recorded, replayed } => answers.push((
                String::from_utf8(recorded.body.to_vec()).expect("Debug text"),
                replayed,
            )),
            Applied::Done(effect) => answers.push((format!("{effect:?}"), false)),
        }
    }
    assert!(!answers[0].1, "the first {change:?} runs");
    assert!(answers[1].1, "the retry of {change:?} is replayed");
    assert_eq!(answers[0].0, answers[1].0);
    answers.swap_remove(0).0
}

/// Activate with and without a fingerprint, deactivate, revoke and issue
/// under a batch, each retried with its idempotency key, take effect once.
pub async fn every_shop_change_retried_with_its_key_takes_effect_once(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let ks = new_ks(store, "idem-shop", Some(3)).await;
    let spring = name("spring");
    let change = Change::Issue {
        keyspace: ks.clone(),
        batch: Some(spring.clone()),
    };
    twice(store, change, "issue").await;
    let change = Change::IssueMany {
        keyspace: ks.clone(),
        count: 4,
        batch: Some(spring.clone()),
    };
    twice(store, change, "many").await;
    assert_eq!(
        store.batch_info(&ks, &spring).await.unwrap(),
        batch(&spring, 5, 0, 0)
    );
    let token = store.issue_token(&ks).await.unwrap().token;

    let plain = Change::Activate {
        keyspace: ks.clone(),
        token: token.clone(),
        fingerprint: None,
    };
    twice(store, plain, "plain").await;
    advance(clock, 10);
    let keyed = Change::Activate {
        keyspace: ks.clone(),
        token: token.clone(),
        fingerprint: Some(fp("host a/b")),
    };
    let answer = twice(store, keyed, "keyed").await;
    assert!(answer.contains("host a/b"), "{answer}");
    let status = store.token_status(&ks, &token).await.unwrap();
    assert_eq!(fingerprints(&status), [None, Some("host a/b")]);

    let free = Change::Deactivate {
        keyspace: ks.clone(),
        token: token.clone(),
        fingerprint: fp("host a/b"),
    };
    // The retry is the first answer, not `ActivationNotFound`.
    twice(store, free, "free").await;
    let status = store.token_status(&ks, &token).await.unwrap();
    assert_eq!(fingerprints(&status), [None]);

    advance(clock, 10);
    let at = clock.now();
    let revoke = Change::Revoke {
        keyspace: ks.clone(),
        token: token.clone(),
        reason: Some(reason("refund")),
    };
    twice(store, revoke, "revoke").await;
    let status = store.token_status(&ks, &token).await.unwrap();
    assert_eq!(
        status.marks.revoked,
        Some(Revocation {
            at,
            reason: Some(reason("refund"))
        })
    );
    let change = Change::PutKeyspace {
        keyspace: ks.clone(),
        spec: spec(),
        max_activations: Some(max(7)),
    };
    twice(store, change, "put").await;
    let info = store.keyspace_info(&ks).await.unwrap().info;
    assert_eq!(
        (
            info.issued,
            info.activated,
            info.revoked,
            info.max_activations
        ),
        (6, 1, 1, max(7))
    );
}

/// A keyspace deleted and made again under its name starts over: no
/// batch, no activation and no revocation of the old one shows through,
/// even on tokens written the same.
pub async fn a_deleted_keyspace_comes_back_without_its_batches_and_marks(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = name("shop-drop");
    let small = KeyspaceSpec::new("abc", 2).unwrap();
    let spring = name("spring");
    put_ks(store, &ks, &small, Some(max(3))).await.unwrap();
    let old = issue_many_in(store, &ks, 9, Some(&spring))
        .await
        .unwrap()
        .tokens;
    for token in &old[..5] {
        activate(store, &ks, token, Some("host")).await.unwrap();
    }
    for token in &old[3..7] {
        store.revoke_token(&ks, token, None).await.unwrap();
    }
    assert_eq!(
        store.batch_info(&ks, &spring).await.unwrap(),
        batch(&spring, 9, 5, 4)
    );
    store.delete_keyspace(&ks).await.unwrap();

    let (view, upsert) = put_ks(store, &ks, &small, None).await.unwrap();
    assert_eq!(upsert, Upsert::Created);
    assert_eq!(view.info.max_activations, MaxActivations::DEFAULT);
    assert_eq!(
        (view.info.issued, view.info.activated, view.info.revoked),
        (0, 0, 0)
    );
    assert_err!(
        store.batch_info(&ks, &spring).await,
        StoreError::Keyspace(KeyspaceError::BatchNotFound)
    );
    let new = issue_many_in(store, &ks, 9, None).await.unwrap().tokens;
    for token in &new {
        let status = store.token_status(&ks, token).await.unwrap();
        assert_eq!(status, TokenStatus::issued(token.clone(), None), "{token}");
    }
    assert_eq!(ks_counts(store, &ks).await, (9, 0, 0));
}

/// The listing and the snapshot show a keyspace's `max_activations` and
/// counts as `keyspace_info` does.
pub async fn listings_show_max_activations_and_revoked_as_keyspace_info_does(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = new_ks(store, "shop-list", Some(4)).await;
    let tokens = issue_many_in(store, &ks, 3, None).await.unwrap().tokens;
    activate(store, &ks, &tokens[0], Some("a")).await.unwrap();
    activate(store, &ks, &tokens[0], Some("b")).await.unwrap();
    store.revoke_token(&ks, &tokens[1], None).await.unwrap();
    let info = store.keyspace_info(&ks).await.unwrap();
    assert_eq!(info.info.max_activations, max(4));
    assert_eq!(
        (info.info.issued, info.info.activated, info.info.revoked),
        (3, 1, 1)
    );

    let snapshot = store.snapshot().await.unwrap();
    let shown = snapshot.keyspaces.iter().find(|k| k.name == ks);
    assert_eq!(shown, Some(&info), "in the snapshot");
    let mut listed = None;
    let mut after = None;
    for _ in 0..100 {
        let page = store
            .list_keyspaces(&PageRequest {
                after: after.clone(),
                limit: PageLimit::new(100).unwrap(),
            })
            .await
            .unwrap();
        listed = listed.or_else(|| page.items.into_iter().find(|k| k.name == ks));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(listed, Some(info), "in the listing");
}

/// Activations racing a revocation: those that win are listed on the
/// revoked token, which ends as the revocation answered it; the others
/// are `Revoked` or `AlreadyActivated`; the counts agree.
pub async fn concurrent_activations_and_a_revocation_agree_on_the_outcome(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    type Call<'a> = Pin<Box<dyn Future<Output = Result<TokenStatus, StoreError>> + 'a>>;
    let ks = new_ks(store, "race-revoke", Some(3)).await;
    let mut activated = 0;
    for round in 0..6 {
        let token = store.issue_token(&ks).await.unwrap().token;
        let hosts: Vec<String> = (0..6).map(|i| format!("host-{i}")).collect();
        let mut calls: Vec<Call<'_>> = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            if i == round {
                calls.push(Box::pin(store.revoke_token(&ks, &token, None)));
            }
            calls.push(Box::pin(activate(store, &ks, &token, Some(host))));
        }
        let mut results = join_all(calls).await;
        let revoked = results.remove(round).unwrap();
        assert_eq!(revoked.marks.state(), TokenState::Revoked);
        let mut won = HashSet::new();
        for (host, result) in hosts.iter().zip(results) {
            match result {
                Ok(status) => {
                    assert!(fingerprints(&status).contains(&Some(host.as_str())));
                    won.insert(host.as_str());
                }
                Err(StoreError::Keyspace(
                    KeyspaceError::Revoked | KeyspaceError::AlreadyActivated,
                )) => {}
                Err(e) => panic!("round {round}: {host}: {e:?}"),
            }
        }
        assert!(won.len() <= 3, "round {round}: {won:?}");
        let status = store.token_status(&ks, &token).await.unwrap();
        assert_eq!(
            status, revoked,
            "round {round}: nothing after the revocation"
        );
        let held: HashSet<&str> = fingerprints(&status).into_iter().flatten().collect();
        assert_eq!(held, won, "round {round}");
        activated += u128::from(!won.is_empty());
    }
    assert_eq!(ks_counts(store, &ks).await, (6, activated, 6));
}
