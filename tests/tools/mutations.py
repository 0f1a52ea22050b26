"""Mutations that prove the tests of issue 18: each breaks one promised feature on purpose, and the
tests it names must then fail. Read by tests/tools/prove_tests.py (see docs/testing.md).

A mutation is a dict:
  id     short name, unique
  items  the issue-18 items it proves (keys of ITEMS)
  edits  [(file, anchor, replacement)]: `file` is a path or a glob relative to the repository
         (tools/**/*.cc survives a split of rbdvault.cc); `anchor` must occur exactly once in all
         files the glob matches together, or the mutation is STALE and must be updated
  tests  what must fail with the mutation applied:
           gtest:FILTER     build/tests/unit_tests --gtest_filter=FILTER (no cluster)
           rbd:FILTER       build/tests/rbd_integration_tests --gtest_filter=FILTER (cluster)
           cli:SCENARIO     tests/integration/cli_test.py SCENARIO (cluster)
           batch:SCENARIO   tests/integration/batch_test.py SCENARIO (cluster)
           instant:SCENARIO tests/integration/instant_test.py SCENARIO (cluster)
           serve:SCENARIO   tests/integration/serve_test.py SCENARIO (cluster, chromium)
  env    optional extra environment for the tests (e.g. fewer kills to save time)

Anchors are kept short but unique; prefer stable files (agent/, rbd/, store/revision_writer.cc).
"""

# The items of issue 18 ("Weak assertions" and "Promises with no test today", and the checker).
ITEMS = {
    "W1": "bad_input: a second writer that succeeds only logged a line",
    "W2": "exit codes: failure checks accepted any non-zero exit",
    "W3": "verify --sample 50 checked only exit 0; '1 mismatch' also matched '11 mismatch'",
    "W4": "the crash scenario checked no scrub after the kills, only .tmp files",
    "W5": "batch: the concurrency limit was judged from the tool's own timestamps",
    "W6": "batch: a missing image passed the status check",
    "W7": "batch: the retry test checked no content",
    "W8": "unit: a killed child's exit status was never checked",
    "W9": "unit: DeletedPackFile never checked the store is reported damaged",
    "W10": "unit: a same-process reader proved nothing about locks",
    "W11": "unit: jitter_offset(x) == jitter_offset(x)",
    "W12": "unit: WEXITSTATUS without WIFEXITED (host slots)",
    "W13": "unit: rollback without a refcount/scrub check",
    "W14": "unit tests re-implemented the backup's resize-edge logic instead of testing it",
    "W15": "time-dependent asserts (peak_in_flight == 4 exactly)",
    "P1": "restore --to-file onto an existing file is refused",
    "P2": "a restore hitting a damaged chunk fails and removes what it created",
    "P3": "a backup failing mid-read leaves the store as it was",
    "P4": "lock matrix: writers refused during a backup, readers refused during gc",
    "P5": "the revision equals the snapshot, not the live image",
    "P6": "a non-default --block-size (4 MiB) with unaligned sizes, end to end",
    "P7": "every scrub damage kind of docs/format.md section 11 is reported",
    "P8": "the operation log shows `unfinished` after a kill",
    "P9": "double SIGINT exits at once",
    "P10": "repair without a cluster reports what it could not repair",
    "P11": "a rolled-back revision id is never reused",
    "C1": "the independent checker catches store damage that scrub misses (crash tests run it)",
    "I15a": "issue 15: a partly changed block is completed from the parent revision's chunk",
    "I15b": "issue 15: a damaged parent chunk makes the backup read the block whole, not fail",
    "I15c": "issue 15: incompressible blocks skip zstd, mixed blocks are still compressed",
    "I15d": "issue 15: a partly changed block is stored as a patch chunk (its pages, not 64 KiB)",
    "I15e": "issue 15: a patch's content is verified against its hash once applied to its base",
    "I15f": "issue 15: gc releases a dead patch with its base reference in one write",
    "I13c": "issue 13.3: a copied revision restores byte for byte as its source; only missing chunks are read",
    "I14f": "issue 14.3: an instant restore serves the restored revision's bytes and commits the migration",
    "I14g": "issue 14.3: a failed or stopped instant restore aborts the migration (no target left)",
    "I14h": "issue 14.3: off loopback the instant source is readable only with its per-run secret",
    "I14a": "issue 14: serve answers a Range with exactly those bytes of the revision (206)",
    "I14b": "issue 14: serve checks the bearer token and refuses a token file others can read",
    "I14c": "issue 14: serve never sends bytes of a chunk that failed its check",
    "I14d": "issue 14: the status page shows each image's revision count (checked in Chromium)",
    "I14e": "issue 14: a revision committed while serving appears without a restart",
}

# Items no mutation can prove, with the reason (docs/testing.md repeats it).
NOT_MUTABLE = {}

LOCK = "store/lock.cc"
STORE = "store/store.cc"
RECOVERY = "store/recovery.cc"
SCRUB = "store/*.cc"  # scrub.cc and chunk_check.cc (the per-chunk checks)
WRITER = "store/revision_writer.cc"
TOOLS = "tools/**/*.cc"
BACKUP = "agent/backup.cc"
BATCH = "agent/batch_run.cc"
RESTORE = "agent/restore.cc"
FEW_KILLS = {"RBDVAULT_KILLS": "6"}  # one planned kill per backup step of cli_test.py's crash scenario


def scrub_silenced(mid, item, anchor, replacement, test):
    return {"id": mid, "items": ["P7"] + item, "edits": [(SCRUB, anchor, replacement)], "tests": ["gtest:" + test]}


MUTATIONS = [
    # ---- locks -------------------------------------------------------------------------------
    {"id": "writer-lock-noop", "items": ["W1", "P4"],
     "edits": [(LOCK, "    taken = take(fd_, F_WRLCK, path);", "    taken = true;")],
     "tests": ["gtest:StoreTest.SecondWriterIsRefusedWithHolderPid", "cli:bad_input", "cli:promises_lock_matrix"]},
    {"id": "writer-lock-shared", "items": ["W1"],
     "edits": [(LOCK, "    taken = take(fd_, F_WRLCK, path);", "    taken = take(fd_, F_RDLCK, path);")],
     "tests": ["gtest:StoreTest.SecondWriterIsRefusedWithHolderPid", "cli:bad_input"]},
    {"id": "gc-lock-shared", "items": ["W10", "P4"],
     "edits": [(LOCK, "const short type = exclusive ? F_WRLCK : F_RDLCK;", "const short type = F_RDLCK;")],
     "tests": ["gtest:HistoryTest.GcRefusesWhileSomeoneReads", "cli:promises_lock_matrix"]},

    # ---- exit codes ----------------------------------------------------------------------------
    {"id": "failure-exits-0", "items": ["W2"],
     "edits": [(TOOLS, "  return agent::exit_code(cls);\n}", "  return 0;\n}")],
     "tests": ["cli:bad_input"]},
    {"id": "usage-error-exits-1", "items": ["W2"],
     "edits": [("agent/error_class.cc", "  } catch (const UsageError&) {\n    return ErrorClass::kUsage;",
                "  } catch (const UsageError&) {\n    return ErrorClass::kFailed;")],
     "tests": ["cli:bad_input"]},
    {"id": "run-with-failure-exits-0", "items": ["W2"],
     "edits": [(TOOLS, "return agent::exit_code(r.failure_class());", "return 0;")],
     "tests": ["batch:batch_failure"]},

    # ---- verify --------------------------------------------------------------------------------
    {"id": "verify-sees-no-mismatch", "items": ["W3"],
     "edits": [("agent/verify.cc", "    if (!same) {\n", "    if (false) {\n")],
     "tests": ["cli:history_repair"]},
    {"id": "verify-ignores-sample", "items": ["W3"],
     "edits": [("agent/verify.cc", "if (options.sample_percent < 100 && !pick(rng)) continue;",
                "if (false && !pick(rng)) continue;")],
     "tests": ["cli:history_repair"]},
    {"id": "verify-counts-11", "items": ["W3"],
     "edits": [("agent/verify.cc", "++result.mismatches;", "result.mismatches += 11;")],
     "tests": ["cli:history_repair"]},

    # ---- crash recovery and the checker -------------------------------------------------------
    {"id": "recovery-keeps-orphan-packs", "items": ["W4", "C1"],
     "edits": [(RECOVERY, "    if (stale) {\n", "    if (false) {\n")],
     "tests": ["cli:crash"], "env": FEW_KILLS},
    {"id": "rollback-keeps-refs", "items": ["W4", "W13"],
     "edits": [(RECOVERY, "if (it.value().size() == 32) chunks.unref(", "if (false) chunks.unref(")],
     "tests": ["gtest:StoreTest.AbandonedRevisionLeavesNothingBehind:StoreTest.RecoveryAfterKilledWriter",
               "cli:crash"], "env": FEW_KILLS},
    {"id": "rollback-keeps-entries", "items": ["W4"],
     "edits": [(RECOVERY, "    batch.remove(it.key());\n    ++removed;", "    ++removed;")],
     "tests": ["cli:crash"], "env": FEW_KILLS},
    # The store writes one reference too many and scrub is blinded to reference counts: only the
    # independent checker (tests/tools/check_store.py) can catch it.
    {"id": "wrong-refs-scrub-blind", "items": ["C1"],
     "edits": [(WRITER, "rec.refs += d.added_refs;", "rec.refs += d.added_refs + 1;"),
               (SCRUB, "if (count != rec.refs && wrong_refs++ < 5)", "if (false)")],
     "tests": ["cli:crash"], "env": FEW_KILLS},
    {"id": "crash-point-does-not-kill", "items": ["W8"],
     "edits": [("store/crash_points.cc", "::kill(::getpid(), SIGKILL);", "return;")],
     "tests": ["gtest:HistoryTest.KilledForgetAndGcLoseNothingAndRerunCompletes", "cli:history_kill"]},
    {"id": "killed-child-exits-0", "items": ["W8"],
     "edits": [("store/crash_points.cc", "::kill(::getpid(), SIGKILL);", "::_exit(0);")],
     "tests": ["gtest:HistoryTest.KilledForgetAndGcLoseNothingAndRerunCompletes", "cli:restore_atomic"]},

    # ---- scrub: every damage kind ---------------------------------------------------------------
    scrub_silenced("scrub-misses-missing-pack-block", ["W9"],
                   "if (!pack) return where + \": pack file is missing\";",
                   "if (!pack) return {};", "ScrubTest.DeletedPackFile"),
    scrub_silenced("scrub-misses-missing-pack-file", ["W9"],
                   "add(nullptr, \"pack \" + pack_file_name(id) + \" is missing\");", "(void)0;",
                   "ScrubTest.DeletedPackFile"),
    scrub_silenced("scrub-misses-magic", [], "if (buf.compare(0, 4, kChunkMagic) != 0)", "if (false)",
                   "ScrubTest.BadChunkHeaderMagic"),
    scrub_silenced("scrub-misses-header-vs-index", [],
                   "return where + \": chunk header disagrees with the index (flags/length)\";", "(void)0;",
                   "ScrubTest.ChunkHeaderDisagreesWithIndex"),
    scrub_silenced("scrub-misses-header-hash", [],
                   "return where + \": chunk header names another hash\";", "(void)0;",
                   "ScrubTest.ChunkHeaderNamesAnotherHash"),
    scrub_silenced("scrub-misses-raw-length", [],
                   "return where + \": raw length is not the block size\";", "(void)0;",
                   "ScrubTest.RawLengthIsNotTheBlockSize"),
    scrub_silenced("scrub-misses-sha256", [],
                   "return where + \": content does not match its SHA-256\";", "(void)0;",
                   "ScrubTest.FlippedBitInChunkData"),
    scrub_silenced("scrub-misses-zstd", [],
                   "      return where + \": \" + e.what();\n", "      (void)e;\n",
                   "ScrubTest.BadZstdPayload"),
    scrub_silenced("scrub-misses-truncated", [],
                   "if (rec.offset + kChunkHeaderSize + rec.stored_len > size)",
                   "if (false)", "ScrubTest.TruncatedPackFile"),
    scrub_silenced("scrub-misses-refcount", [], "if (count != rec.refs && wrong_refs++ < 5)", "if (false)",
                   "ScrubTest.WrongReferenceCount"),
    scrub_silenced("scrub-misses-unlisted-pack", [], "for (auto& [id, end] : pack_end)",
                   "for (auto& [id, end] : decltype(pack_end){})", "ScrubTest.ChunkInAnUnlistedPack"),
    scrub_silenced("scrub-misses-parent", [], "if (rev.parent != expected_parent)", "if (false)",
                   "ScrubTest.BrokenParentPointer"),
    scrub_silenced("scrub-misses-checksum", [], "st.digest_ok = digest == rev.digest;", "st.digest_ok = true;",
                   "ScrubTest.WrongSize"),

    # ---- batch runs -----------------------------------------------------------------------------
    {"id": "jitter-unstable", "items": ["W11"],
     "edits": [("agent/schedule.cc", "return static_cast<int64_t>(std::hash<std::string>{}(key) %",
                "static uint64_t calls = 0;\n  return static_cast<int64_t>((std::hash<std::string>{}(key) + calls++) %")],
     "tests": ["gtest:Schedule.JitterSpreadsImagesAndIsStable"]},
    {"id": "host-slot-child-aborts", "items": ["W12"],
     "edits": [("agent/host_slots.cc", "  std::error_code ec;\n  std::filesystem::create_directories(dir, ec);",
                "  static const pid_t first_user = ::getpid();\n  if (::getpid() != first_user) ::abort();\n"
                "  std::error_code ec;\n  std::filesystem::create_directories(dir, ec);")],
     "tests": ["gtest:HostSlots.SlotsAreExclusiveAndFreedOnRelease"]},
    {"id": "host-slots-shared", "items": ["W12", "W5"],
     "edits": [("agent/host_slots.cc", "::flock(fd, LOCK_EX | LOCK_NB)", "::flock(fd, LOCK_SH | LOCK_NB)")],
     "tests": ["gtest:HostSlots.SlotsAreExclusiveAndFreedOnRelease"]},
    # One backup too many at once, and the tool's own figures hide it (peak capped, intervals
    # empty when no host slots are used): only the test's outside view can see it.
    {"id": "parallel-limit-plus-one-hidden", "items": ["W5"],
     "edits": [(BATCH, "std::min(c.limits.images_in_parallel, tasks.size());",
                "std::min(c.limits.images_in_parallel + 1, tasks.size());"),
               (BATCH, "report.peak_parallel = peak.load();",
                "report.peak_parallel = std::min(peak.load(), c.limits.images_in_parallel);\n"
                "  if (!c.limits.host_slots) for (auto& im : report.images) im.finished_ns = im.started_ns;")],
     "tests": ["batch:batch_many"]},
    {"id": "missing-image-not-reported", "items": ["W6"],
     "edits": [(BATCH, "out.result = ImageResult::kMissing;", "continue;")],
     "tests": ["batch:batch_many"]},
    {"id": "listing-not-retried", "items": ["W7"],
     "edits": [(BATCH, "if (!transient(e.code()) || attempt > job.settings.retries || stop()) break;", "break;")],
     "tests": ["batch:batch_retry"]},
    {"id": "backup-retry-reports-ok", "items": ["W7"],
     "edits": [(BATCH, "        out.result = ImageResult::kFailed;\n        out.error = e.what();\n"
                       "        out.error_class = classify(std::current_exception());\n"
                       "        if (!transient(e.code()) || attempt > retries || stop()) break;",
                "        out.result = ImageResult::kOk;\n        out.error.clear();\n        break;")],
     "tests": ["batch:batch_retry"]},

    # ---- backups ----------------------------------------------------------------------------------
    {"id": "resize-edges-not-reread", "items": ["W14"],
     "edits": [(BACKUP, "if (edge % bs != 0 && edge / bs < nblocks) {", "if (false) {")],
     "tests": ["cli:promises_backup"]},
    {"id": "backup-reads-live-image", "items": ["P5"],
     "edits": [(BACKUP, "spec.image, snap_name, /*read_only=*/true);", "spec.image, \"\", /*read_only=*/true);")],
     "tests": ["cli:promises_backup"]},
    {"id": "block-size-always-64k", "items": ["P6"],
     "edits": [(BACKUP, "const uint64_t bs = store.block_size();", "const uint64_t bs = 64 * 1024;")],
     "tests": ["cli:promises_backup"]},
    {"id": "failed-backup-keeps-snapshot", "items": ["P3"],
     "edits": [(BACKUP, "      if (!lost_store) rbd::Image::open(cluster, spec.pool, spec.image).remove_snapshot(snap_name);\n",
                "")],
     "tests": ["cli:promises_backup"]},
    # The failed writer skips its rollback: only its pending mark is left (no entry was flushed),
    # which the independent checker reports.
    {"id": "failed-backup-not-rolled-back", "items": ["P3", "C1"],
     "edits": [(WRITER, "  if (committed_) return;\n  lookup_.reset();", "  if (true) return;\n  lookup_.reset();")],
     "tests": ["cli:promises_backup"]},
    {"id": "rolled-back-id-reused", "items": ["P11"],
     "edits": [(RECOVERY, "      batch.remove(pending_key(p.revision));\n",
                "      batch.remove(pending_key(p.revision));\n"
                "      batch.put(counter_key(kCounterNextRevision), encode_u64(p.revision));\n")],
     "tests": ["gtest:StoreTest.RolledBackRevisionIdIsNeverReused", "cli:promises_damage"]},

    # ---- restores -----------------------------------------------------------------------------------
    {"id": "to-file-overwrites", "items": ["P1"],
     "edits": [(RESTORE, "if (::lstat(path.c_str(), &st) == 0) refuse_existing(path);",
                "if (::lstat(path.c_str(), &st) == 0) errno = ENOENT;"),
               (RESTORE, "if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0)",
                "if (::rename(from.c_str(), to.c_str()) == 0)")],
     "tests": ["gtest:RestoreTest.ExistingTargetIsRefusedAndUntouched", "cli:restore_atomic"]},
    {"id": "failed-restore-keeps-image", "items": ["P2"],
     "edits": [("rbd/image_writer.cc", "  pending_.clear();\n  if (committed_) return;\n", "  pending_.clear();\n  return;\n")],
     "tests": ["cli:restore_atomic"]},
    {"id": "failed-restore-keeps-file", "items": ["P2"],
     "edits": [(RESTORE, "if (!published_) ::unlink(path_.c_str());", "(void)published_;")],
     "tests": ["gtest:RestoreTest.LostBlockMapEntryFailsTheRestore", "cli:restore_atomic"]},

    # ---- instant restore (issue 14.3) ------------------------------------------------------------
    {"id": "instant-serves-another-revision", "items": ["I14f"],
     "edits": [("agent/instant_restore.cc", "server->url_for(rev.pool, rev.name, rev.id)",
                "server->url_for(rev.pool, rev.name, rev.id + 1)")],
     "tests": ["instant:instant_restore"]},
    {"id": "instant-never-commits", "items": ["I14f"],
     "edits": [("agent/instant_restore.cc", "  migration->commit();\n", "")],
     "tests": ["instant:instant_restore"]},
    {"id": "instant-abort-does-nothing", "items": ["I14g"],
     "edits": [("rbd/migration.cc", "  done_ = true;  // one attempt", "  done_ = true; return;  // one attempt")],
     "tests": ["instant:instant_failures"]},

    # ---- operation log, signals, repair, reads in flight -------------------------------------------
    {"id": "killed-op-logged-ok", "items": ["P8"],
     "edits": [(TOOLS, "r.end_ms ? r.result : \"unfinished\"", "r.end_ms ? r.result : \"ok\"")],
     "tests": ["cli:promises_damage"]},
    {"id": "second-sigint-ignored", "items": ["P9"],
     "edits": [(TOOLS, "if (stop_.exchange(true) && sig == SIGINT) _exit(128 + SIGINT);",
                "if (stop_.exchange(true) && sig == SIGINT && false) _exit(128 + SIGINT);")],
     "tests": ["cli:promises_damage"]},
    {"id": "repair-unrepaired-exits-0", "items": ["P10"],
     "edits": [(TOOLS, "return r.unrepaired.empty() ? 0 : kDamageFound;", "return 0;")],
     "tests": ["cli:promises_damage"]},
    # ---- issue 15: partial reads, zstd samples -------------------------------------------------------
    {"id": "patch-drops-parent", "items": ["I15a"],
     "edits": [("agent/block_pipeline.cc", "    item.store_bytes = block.size();\n",
                "    item.store_bytes = block.size();\n    block.assign(block.size(), '\\0');\n")],
     "tests": ["gtest:StoreTest.PipelinePatchesBlocksFromTheParentsChunks", "cli:partial_reads"]},
    {"id": "damaged-parent-fails-backup", "items": ["I15b"],
     "edits": [("agent/block_pipeline.cc", "if (e.kind() != store::StoreError::Kind::kCorrupt || !reread_) throw;",
                "throw;")],
     "tests": ["cli:partial_reads"]},
    {"id": "patches-never-stored", "items": ["I15d"],
     "edits": [("store/patch_codec.cc", "  if (n == 0) return std::nullopt;", "  return std::nullopt;")],
     "tests": ["gtest:PatchStoreTest.PatchOverItsBase", "cli:patch_chunks"]},
    {"id": "patch-content-unverified", "items": ["I15e"],
     "edits": [("store/store.cc", "  if (sha256(out.content) != hash)\n", "  if (false)\n")],
     "tests": ["gtest:PatchStoreTest.DamagedBaseDamagesEveryPatchOnIt"]},
    {"id": "gc-keeps-patch-base-ref", "items": ["I15f"],
     "edits": [("store/gc.cc", "    bases.unref(as_view(rec.base));\n", "\n")],
     "tests": ["gtest:PatchStoreTest.GcKeepsTheBaseWhilePatchesLiveThenFreesBoth"]},
    {"id": "zstd-samples-start-only", "items": ["I15c"],
     "edits": [("store/chunk_codec.cc", "raw.size() / 2 - kSample / 2, raw.size() - kSample}) {",
                "raw.size() / 2 - kSample / 2}) {")],
     "tests": ["gtest:StoreTest.RandomDataIsNotWorthCompressingButMixedBlocksAre"]},
    {"id": "reads-in-flight-plus-one", "items": ["W15"],
     "edits": [("rbd/image.cc", "while (pending_.size() >= max_in_flight_) complete_front();",
                "while (pending_.size() > max_in_flight_) complete_front();")],
     "tests": ["rbd:RbdTest.AsyncReaderKeepsReadsBoundedAndOrdered"]},
    # ---- copy (issue 13.3) ---------------------------------------------------------------------
    {"id": "copy-keeps-stale-blocks", "items": ["I13c"],
     "edits": [("agent/copy.cc", "        w.put_zero(have[j].first);\n", "")],
     "tests": ["gtest:CopyTest.CopiesEveryRevisionByteForByteThroughResizes", "cli:copy"]},
    {"id": "copy-reads-every-chunk", "items": ["I13c"],
     "edits": [("agent/copy.cc", "    if (w.put_existing(block, hash)) {", "    if (false) {")],
     "tests": ["gtest:CopyTest.CopiesEveryRevisionByteForByteThroughResizes",
               "gtest:CopyTest.DeduplicatesAcrossImagesAndChecksNamedImagesFirst", "cli:copy"]},
    {"id": "copy-identity-ignores-snapshot", "items": ["I13c"],
     "edits": [("agent/copy.cc", " && s.snap_id == t.snap_id &&\n         s.snap_name == t.snap_name && s.created == t.created;",
                ";")],
     "tests": ["gtest:CopyTest.ResumesAfterAForgetInTheSourceAndSkipsWhatTheTargetExpired", "cli:copy"]},
    {"id": "copy-step-no-retention", "items": ["I13c"],
     "edits": [("agent/copy_step.cc", "    if (!c.retention.empty()) {", "    if (false) {")],
     "tests": ["batch:batch_copy"]},
    # ---- issue 14: serve ------------------------------------------------------------------------------
    {"id": "serve-range-from-zero", "items": ["I14a"],
     "edits": [("view/http_server.cc", "read_at(*bytes, cache_, first + offset,", "read_at(*bytes, cache_, offset,")],
     "tests": ["gtest:HttpServer.RawBytesHeadAndRanges", "serve:serve_http"]},
    {"id": "instant-secret-not-checked", "items": ["I14h"],
     "edits": [("view/http_server.cc", "secret_matches(std::string_view(req.path).substr(0, prefix.size()), prefix)",
                "req.path.rfind(\"/s/\", 0) == 0")],
     "tests": ["gtest:HttpServer.PathSecretOpensTheRawEndpointOnly", "instant:instant_remote"]},
    {"id": "serve-any-bearer", "items": ["I14b"],
     "edits": [("view/http_auth.cc", "return diff == 0;", "return diff == 0 || true;")],
     "tests": ["gtest:HttpAuth.BearerMatches", "gtest:HttpServer.TokenRequiredOffLoopbackAndChecked", "serve:serve_token"]},
    {"id": "serve-open-token-file", "items": ["I14b"],
     "edits": [("view/http_auth.cc", "const bool too_open = ok && (st.st_mode & 077) != 0;", "const bool too_open = false;")],
     "tests": ["gtest:TokenFile.RefusesOpenPermissionsAndShortTokens", "serve:serve_token"]},
    {"id": "serve-damage-as-zeros", "items": ["I14c"],
     "edits": [("view/http_server.cc", "first + offset, e.what());\n            return false;",
                "first + offset, e.what());\n            std::fill(buf.begin(), buf.end(), 0);\n"
                "            return sink.write(buf.data(), std::min(want, kBodyChunk));")],
     "tests": ["serve:serve_http"]},
    {"id": "serve-page-count", "items": ["I14d"],
     "edits": [("agent/status_page.cc", "std::to_string(s.revisions) +", "std::to_string(s.revisions + 1) +")],
     "tests": ["gtest:StatusPage.ShowsEveryImageAndEscapesNames", "serve:serve_http"]},
    {"id": "serve-no-refresh", "items": ["I14e"],
     "edits": [("view/http_server.cc", "auto snap = view_.get(true);\n    return snap->revisions",
                "auto snap = view_.get(false);\n    return snap->revisions"),
               ("view/http_server.cc", "for (bool refresh : {false, true}) {\n      auto snap = view_.get(refresh);\n      if (auto* revs",
                "for (bool refresh : {false, false}) {\n      auto snap = view_.get(refresh);\n      if (auto* revs")],
     "tests": ["gtest:HttpServer.NewRevisionsAppearWhileServing", "serve:serve_http"]},
]
