//! One suite of `Store` cases, run against every backend.
//!
//! Each case in [`cases`] is an `async fn(&dyn Store, &ManualClock)` that
//! names its own pools and keyspaces and moves time only through the
//! clock. [`backend!`] turns the whole case list into one `#[tokio::test]`
//! per case for a backend, in a module named after it, so
//! `cargo test --test conformance memory::` runs one backend and
//! `cargo test --test conformance lease` one behaviour on all of them.
//! The backends are `memory`, `sqlite`, `redis` and `redis_cluster` (a
//! fresh 3-master cluster per case: the slowest, ~1.5 s a case).
//!
//! Adding a backend is one factory in the test kit's
//! `keyward_testkit::backends` and one `backend!` line below. A factory
//! that returns `None` (its server is not installed) skips that backend's
//! tests with a note on stderr, or fails them when
//! `KEYWARD_REQUIRE_ALL_BACKENDS=1` (as CI sets it).

mod cases;

/// Every case for one backend, as `<backend>::<case>` tests.
macro_rules! backend {
    ($backend:ident, $factory:path) => {
        conformance_tests!(
            $backend,
            $factory,
            [
                put_pool_creates_then_changes_only_the_given_fields,
                pool_info_of_an_unknown_pool_is_pool_not_found,
                generate_keys_creates_a_missing_pool_with_the_defaults,
                lease_key_on_an_empty_or_unknown_pool_is_no_free_key,
                lease_key_hands_out_each_free_key_once_with_growing_lease_ids,
                concurrent_leases_and_releases_each_take_effect_once,
                release_key_frees_the_key_with_or_without_its_lease_id,
                release_key_refuses_unknown_keys_free_keys_and_other_leases,
                keepalive_key_extends_the_life_and_with_the_lease_id_the_lease,
                keepalive_key_refuses_unknown_keys_and_wrong_lease_ids,
                get_key_shows_the_key_and_refuses_unknown_keys,
                delete_key_purges_the_key_for_good,
                an_expired_lease_returns_the_key_to_the_free_set_on_the_next_touch,
                a_key_without_keepalive_is_purged_on_the_next_touch_even_when_leased,
                expire_due_ends_due_leases_and_purges_due_keys,
                a_stale_lease_id_is_refused_after_the_key_is_leased_again,
                new_pool_settings_apply_only_to_new_deadlines,
                put_keyspace_creates_accepts_the_same_spec_and_refuses_another,
                keyspace_info_of_an_unknown_keyspace_is_keyspace_not_found,
                issue_token_issues_every_token_of_a_small_space_once_then_is_exhausted,
                token_status_and_activate_token_follow_the_token_lifecycle,
                the_default_pool_and_keyspace_exist_from_the_start,
                ping_answers,
                flush_returns_once_everything_is_durable,
                a_pool_past_max_pools_is_refused_and_nothing_is_created,
                a_keyspace_past_max_keyspaces_is_refused_and_nothing_is_created,
                a_generate_past_max_keys_per_pool_is_refused_whole,
                expire_due_reaches_a_lease_taken_after_its_pool_was_reaped,
                snapshot_counts_every_pool_and_keyspace_and_names_them,
                list_pools_visits_every_lasting_name_once_while_others_come_and_go,
                list_pools_honours_the_limit_and_the_cursor,
                list_keyspaces_pages_by_name,
                a_deleted_pool_is_gone_at_once_and_comes_back_empty,
                a_deleted_keyspace_is_gone_at_once_and_comes_back_empty,
                the_default_pool_and_keyspace_cannot_be_deleted,
                deleting_frees_a_place_under_the_limits,
                // The credential pool (P2.1).
                add_keys_imports_new_keys_free_with_their_labels_and_leaves_existing_ones_as_they_are,
                add_keys_generates_labelled_keys_beside_imported_ones,
                an_import_past_max_keys_per_pool_is_refused_whole,
                rate_limited_cools_the_key_until_retry_after_or_the_pool_cooldown,
                a_failure_counts_and_max_failures_in_a_row_quarantine_the_key,
                a_key_on_probation_is_quarantined_again_for_twice_as_long_until_an_ok,
                quarantine_doubling_stops_at_24_hours,
                disable_ends_the_lease_and_keeps_the_key_out_of_use_until_enabled,
                disable_and_enable_take_cooling_and_quarantined_keys_out_and_back,
                lease_key_with_no_free_key_says_when_the_first_key_comes_free,
                the_five_counts_add_up_to_total_after_every_step,
                pool_info_reports_the_recovery_settings_put_pool_set,
                keys_of_a_no_keepalive_pool_are_never_purged,
                list_keys_lists_every_key_exactly_once_whatever_the_page_size,
                list_keys_with_a_state_lists_only_the_keys_in_that_state,
                list_keys_cursors_round_trip_and_others_are_refused,
                list_keys_leaves_out_deleted_and_purged_keys,
                list_keys_visits_every_lasting_key_once_while_others_come_and_go,
                expire_due_recovers_cooling_and_quarantined_keys,
                // Waiting leases (P2.2).
                a_waiting_lease_is_served_by_a_release,
                a_waiting_lease_is_served_when_a_cooldown_ends,
                a_waiting_lease_is_served_when_a_quarantine_ends,
                a_waiting_lease_is_served_by_an_enable,
                a_waiting_lease_is_served_by_imported_keys,
                a_waiting_lease_is_served_by_generated_keys,
                a_waiting_lease_is_served_by_an_expired_lease,
                waiters_are_served_first_come_first_served,
                a_waiter_that_timed_out_holds_no_key,
                a_dropped_waiter_holds_no_key,
                a_waiter_dropped_as_its_key_is_released_never_holds_it,
                stop_waiting_answers_waiters_shutting_down_and_refuses_new_waits,
                // Idempotency keys (P2.3).
                every_pool_change_retried_with_its_key_takes_effect_once,
                every_keyspace_change_retried_with_its_key_takes_effect_once,
                a_key_used_for_another_request_is_refused_and_changes_nothing,
                a_refused_change_is_not_recorded,
                idempotency_keys_are_scoped_to_their_pool_or_keyspace,
                a_record_expires_after_its_ttl_and_the_key_runs_anew,
                records_past_their_ttl_all_run_anew_before_they_are_popped,
                two_identical_requests_at_once_take_effect_once,
                a_waiting_lease_records_the_key_it_was_handed,
                a_dropped_waiting_lease_leaves_no_record,
                // Shop keyspaces (P2.4).
                a_keyspace_of_readable_codes_shows_and_reads_its_format,
                issue_tokens_issues_contiguous_counters_all_or_nothing,
                activation_slots_follow_fingerprints_up_to_max_activations,
                deactivate_frees_the_slot_and_a_token_with_none_left_is_issued_again,
                put_keyspace_raises_and_lowers_max_activations_keeping_the_slots_taken,
                revoke_needs_an_issued_token_and_then_refuses_activation_for_good,
                batches_count_their_tokens_issued_one_by_one_or_in_bulk,
                a_refused_issue_under_a_batch_files_nothing,
                concurrent_activations_with_distinct_fingerprints_take_exactly_max_activations,
                concurrent_activations_with_one_fingerprint_take_one_slot,
                concurrent_issues_under_two_batches_file_every_token_under_its_own,
                every_shop_change_retried_with_its_key_takes_effect_once,
                a_deleted_keyspace_comes_back_without_its_batches_and_marks,
                listings_show_max_activations_and_revoked_as_keyspace_info_does,
                concurrent_activations_and_a_revocation_agree_on_the_outcome,
            ]
        );
    };
}

/// Expands a case list into tests; use [`backend!`], which holds the list.
macro_rules! conformance_tests {
    ($backend:ident, $factory:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(harness) =
                        keyward_testkit::backends::start(stringify!($backend), $factory).await
                    else {
                        return;
                    };
                    crate::cases::$case(&*harness.store, &harness.clock).await;
                }
            )*
        }
    };
}

backend!(memory, keyward_testkit::backends::memory);
backend!(sqlite, keyward_testkit::backends::sqlite);
backend!(redis, keyward_testkit::backends::redis);
backend!(redis_cluster, keyward_testkit::backends::redis_cluster);
